"""Helpers shared by the CUDA kernels: moving arrays, allocating on the device, launch shapes.

Every public kernel in ``tinyrnn.kernels.cuda`` is a host-side Python function that takes
*device* arrays (``numba.cuda`` DeviceNDArrays) and launches one or more ``@cuda.jit``
kernels on the default stream. Launches are asynchronous: nothing waits for the GPU until
an array is copied back (``to_host``) or ``synchronize()`` is called.

Without a GPU, set ``NUMBA_ENABLE_CUDASIM=1`` *before* ``numba.cuda`` is first imported:
numba then runs every kernel in its CUDA simulator (plain Python threads, one per GPU
thread: slow, but it runs the same code, shared memory and barriers included). The tests do
this. Only ``tinyrnn/kernels/cuda/*`` imports ``numba.cuda``; the CPU path never does.

Launch shapes: one thread per output element for elementwise work (1-D grids of
``THREADS`` threads), one block of ``ROW_THREADS`` threads per row for row reductions
(softmax), and ``TILE x TILE`` blocks for the matmuls. Small problems get smaller blocks
(rounded up to a warp), which also keeps the simulator, which starts one Python thread per
GPU thread, quick.
"""
import math

import numpy as np
from numba import config, cuda

from .. import cache

cache.install()     # CUDA kernels cache in the same keyed directory as the CPU ones (see kernels/cache.py)

WARP = 32
THREADS = 256          # threads per block for 1-D elementwise launches
ROW_THREADS = 256      # threads per block for one-block-per-row reductions (a power of two)
TILE = 16              # matmul tile edge: blocks of TILE x TILE threads, one output element each

# Kernel options used by every kernel: compiled code cached on disk (saved under a lock:
# ``cache.guard``); no fastmath, so exp/tanh/log are libdevice's full-precision functions (within
# an ulp or two) in both dtypes, not the fast approximate intrinsics.
JIT = dict(cache=True)


def jit(fn):
    """A CUDA kernel (launched as ``fn[blocks, threads](...)``), with the project's options."""
    return cache.guard(cuda.jit(**JIT)(fn))


def device_function(fn):
    """A function callable from CUDA kernels (not launchable by itself)."""
    return cache.guard(cuda.jit(device=True, **JIT)(fn))


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------
def is_simulator() -> bool:
    """True when numba runs kernels in its CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return bool(config.ENABLE_CUDASIM)


def is_available() -> bool:
    """True when kernels can run: a usable CUDA GPU and driver, or the simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install raises instead of answering False
        return False


_toolchain_checked = []     # [None] once a kernel compiled and ran; [message] when it could not


def toolchain_problem():
    """None when numba.cuda compiles and runs a one-line kernel here (checked once a process), else
    one line saying why not and what to do. Seen on a real GPU: numba-cuda 0.30.4 beside numpy 2.5
    fails in its first compile (it registers ``np.row_stack``, which numpy 2.5 removed), which would
    otherwise surface deep inside the first op of a run as an unexplained AttributeError."""
    if not _toolchain_checked:
        try:
            probe = cuda.device_array(1, dtype=np.float32)
            fill(probe, 1.0)
            cuda.synchronize()
            _toolchain_checked.append(None)
        except Exception as e:  # noqa: BLE001 - whatever broke, the user gets one line and the versions
            _toolchain_checked.append(
                f"--device cuda: numba.cuda could not compile a kernel ({type(e).__name__}: {e}) with "
                f"{_versions()}: install versions that work together (numba-cuda 0.30.4 needs numpy<2.5), "
                "or use --device cpu")
    return _toolchain_checked[0]


def _versions() -> str:
    from importlib import metadata

    found = []
    for name in ("numba", "numba-cuda", "numpy"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def synchronize():
    """Wait until every kernel launched so far has finished."""
    cuda.synchronize()


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------
def is_device_array(x) -> bool:
    """True for a numba.cuda device array (the simulator's stand-in included)."""
    return not isinstance(x, np.ndarray) and hasattr(x, "copy_to_host")


def to_device(a):
    """A device copy of host array ``a`` (made C-contiguous first); device arrays pass through."""
    if is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(d) -> np.ndarray:
    """A host (numpy) copy of device array ``d``; waits for the kernels writing it. Host arrays
    (and lists) pass through as numpy arrays."""
    if is_device_array(d):
        return d.copy_to_host()
    return np.asarray(d)


def empty(shape, dtype=np.float32):
    """An uninitialised device array."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype=np.float32):
    """A device array of zeros, filled on the device (no host buffer is copied over)."""
    d = cuda.device_array(shape, dtype=np.dtype(dtype))
    fill(d, 0)
    return d


def empty_like(d):
    return cuda.device_array(d.shape, dtype=d.dtype)


def zeros_like(d):
    return zeros(d.shape, d.dtype)


def copy(src, dst):
    """dst[...] = src, device to device (same shape and dtype)."""
    dst.copy_to_device(src)


@jit
def _fill_kernel(flat, value):
    i = cuda.grid(1)
    if i < flat.size:
        flat[i] = value


def fill(d, value):
    """d[...] = value, in place, on the device (``d`` must be contiguous)."""
    flat = d.reshape(d.size)
    if flat.size:
        _fill_kernel[blocks_for(flat.size), threads_for(flat.size)](flat, d.dtype.type(value))


# --------------------------------------------------------------------------------------------
# Block reductions, used by the one-block-per-row kernels. Every thread of the block must call
# them (they contain barriers); every thread gets the result. blockDim.x must be a power of two
# no larger than the shared array. (Comparisons are written out: the builtin max() failed to
# compile for CUDA with numba 0.68.)
# --------------------------------------------------------------------------------------------
@device_function
def block_max(shared, value):
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride and shared[tid + stride] > shared[tid]:
            shared[tid] = shared[tid + stride]
        cuda.syncthreads()
        stride //= 2
    result = shared[0]
    cuda.syncthreads()   # everyone has read shared[0] before the next reduction overwrites it
    return result


@device_function
def block_sum(shared, value):
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            shared[tid] += shared[tid + stride]
        cuda.syncthreads()
        stride //= 2
    result = shared[0]
    cuda.syncthreads()
    return result


# --------------------------------------------------------------------------------------------
# Sum to one number: two passes, float64, in a fixed order (the same result run to run)
# --------------------------------------------------------------------------------------------
SUM_BLOCKS = 256


@jit
def _partial_sums_kernel(x, square, partial):
    """Block b: partial[b] = sum of x[i] (x[i]**2 if square) over the i its threads visit, in float64."""
    shared = cuda.shared.array(ROW_THREADS, np.float64)
    total = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = np.float64(x[i])
        total += v * v if square else v
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x] = total


@jit
def _finish_sum_kernel(partial, out, scale, accumulate):
    """One block: out[0] (+)= scale * sum(partial)."""
    shared = cuda.shared.array(ROW_THREADS, np.float64)
    total = 0.0
    for i in range(cuda.threadIdx.x, partial.size, cuda.blockDim.x):
        total += partial[i]
    total = block_sum(shared, total)
    if cuda.threadIdx.x == 0:
        if accumulate:
            out[0] += total * scale
        else:
            out[0] = total * scale


def sum_into(flat, out, square=False, scale=1.0, accumulate=False):
    """out[0] (+)= scale * sum(flat), or of flat**2 with ``square``, on the device, without waiting.

    flat: a 1-D device array; out: a 1-element device array (float64 sums, rounded once into out).
    """
    threads = row_threads(flat.size)   # a power of two, as the tree reduction needs
    n_blocks = min(SUM_BLOCKS, max(1, -(-flat.size // threads)))
    partial = cuda.device_array(n_blocks, dtype=np.float64)
    _partial_sums_kernel[n_blocks, threads](flat, bool(square), partial)
    _finish_sum_kernel[1, row_threads(n_blocks)](partial, out, float(scale), bool(accumulate))


# --------------------------------------------------------------------------------------------
# Launch shapes
# --------------------------------------------------------------------------------------------
def threads_for(n: int, most: int = THREADS) -> int:
    """Threads per block for ``n`` independent items: ``most``, or ``n`` rounded up to a warp."""
    return max(WARP, min(most, -(-n // WARP) * WARP))


def blocks_for(n: int, most_threads: int = THREADS) -> int:
    """Blocks needed to give each of ``n`` items a thread, with ``threads_for(n)`` per block."""
    return max(1, -(-n // threads_for(n, most_threads)))


def row_threads(width: int) -> int:
    """Threads per block for a one-block-per-row reduction over ``width`` columns: a power of
    two (the tree reduction halves it) between a warp and ``ROW_THREADS``."""
    return max(WARP, min(ROW_THREADS, 1 << max(0, math.ceil(math.log2(max(width, 1))))))


def tile_grid(rows: int, cols: int):
    """(blocks, threads) for a TILE x TILE tiling of a rows x cols output; x runs over columns."""
    return (-(-cols // TILE), -(-rows // TILE)), (TILE, TILE)
