"""Devices and kernels: where tensors live ('cpu' or 'cuda') and which kernel module runs the ops.

The three modules in ``tinyrnn.kernels`` share function names and arguments, so an op calls
``kernels(device).matmul_nn(...)`` without caring which one it gets. The module is imported on
first use: ``import tinyrnn`` does not import numba, and the CPU path never imports numba.cuda.

This module is the only door to the kernels and the array helpers: the ops, the optimizers,
gradient clipping and generation all ask ``kernels(device)`` and ``arrays(device)``.

A tensor's device follows from its data's type (``device_of``): a numpy array is on the CPU, a
numba.cuda device array on the GPU. Ops take the device from their inputs (all inputs must agree)
and allocate their outputs on it through ``arrays(device)``: ``tinyrnn.kernels.reference.arrays``
(numpy) for 'cpu', and ``tinyrnn.kernels.cuda.arrays`` (the same function names over device
arrays) for 'cuda'.

``set_device('cuda')`` makes new tensors and parameters start on the GPU;
``TINYRNN_KERNELS=reference`` in the environment selects the slow, plain-numpy reference
kernels for the CPU, everywhere (ops, optimizers, clipping): handy for reading along in a
debugger, and for checking a suspected kernel bug. Numba is then never imported. (It is read
the first time a CPU kernel is asked for: set it before the first op runs.)
"""
import contextlib
import importlib
import os

import numpy as np

from .kernels.reference import arrays as _cpu_arrays

DEVICES = ("cpu", "cuda")
NO_GPU = "--device cuda: no CUDA GPU found (numba.cuda.is_available() is False); use --device cpu"

HOST = (np.ndarray, np.generic)   # what CPU tensors hold (an op on 0-d arrays may give a numpy scalar)

_modules = {}
_default_device = "cpu"


class DeviceError(RuntimeError):
    """An op got tensors on different devices, or an op that has no CUDA version got a CUDA tensor."""


# ---- which device -----------------------------------------------------------------------------
def device_of(array) -> str:
    """'cuda' for a numba.cuda device array, 'cpu' for a numpy array (or anything else array-like);
    no numba import needed."""
    if type(array) is np.ndarray:      # the common case first: called for every op and gradient
        return "cpu"
    return "cuda" if is_device_array(array) else "cpu"


def is_device_array(x) -> bool:
    """True for a numba.cuda device array (or the CUDA simulator's stand-in)."""
    return not isinstance(x, HOST) and hasattr(x, "copy_to_host")


def require_device(device: str) -> str:
    """Check that ``device`` can be used; returns it. Raises ValueError with one line otherwise:
    an unknown name, 'cuda' with neither a CUDA GPU nor the CUDA simulator (NUMBA_ENABLE_CUDASIM=1),
    or 'cuda' where numba.cuda cannot compile a kernel (mismatched numba-cuda and numpy versions)."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    if device == "cuda":
        try:
            from numba import cuda

            available = bool(cuda.is_available())
        except Exception:  # numba without CUDA support, or a broken driver install
            available = False
        if not available:
            raise ValueError(NO_GPU)
        from .kernels.cuda import device as cuda_device

        problem = cuda_device.toolchain_problem()
        if problem:
            raise ValueError(problem)
    return device


def set_device(device: str):
    """Make ``device`` the default for new tensors and parameters ('cpu' or 'cuda')."""
    global _default_device
    _default_device = require_device(device)


def get_device() -> str:
    """The default device for new tensors and parameters."""
    return _default_device


# ---- which kernels, which allocator -------------------------------------------------------------
def kernels(device: str | None = None):
    """The kernel module for ``device`` ('cpu' or 'cuda'; default: the current default device)."""
    device = device or _default_device
    module = _modules.get(device)      # ('cpu': the module TINYRNN_KERNELS chose, read on first use)
    if module is None:
        name = device
        if device == "cpu":
            keep_freed_memory()
            name = _cpu_kernels()
        module = _modules[device] = importlib.import_module(f"tinyrnn.kernels.{name}")
    return module


def _cpu_kernels() -> str:
    """'reference' when TINYRNN_KERNELS=reference, else 'cpu' (Numba's)."""
    return "reference" if os.environ.get("TINYRNN_KERNELS") == "reference" else "cpu"


def compile_notice(say):
    """A context within which ``say(line)`` is called once if a kernel has to be compiled first
    (``kernels.jit.compile_notice``: a cold cache). A no-op that imports nothing when ``say`` is None
    or when the CPU kernels are the reference ones (then Numba is never imported)."""
    if say is None or _cpu_kernels() == "reference":
        return contextlib.nullcontext()
    from .kernels.jit import compile_notice as notice

    return notice(say)


def precompile(workload: str | None):
    """Before a first step: compile the CPU kernels of ``workload`` that the cache lacks, in parallel
    processes (``kernels/precompile.py``; its manifest names the workloads). A no-op for None, on a
    CUDA default device, with the reference kernels, or with TINYRNN_PRECOMPILE=0."""
    if (workload is None or _default_device != "cpu" or _cpu_kernels() == "reference"
            or os.environ.get("TINYRNN_PRECOMPILE") == "0"):
        return
    from .kernels.precompile import precompile as compile_in_parallel

    compile_in_parallel(workload)


def keep_freed_memory():
    """Ask glibc's malloc to keep large freed blocks for reuse instead of returning them to the OS.

    A training step allocates the same large arrays every time (gate activations, projections,
    their gradients). By default glibc serves blocks this big with mmap and unmaps them on free,
    so every step faults all of that memory back in, page by page: at config b of the benchmark
    (2x256 LSTM) 9,000 page faults and ~25 ms of kernel time per step, a third of the step.
    With the heap kept, steps after the first reuse it (no page faults). Peak memory is the same;
    the process just keeps its peak. Set TINYRNN_MALLOC_TUNING=0 to leave malloc alone.
    """
    if os.environ.get("TINYRNN_MALLOC_TUNING", "1") == "0":
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)   # up to 1 GiB from the heap, not mmap
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 31)   # do not shrink the heap after each step
    except (OSError, AttributeError):             # not glibc (macOS, musl, Windows): nothing to do
        pass


def arrays(device: str):
    """The array helpers for ``device`` (allocation, copies, arithmetic, sums, joins, dropout masks):
    ``tinyrnn.kernels.reference.arrays`` (numpy) for 'cpu', ``tinyrnn.kernels.cuda.arrays`` for
    'cuda'; the same names in both, see either module."""
    if device == "cpu":
        return _cpu_arrays
    module = _modules.get("cuda.arrays")
    if module is None:
        module = _modules["cuda.arrays"] = importlib.import_module("tinyrnn.kernels.cuda.arrays")
    return module


def to_device(array, device: str):
    """``array`` on ``device``: the same object if it is there already, else a copy."""
    if device == "cpu":
        return array.copy_to_host() if is_device_array(array) else np.asarray(array)
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    if is_device_array(array):
        return array
    return arrays("cuda").to_device(array)


def to_numpy(array) -> np.ndarray:
    """A numpy array with ``array``'s values (the array itself on the CPU, a host copy from the GPU)."""
    return array.copy_to_host() if is_device_array(array) else array


def set_num_threads(n: int):
    """Threads used by the Numba kernels (imports numba)."""
    import numba

    numba.set_num_threads(int(n))


def use_device(device: str):
    """``set_device(device)`` for the command line: a device that cannot be used raises TinyRNNError
    (one clear line) instead of ValueError."""
    from .errors import TinyRNNError

    try:
        set_device(device)
    except ValueError as e:
        raise TinyRNNError(str(e)) from None
