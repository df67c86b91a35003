"""cupy.cuda.runtime of the strict stand-in: CuPy is installed but no usable GPU is present."""

is_hip = False

cudaErrorNoDevice = 100
_NO_DEVICE = cudaErrorNoDevice
_MESSAGES = {100: "cudaErrorNoDevice: no CUDA-capable device is detected"}


class CUDARuntimeError(RuntimeError):
    """As ``cupy_backends.cuda.api.runtime.CUDARuntimeError`` (a RuntimeError subclass)."""

    def __init__(self, status):
        self.status = status
        super().__init__(_MESSAGES.get(status, f"CUDA runtime error {status}"))

    def __reduce__(self):
        return (type(self), (self.status,))


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


def _no_device(*args, **kwargs):
    raise CUDARuntimeError(_NO_DEVICE)


getDeviceCount = getDevice = setDevice = getDeviceProperties = memGetInfo = _no_device
runtimeGetVersion = driverGetVersion = _no_device


def deviceSynchronize():
    """Nothing to wait for: the stand-in computes synchronously."""
