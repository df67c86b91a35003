"""minflow: ``models.realnvp(2, layers=8, hidden=H, depth=2)`` and ``optim.FlatAdam`` (the Adam
that ``fit`` uses), public API only.

On a GPU the worker sets ``MINFLOW_BACKEND=cupy`` before this module imports minflow, so
parameters and batches live on the device (``backend.to_device``).
"""

from minflow import backend, models, optim, train

from .shared import BETAS, EPS, LAYERS, LR, SCALE_BOUND, parameter_layout

MINFLOW_NAMES = {
    "W0": "layers.0.weight",
    "b0": "layers.0.bias",
    "W1": "layers.1.weight",
    "b1": "layers.1.bias",
    "W2": "layers.2.weight",
    "b2": "layers.2.bias",
}


def state_names(hidden):
    """minflow's name of each entry of the flat parameter list, e.g. flow.flows.3.conditioner.layers.1.weight."""
    return [f"flow.flows.{layer}.conditioner.{MINFLOW_NAMES[name]}" for layer, name, _ in parameter_layout(hidden)]


class Peer:
    def __init__(self, params, dtype, device="cpu"):
        self.dtype, hidden = dtype, params[0].shape[1]
        backend.set_default_dtype(dtype)
        self.model = models.realnvp(2, layers=LAYERS, hidden=hidden, depth=2, scale_bound=SCALE_BOUND, seed=0)
        self.names = state_names(hidden)
        state = self.model.state_dict()
        state.update({name: value.astype(dtype) for name, value in zip(self.names, params)})
        self.model.load_state_dict(state)
        self.optimizer = optim.FlatAdam(self.model.parameters(), lr=LR, betas=BETAS, eps=EPS)

    def prepare(self, batch):
        return backend.to_device(batch, dtype=self.dtype)

    def step(self, x):
        return train.step(self.model, self.optimizer, x)  # zero_grad, nll, backward, Adam

    def loss_and_grads(self, x):
        self.model.zero_grad()
        loss = self.model.nll(x)
        loss.backward()
        named = dict(self.model.named_parameters())
        return float(backend.to_numpy(loss)), [backend.to_numpy(named[name].grad) for name in self.names]

    def parameters(self):
        named = dict(self.model.named_parameters())
        return [backend.to_numpy(named[name]) for name in self.names]

    def synchronize(self):
        if backend.backend_name() == "cupy":
            import cupy

            cupy.cuda.Device().synchronize()

    def versions(self):
        import minflow

        return {"minflow": minflow.__version__, "minflow backend": backend.backend_name()}
