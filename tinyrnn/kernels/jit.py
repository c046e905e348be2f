"""Every Numba JIT option in one place.

``cache=True``: compiled machine code is stored on disk (where: see "Staleness" below), so a
second run loads it instead of compiling. ``error_model="numpy"``: no zero-division checks,
which would stop loops from vectorising. ``fastmath`` allows re-association (vectorised
reductions) and fused multiply-add, but keeps NaN/inf semantics so bad losses are still seen.
``leaf_kernel``: also no reference counting, for small functions called in hot loops (below).

Staleness: Numba checks a cached kernel against its own source file only, so a kernel that
calls a kernel of another module (``sequence.py`` inlines ``matmul.py``'s micro tile and
``cells.py``'s unit math) would keep a stale copy of the callee after an edit of the callee's
file. ``cache.py`` therefore caches every kernel in a directory keyed by the package version and
a hash of all the kernel sources (``__pycache__/tinyrnn-<version>-<hash>/``): any edit or
upgrade starts from an empty cache, and old keys are deleted. ``NUMBA_CACHE_DIR``, when set,
wins (then Numba's own per-file check applies).

Constants: Numba compiles a kernel once for each tuple of argument types, and a constant argument
has a type of its own (``Literal[int](0)``, ``Literal[bool](True)``), so a kernel called with a
constant in one place and a variable in another compiles twice. That is on purpose where the
constant is worth compiling for (a flag such as ``add``, the sampler's cell: dead branches are cut,
and a 0 offset frees a register in the matmul tile's loop), and not where it only multiplies the
compilations of a big kernel: ``gemm_panel_block`` passes run-time zeros and flags, so its micro
tiles share ``_gemm_tile``'s compilation (1-5 s of a cold first step of ~35; the sequence kernels
ran 3% faster to 6% slower, old and new alternating in one process: BENCHMARKS.md). A loop
counter that starts at 0 is not worth it either: Numba types the first call with the counter
still a literal 0 and compiles the callee for it too, before the loop makes it an int64; such
counters start as ``np.int64(0)``.

``compile_notice``: the one line a command prints on a terminal when it has to compile a kernel
(a cache miss: a first run), so that a first step's wait has a reason.

Importing this module imports numba; nothing in ``tinyrnn`` imports it until a kernel is used.
"""
from contextlib import contextmanager

import numba
from numba.core import event

from . import cache

cache.install()

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
OPTIONS = dict(cache=True, error_model="numpy", fastmath=FASTMATH, nogil=True)


# The options of an ``@overload``'s implementation (the SIMD operators, tanh, sigmoid, exp): Numba
# compiles it as a function of its own, once per argument types and process, and LLVM inlines it
# into the kernel; with the kernels' arithmetic flags its instructions are the ones the kernel would
# have. (``inline="always"`` instead inlines it in Numba's IR, where each call site types the body
# again, nested operators and all: compiling the 16-lane LSTM unit took 8.7 s that way, 0.9 s this
# way, with the same machine code; BENCHMARKS.md.)
OVERLOAD_OPTIONS = dict(error_model="numpy", fastmath=FASTMATH)


def kernel(fn):
    """A single-threaded compiled kernel (also callable from other kernels)."""
    return cache.guard(numba.njit(**OPTIONS)(fn))


def leaf_kernel(fn):
    """A single-threaded kernel compiled without Numba's reference counting, for the small
    functions the hot loops call many times (the matmul micro tiles, their stores, the
    packing). It may read, write and slice arrays, but must not allocate one (Numba refuses
    to compile that) nor return one (the caller would count a reference never taken).

    Why: Numba counts references to every array a function receives or slices, with an atomic
    instruction on a counter shared by all views of that array (``lock inc`` / ``lock dec``
    on x86: ~20 cycles each, a barrier to the loads and stores around it, and a transfer of the
    counter's cache line between cores when two threads do it to the same array, e.g. each
    writing its half of one output). The 6 x 64 micro tile's machine code held about 30 such
    updates (its row views of S and of the output, its arguments): measured on one Zen 4 core,
    a tile cost ~177 ns on top of its k loop (~840 ns at K = 128), ~50 ns without them.
    ``_nrt=False`` is Numba's own option for this (its unicode and sort helpers use it); the
    arrays stay alive because the caller, compiled normally, holds them for the whole call.
    Batch-1 generation's workers are leaf kernels from the top down (``cpu/generate.py``: ~1 us
    a character less at b). (Tried and not kept, for lack of a measurable gain: the sequence
    kernels' per-item work as leaf kernels, and the generation's row products alone.)"""
    return cache.guard(numba.njit(_nrt=False, **OPTIONS)(fn))


def parallel_kernel(fn):
    """A multithreaded kernel: ``numba.prange`` loops are split across threads."""
    return cache.guard(numba.njit(parallel=True, **OPTIONS)(fn))


# A Numba bug (numba/numba#4807 and #8578, open in 0.68): a cached kernel that calls a parallel
# kernel, when compiled in a process that loaded that parallel kernel (or a cached kernel that
# calls it) from the cache, is written to the cache broken: the next process that loads it
# crashes (tests/test_kernels_cache.py shows it). So every parallel kernel is an entry point,
# called from Python only; none is called from another kernel. (Batch-1 generation once had one
# parallel region a layer and character, called from its loop, and compiled it in every process;
# it now runs one region a call, ``cpu/generate.py``.)
prange = numba.prange


COMPILING = ("compiling tinyrnn's kernels for this machine, once: a first training step waits about half a "
             "minute on 2 cores, a first sample about 10 s; later runs load them from the cache")


@contextmanager
def compile_notice(say):
    """Within the block, ``say(COMPILING)`` once, as Numba starts compiling the first kernel that it
    did not find in the cache (Numba's ``numba:compile`` event fires on cache misses only): a run
    that compiles tells its user why its first step is slow; a warm run says nothing. ``say`` None:
    nothing is said."""
    if say is None:
        yield
        return
    with event.install_listener("numba:compile", _Once(say)):
        yield


class _Once(event.Listener):
    def __init__(self, say):
        self.say, self.said = say, False

    def on_start(self, ev):
        if not self.said:
            self.said = True
            self.say(COMPILING)

    def on_end(self, ev):
        pass
