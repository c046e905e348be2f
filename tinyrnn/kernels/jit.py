"""Every Numba JIT option in one place.

``cache=True``: compiled machine code is stored next to the source (``__pycache__``), so a
second run loads it instead of compiling. ``error_model="numpy"``: no zero-division checks,
which would stop loops from vectorising. ``fastmath`` allows re-association (vectorised
reductions) and fused multiply-add, but keeps NaN/inf semantics so bad losses are still seen.

A caveat when *editing* kernels: Numba checks a cached kernel against its own source file
only. A kernel that calls a kernel of another module (``sequence.py`` calls ``matmul.py``'s
micro tile) keeps its cached copy of the callee when only the callee's file changed: delete the
cache files (``find tinyrnn -name '*.nbi' -delete``) after such an edit. Installed releases
are not affected (installing a version gives every file a new timestamp).

Importing this module imports numba; nothing in ``tinyrnn`` imports it until a kernel is used.
"""
import numba

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
OPTIONS = dict(cache=True, error_model="numpy", fastmath=FASTMATH, nogil=True)


def kernel(fn):
    """A single-threaded compiled kernel (also callable from other kernels)."""
    return numba.njit(**OPTIONS)(fn)


def parallel_kernel(fn):
    """A multithreaded kernel: ``numba.prange`` loops are split across threads."""
    return numba.njit(parallel=True, **OPTIONS)(fn)


prange = numba.prange
