"""cupy.cuda of the strict stand-in.

``is_available()`` is False and device queries raise ``runtime.CUDARuntimeError``, but
``Device().synchronize()``, ``Device`` as a context manager and the null stream's
``synchronize()`` work (no-ops: the stand-in computes synchronously).
"""

from cupy import _NAMES, _populate
from cupy.cuda import runtime


def is_available():
    return False


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def synchronize(self):
        pass

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    @property
    def compute_capability(self):
        raise runtime.CUDARuntimeError(runtime._NO_DEVICE)

    @property
    def mem_info(self):
        raise runtime.CUDARuntimeError(runtime._NO_DEVICE)


Device.__module__ = "cupy.cuda.device"


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        pass

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    return Stream.null


def get_device_id():
    return 0


_populate(globals(), _NAMES["cupy.cuda"], None, "cupy.cuda", submodules=("runtime",))
