"""Which kernel module runs the ops: the Numba CPU kernels, the CUDA kernels, or the numpy reference.

The three modules in ``tinyrnn.kernels`` share function names and arguments, so an op calls
``kernels().matmul_nn(...)`` without caring which one it gets. The module is imported on first
use: ``import tinyrnn`` does not import numba.

``TINYRNN_KERNELS=reference`` in the environment selects the slow, plain-numpy reference
kernels (handy for reading along in a debugger, and for checking a suspected kernel bug).
"""
import importlib
import os

_modules = {}
_default_device = "cpu"


def kernels(device: str | None = None):
    """The kernel module for ``device`` ('cpu' or 'cuda'; default: the current default device)."""
    device = device or _default_device
    name = "reference" if device == "cpu" and os.environ.get("TINYRNN_KERNELS") == "reference" else device
    module = _modules.get(name)
    if module is None:
        module = _modules[name] = importlib.import_module(f"tinyrnn.kernels.{name}")
    return module


def set_num_threads(n: int):
    """Threads used by the Numba kernels (imports numba)."""
    import numba

    numba.set_num_threads(int(n))
