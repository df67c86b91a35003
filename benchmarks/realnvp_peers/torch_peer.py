"""Plain PyTorch: the RealNVP written the way a PyTorch user would, with ``nn.Linear`` conditioners
and ``torch.optim.Adam`` (its default implementation for the device). Thread count left at
torch's default.

``nn.Linear`` stores its weight as (out, in) and computes x W^T + b, so the shared (in, out)
weights are transposed on the way in and out.
"""

import torch

from .shared import BETAS, EPS, LAYERS, LOG_TWO_PI, LR, PER_LAYER, SCALE_BOUND, kept_and_changed

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchRealNVP(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.conditioners = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(1, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, 2),
            )
            for _ in range(LAYERS)
        )

    def linears(self):
        """The Linear layers in the shared order: (W0, b0), (W1, b1), (W2, b2) of layer 0, then layer 1, ..."""
        return [
            module for conditioner in self.conditioners for module in conditioner if isinstance(module, torch.nn.Linear)
        ]

    def nll(self, x):
        columns = [x[:, 0], x[:, 1]]
        log_det = torch.zeros_like(columns[0])
        for layer, conditioner in enumerate(self.conditioners):
            k, c = kept_and_changed(layer)
            theta = conditioner(columns[k].unsqueeze(1))
            shift, log_scale = theta[:, 0], SCALE_BOUND * torch.tanh(theta[:, 1] / SCALE_BOUND)
            columns[c] = columns[c] * torch.exp(log_scale) + shift
            log_det = log_det + log_scale
        log_prob = -0.5 * (columns[0] ** 2 + columns[1] ** 2) - LOG_TWO_PI + log_det
        return -log_prob.mean()


class Peer:
    def __init__(self, params, dtype, device="cpu"):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"CUDA is not available to torch {torch.__version__}")
        self.dtype = TORCH_DTYPES[dtype]
        self.model = TorchRealNVP(params[0].shape[1]).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for linear, (weight, bias) in zip(self.model.linears(), zip(params[0::2], params[1::2])):
                linear.weight.copy_(torch.from_numpy(weight.T.copy()))
                linear.bias.copy_(torch.from_numpy(bias))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR, betas=BETAS, eps=EPS)

    def prepare(self, batch):
        return torch.from_numpy(batch).to(device=self.device, dtype=self.dtype)

    def step(self, x):
        self.optimizer.zero_grad()
        loss = self.model.nll(x)
        loss.backward()
        self.optimizer.step()
        return loss

    def loss_and_grads(self, x):
        self.optimizer.zero_grad()
        loss = self.model.nll(x)
        loss.backward()
        return loss.item(), self._flat(lambda tensor: tensor.grad)

    def parameters(self):
        return self._flat(lambda tensor: tensor)

    def _flat(self, pick):
        """``pick(tensor)`` of every parameter as NumPy, in the shared order (weights transposed back)."""
        arrays = []
        for linear in self.model.linears():
            arrays += [pick(linear.weight).detach().cpu().numpy().T, pick(linear.bias).detach().cpu().numpy()]
        assert len(arrays) == LAYERS * len(PER_LAYER)
        return arrays

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def versions(self):
        return {"torch": torch.__version__, "torch threads": torch.get_num_threads()}
