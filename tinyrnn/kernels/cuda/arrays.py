"""Array helpers the tape needs on the GPU: allocation, strided copies, elementwise arithmetic,
reductions, joins and dropout masks. Not kernels of the spec (``tinyrnn.kernels``), but what numpy
gives the CPU path for free: ``tinyrnn.backend.arrays('cuda')`` returns this module, and
``arrays('cpu')`` returns ``tinyrnn.kernels.reference.arrays``, which has the same names over
numpy arrays, so each op is written once.

Views (a slice, a reversed time axis ``x[::-1]``, one step ``x[t]``) are numba device arrays
with their own strides; ``copyto`` / ``add_into`` walk any strides (up to 4 dimensions), so
slicing costs one pass over the selected elements and nothing else. Every other helper wants
C-contiguous arrays, which ``contiguous`` provides.

What numpy does and the GPU does not (broadcasting two arrays of different shapes, sums over
some axes, fancy indexing, moving axes) raises ``DeviceError`` naming the fix.

Scalars (a loss, a sum) are 0-d device arrays; kernels see them as 1-element arrays.
"""
import numpy as np
from numba import cuda
from numba.cuda.random import create_xoroshiro128p_states, xoroshiro128p_uniform_float64

from .device import blocks_for, is_simulator, jit, sum_into, threads_for
from .device import empty, empty_like, fill, is_device_array, to_device, to_host, zeros, zeros_like  # noqa: F401
from ...backend import DeviceError

MAX_DIMS = 4


def ones_like(d):
    out = empty_like(d)
    fill(out, 1)
    return out


def _flat(d):
    return d.reshape(d.size)


def _scalar(d):
    """A 0-d (or 1-element) device array as a 1-element one, for kernels."""
    return d.reshape(1)


def _launch(n):
    return blocks_for(n), threads_for(n)


# --------------------------------------------------------------------------------------------
# Strided copies: dst (+)= src for any strides, one thread per element
# --------------------------------------------------------------------------------------------
@jit
def _strided_1d(dst, src, accumulate):
    i = cuda.grid(1)
    if i < dst.size:
        dst[i] = dst[i] + src[i] if accumulate else src[i]


@jit
def _strided_2d(dst, src, accumulate):
    i = cuda.grid(1)
    n1 = dst.shape[1]
    if i < dst.size:
        a, b = i // n1, i % n1
        dst[a, b] = dst[a, b] + src[a, b] if accumulate else src[a, b]


@jit
def _strided_3d(dst, src, accumulate):
    i = cuda.grid(1)
    n1, n2 = dst.shape[1], dst.shape[2]
    if i < dst.size:
        a, r = i // (n1 * n2), i % (n1 * n2)
        b, c = r // n2, r % n2
        dst[a, b, c] = dst[a, b, c] + src[a, b, c] if accumulate else src[a, b, c]


@jit
def _strided_4d(dst, src, accumulate):
    i = cuda.grid(1)
    n1, n2, n3 = dst.shape[1], dst.shape[2], dst.shape[3]
    if i < dst.size:
        a, r = i // (n1 * n2 * n3), i % (n1 * n2 * n3)
        b, r = r // (n2 * n3), r % (n2 * n3)
        c, d = r // n3, r % n3
        dst[a, b, c, d] = dst[a, b, c, d] + src[a, b, c, d] if accumulate else src[a, b, c, d]


_STRIDED = {1: _strided_1d, 2: _strided_2d, 3: _strided_3d, 4: _strided_4d}


def _strided(dst, src, accumulate):
    if tuple(dst.shape) != tuple(src.shape):
        raise ValueError(f"shapes differ: {dst.shape} and {src.shape}")
    if dst.size == 0:
        return
    if dst.is_c_contiguous() and src.is_c_contiguous():   # (0-d arrays always are: they become 1-D)
        dst, src = _flat(dst), _flat(src)
    if dst.ndim > MAX_DIMS:
        raise ValueError(f"CUDA tensors support strided views of at most {MAX_DIMS} dimensions, got {dst.ndim}")
    _STRIDED[dst.ndim][_launch(dst.size)](dst, src, bool(accumulate))


def copyto(dst, src):
    """dst[...] = src (same shape; either may be a strided view)."""
    _strided(dst, src, False)


def add_into(dst, src):
    """dst[...] += src (same shape; either may be a strided view)."""
    _strided(dst, src, True)


def contiguous(d):
    """``d`` itself if C-contiguous, else a C-contiguous copy."""
    if d.is_c_contiguous():
        return d
    out = empty(d.shape, d.dtype)
    copyto(out, d)
    return out


def clone(d, dtype=None):
    """A fresh C-contiguous copy of ``d`` (``dtype``, if given, must be d's: no conversion on the device)."""
    if not is_device_array(d):
        raise DeviceError("clone: expected a CUDA array, got a host array")
    if dtype is not None and np.dtype(dtype) != d.dtype:
        raise TypeError(f"cannot convert a CUDA array from {d.dtype} to {np.dtype(dtype)} on the device")
    out = empty(d.shape, d.dtype)
    copyto(out, d)
    return out


def reshape(d, shape):
    """``d`` reshaped (device arrays reshape only when contiguous: a copy first if it is not)."""
    return contiguous(d).reshape(shape)


def moveaxis(d, source, destination):
    """``d`` itself when the axis stays put; moving axes is not supported on the GPU."""
    if source % d.ndim != destination % d.ndim:
        raise DeviceError("moving axes of CUDA tensors is not supported (softmax works along the last axis "
                          "only); move to the CPU first: x.to('cpu')")
    return d


# --------------------------------------------------------------------------------------------
# Elementwise arithmetic on contiguous arrays of one shape
# --------------------------------------------------------------------------------------------
ADD, SUB, MUL = 0, 1, 2


@jit
def _binary_kernel(a, b, out, op):
    i = cuda.grid(1)
    if i < out.size:
        if op == 0:
            out[i] = a[i] + b[i]
        elif op == 1:
            out[i] = a[i] - b[i]
        else:
            out[i] = a[i] * b[i]


@jit
def _affine_kernel(x, out, scale, shift):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = scale * x[i] + shift


def _binary(a, b, op):
    if tuple(a.shape) != tuple(b.shape):
        raise DeviceError(f"{('add', 'sub', 'mul')[op]}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ; "
                          f"broadcasting is not supported on CUDA tensors (only a tensor and a number)")
    out = empty(a.shape, a.dtype)
    if out.size:
        _binary_kernel[_launch(out.size)](_flat(contiguous(a)), _flat(contiguous(b)), _flat(out), op)
    return out


def add(a, b):
    """a + b (same shape)."""
    return _binary(a, b, ADD)


def sub(a, b):
    """a - b (same shape)."""
    return _binary(a, b, SUB)


def mul(a, b):
    """a * b (same shape)."""
    return _binary(a, b, MUL)


def affine(x, scale, shift=0.0):
    """scale * x + shift for Python numbers scale, shift (x + c, c - x, c * x, -x)."""
    out = empty(x.shape, x.dtype)
    if out.size:
        t = x.dtype.type
        _affine_kernel[_launch(out.size)](_flat(contiguous(x)), _flat(out), t(scale), t(shift))
    return out


@jit
def _scale_by_kernel(x, s):
    i = cuda.grid(1)
    if i < x.size:
        x[i] = x[i] * s[0]


def scale_by(x, s):
    """x *= s in place, s a 0-d device array (a gradient arriving at a scalar; not read back to skip s == 1)."""
    if x.size:
        _scale_by_kernel[_launch(x.size)](_flat(x), _scalar(s))


@jit
def _broadcast_kernel(s, out, scale):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = s[0] * scale


def _broadcast_scalar(s, shape, scale=1.0):
    """A new array of ``shape`` filled with scale * s, s a 0-d device array (backward of a sum)."""
    out = empty(shape, s.dtype)
    if out.size:
        _broadcast_kernel[_launch(out.size)](_scalar(s), _flat(out), s.dtype.type(scale))
    return out


@jit
def _clip_kernel(x, lo, hi):
    i = cuda.grid(1)
    if i < x.size:
        if x[i] < lo:
            x[i] = lo
        elif x[i] > hi:
            x[i] = hi


def clip_inplace(x, lo, hi):
    """x = min(max(x, lo), hi) in place (gradient clipping by value)."""
    if x.size:
        t = x.dtype.type
        _clip_kernel[_launch(x.size)](_flat(x), t(lo), t(hi))


# --------------------------------------------------------------------------------------------
# Sums of everything to a scalar (float64 accumulation, fixed order: reproducible run to run)
# --------------------------------------------------------------------------------------------
def sum_scaled(x, scale=1.0):
    """scale * sum(x) as a 0-d device array of x's dtype (summed in float64, then rounded once)."""
    out = empty((), x.dtype)
    sum_into(_flat(contiguous(x)), _scalar(out), scale=scale)
    return out


def sum(x, axes, keepdims=False):  # noqa: A001  (the numpy name)
    """x summed over ``axes``: on the GPU only all of them (a 0-d device array, or 1s with keepdims)."""
    if len(axes) != x.ndim:
        raise DeviceError("sum over some axes is not supported on CUDA tensors (only of all elements); "
                          "move to the CPU first: x.to('cpu')")
    out = sum_scaled(x)
    return out.reshape((1,) * x.ndim) if keepdims else out


def spread(g, shape, axes, keepdims=False):
    """The backward of ``sum`` (of everything): a new array of ``shape`` filled with g."""
    return _broadcast_scalar(g, shape)


# --------------------------------------------------------------------------------------------
# Indexing and joins: ints and slices, via strided copies
# --------------------------------------------------------------------------------------------
def index(d, index):
    """d[index] for ints and slices (any step, e.g. d[::-1]), as a contiguous copy."""
    parts = index if isinstance(index, tuple) else (index,)
    if not all(isinstance(i, (int, np.integer, slice)) for i in parts):
        raise DeviceError("getitem on CUDA tensors takes only ints and slices; move to the CPU first: x.to('cpu')")
    view = d[index]
    if not is_device_array(view) or view.ndim == 0:
        raise DeviceError("getitem: picking one element of a CUDA tensor is not supported; use x.numpy()[...]")
    return contiguous(view)


def placed(shape, dtype, index, src):
    """An array of ``shape`` holding src at ``index`` (ints and slices) and 0 elsewhere."""
    out = zeros(shape, dtype)
    add_into(out[index], src)
    return out


def _join(arrays, axis, new_axis):
    """concatenate (new_axis=False) or stack (True): each input copied into its slab of the output."""
    first = arrays[0]
    rest_of = (lambda s: tuple(s)) if new_axis else (lambda s: tuple(s[:axis]) + tuple(s[axis + 1:]))
    for a in arrays[1:]:
        if rest_of(a.shape) != rest_of(first.shape):
            raise ValueError(f"{'stack' if new_axis else 'concat'}: shapes {tuple(first.shape)} and "
                             f"{tuple(a.shape)} do not fit")
    sizes = [1 if new_axis else a.shape[axis] for a in arrays]
    rest = tuple(first.shape[axis:] if new_axis else first.shape[axis + 1:])
    out = empty(tuple(first.shape[:axis]) + (int(np.sum(sizes)),) + rest, first.dtype)
    start = 0
    for a, size in zip(arrays, sizes):
        slab = (slice(None),) * axis + ((start,) if new_axis else (slice(start, start + size),))
        copyto(out[slab], a)
        start += size
    return out


def concatenate(arrays, axis=0):
    """Join device arrays along an existing axis (numpy.concatenate)."""
    return _join(arrays, axis, False)


def stack(arrays, axis=0):
    """Join device arrays along a new axis (numpy.stack)."""
    return _join(arrays, axis, True)


def split(g, bounds, axis):
    """g cut along ``axis`` at ``bounds`` (the backward of ``concatenate``), contiguous copies."""
    edges = [0] + [int(b) for b in bounds] + [g.shape[axis]]
    return tuple(contiguous(g[(slice(None),) * axis + (slice(lo, hi),)]) for lo, hi in zip(edges, edges[1:]))


def unstack(g, axis):
    """Each slice of g along ``axis`` (the backward of ``stack``), contiguous copies."""
    return tuple(contiguous(g[(slice(None),) * axis + (i,)]) for i in range(g.shape[axis]))


# --------------------------------------------------------------------------------------------
# Dropout masks from a counter-free GPU generator (xoroshiro128+, one state per thread)
# --------------------------------------------------------------------------------------------
# A fixed number of generator states lives on the device. The mask kernel always launches
# exactly that many threads; thread k draws for elements k, k + n_states, k + 2 n_states, ...
# from state k. So a mask depends only on the seed and on the masks drawn before it:
# ``tinyrnn.manual_seed(s)`` makes GPU dropout repeatable (not equal to the CPU's masks).
_N_STATES = 64 if is_simulator() else 32 * 1024
_rng = {"source": None, "states": None}


def _states(rng: np.random.Generator):
    """Device generator states, seeded once from ``rng`` (again whenever ``rng`` is a new generator)."""
    if _rng["source"] is not rng:
        seed = int(rng.integers(0, 2**63 - 1))
        _rng["states"] = create_xoroshiro128p_states(_N_STATES, seed=seed)
        _rng["source"] = rng
    return _rng["states"]


@jit
def _dropout_mask_kernel(states, mask, p, scale):
    k = cuda.grid(1)
    for i in range(k, mask.size, cuda.gridsize(1)):
        keep = xoroshiro128p_uniform_float64(states, k) >= p
        mask[i] = scale if keep else mask.dtype.type(0.0)


def dropout_mask(shape, dtype, p, rng):
    """A new array of ``shape``: 1 / (1 - p) with probability 1 - p, else 0."""
    mask = empty(shape, dtype)
    if mask.size:
        threads = min(_N_STATES, 256)
        _dropout_mask_kernel[_N_STATES // threads, threads](_states(rng), _flat(mask), float(p),
                                                            np.dtype(dtype).type(1.0 / (1.0 - p)))
    return mask
