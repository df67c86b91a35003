"""A small tensor-valued reverse-mode autodiff engine (see tensor.py, then ops.py)."""

from . import ops
from .tensor import OPS, Tensor, as_tensor, is_recording, no_grad, reverse_topological_order, unbroadcast
