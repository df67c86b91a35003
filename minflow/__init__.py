"""minflow: normalizing flows from scratch on NumPy, with CuPy as a drop-in GPU backend.

Start reading at ``minflow/autodiff/tensor.py`` (the engine), then ``minflow/flows/base.py``
(the flow contract), then any file in ``minflow/flows/``.
"""

import sys as _sys

try:
    from . import backend
except (ValueError, ImportError) as _error:  # a bad MINFLOW_BACKEND, found while importing
    # The command line (python -m minflow) promises one line for every user error, but Python
    # imports this package before minflow/__main__.py can run, so its error is given here.
    if _sys.orig_argv[1:3] == ["-m", "minflow"] and "MINFLOW_BACKEND" in str(_error):
        _sys.stderr.write(f"python -m minflow: error: {_error}\n")
        raise SystemExit(2) from None
    raise

from . import nn, optim, testing
from .autodiff import Tensor, no_grad
from .backend import get_default_dtype, set_backend, set_default_dtype, to_numpy
from .distributions import DiagonalGaussian, GaussianMixture, StandardNormal
from .flows import Flow, Inverse, Sequential
from .models import NormalizingFlow

__version__ = "0.1.0"
