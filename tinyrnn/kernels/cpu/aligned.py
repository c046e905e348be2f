"""Arrays that start on a cache line (Numba).

A 512-bit vector load (64 bytes) touches one cache line when its address is a multiple of 64, two
otherwise: a split load, which costs more (Zen 4 executes it as two 256-bit halves: most when a half
itself crosses a line). Numba's ``np.empty`` aligns to 32 bytes and numpy's to 16 (malloc's), so
where the allocator happened to put an array decided how many of a kernel's loads were split.
Measured on the Zen 4 VM, batch-1 sampling at config b (bfloat16, every weight read once a
character from L2): 15.3 us a character with its matrices on a cache line, 16.6 with them 32 bytes
past one, 18.2 with them 16 bytes past (BENCHMARKS.md). ``aligned_empty`` allocates inside kernels;
``aligned_array`` and ``aligned_copy`` are its twins for numpy arrays made in Python.
"""
import numpy as np

from ..jit import kernel

ALIGNMENT = 64   # bytes: a cache line on x86, and one 512-bit vector


@kernel
def aligned_empty(shape, dtype):
    """np.empty(shape, dtype) starting on a multiple of ALIGNMENT bytes (C-contiguous); shape a tuple."""
    size = 1
    for n in shape:
        size *= n
    buf = np.empty(size + ALIGNMENT, dtype)
    skip = (ALIGNMENT - buf.ctypes.data % ALIGNMENT) % ALIGNMENT // buf.itemsize   # bytes to the next line, in items
    return buf[skip:skip + size].reshape(shape)


def aligned_array(shape, dtype) -> np.ndarray:
    """np.empty(shape, dtype) starting on a multiple of ALIGNMENT bytes (C-contiguous), made in Python."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + ALIGNMENT, np.uint8)
    skip = (ALIGNMENT - buf.ctypes.data % ALIGNMENT) % ALIGNMENT
    return buf[skip:skip + nbytes].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of a numpy array starting on a multiple of ALIGNMENT bytes."""
    out = aligned_array(a.shape, a.dtype)
    out[...] = a
    return out


def is_aligned(a: np.ndarray) -> bool:
    """Whether a numpy array is C-contiguous and starts on a multiple of ALIGNMENT bytes."""
    return a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0
