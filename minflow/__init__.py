"""minflow: normalizing flows from scratch on NumPy, with CuPy as a drop-in GPU backend.

Start reading at ``minflow/autodiff/tensor.py`` (the engine), then ``minflow/flows/base.py``
(the flow contract), then any file in ``minflow/flows/``.
"""

from . import backend, nn, optim, testing
from .autodiff import Tensor, no_grad
from .backend import get_default_dtype, set_backend, set_default_dtype, to_numpy
from .distributions import StandardNormal
from .flows import Flow, Inverse, Sequential
from .models import NormalizingFlow

__version__ = "0.1.0"
