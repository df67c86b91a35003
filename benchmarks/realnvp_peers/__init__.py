"""One RealNVP train step, four ways: minflow, PyTorch, HIPS autograd, and hand-written NumPy.

Every peer is a class built as ``Peer(params, dtype, device)`` from the shared starting
parameters (``shared.initial_parameters``: a flat list of float64 NumPy arrays) and offers

    prepare(batch)       a (B, 2) float64 NumPy batch -> the peer's own array (done before timing)
    step(x)              one train step: forward, NLL, backward, Adam; returns the loss
    loss_and_grads(x)    (loss as a float, gradients as NumPy arrays in the shared order), no update
    parameters()         the current parameters as NumPy arrays in the shared order
    synchronize()        wait for queued device work (a no-op on the CPU)
    versions()           {package: version} for the report

``load(name)`` imports a peer's module only when asked for, so that a missing torch or
autograd fails in that peer alone (``ImportError``), never in the others.
"""

import importlib

MODULES = {
    "minflow": "minflow_peer",
    "torch": "torch_peer",
    "autograd": "autograd_peer",
    "floor": "numpy_floor",
}
NAMES = tuple(MODULES)


def load(name):
    """The peer class ``name`` (one of ``NAMES``); ImportError if its package is missing."""
    module = importlib.import_module(f"{__name__}.{MODULES[name]}")
    return module.Peer
