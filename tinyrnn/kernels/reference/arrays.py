"""Array helpers for the CPU: the names of ``tinyrnn.kernels.cuda.arrays``, over numpy arrays.

``tinyrnn.backend.arrays('cpu')`` returns this module and ``arrays('cuda')`` the CUDA one, so an
op asks for ``A = arrays(device)`` and calls ``A.add(...)``, ``A.empty(...)``, ``A.sum(...)`` and
is written once for both. Most names are numpy's own functions; the rest are a line or two of
numpy. They sit beside the reference kernels because they are the plain-numpy statement of what
the CUDA helpers do (the CUDA versions support less: see the module there).
"""
import math

import numpy as np

# numpy's own functions under numpy's names
empty, zeros, empty_like, zeros_like, ones_like = np.empty, np.zeros, np.empty_like, np.zeros_like, np.ones_like
contiguous, copyto, concatenate, stack, moveaxis = np.ascontiguousarray, np.copyto, np.concatenate, np.stack, np.moveaxis
add, sub, mul = np.add, np.subtract, np.multiply   # with numpy's broadcasting


def is_device_array(x) -> bool:
    return False


def to_device(a) -> np.ndarray:
    """``a`` as a numpy array (the CPU's 'device' is the host)."""
    return np.asarray(a)


def to_host(a) -> np.ndarray:
    """A host copy of ``a``."""
    return np.array(a, copy=True)


def clone(a, dtype=None) -> np.ndarray:
    """A fresh C-contiguous copy of ``a`` (converted to ``dtype`` if given)."""
    return np.array(a, dtype=dtype, copy=True, order="C")


def add_into(dst, src):
    """dst[...] += src."""
    dst += src


def fill(a, value):
    """a[...] = value, in place."""
    a[...] = value


def affine(x, scale, shift=0.0):
    """scale * x + shift for Python numbers scale, shift (x + c, c - x, c * x, -x), in x's dtype."""
    t = x.dtype.type
    if shift == 0.0:
        return x * t(scale)
    if scale == 1.0:
        return x + t(shift)
    return x * t(scale) + t(shift)


def scale_by(x, s):
    """x *= s in place, s a 0-d array (a gradient arriving at a scalar; nothing to do when it is 1)."""
    if s != 1:
        x *= s


def sum(x, axes, keepdims=False):  # noqa: A001  (the numpy name)
    """x summed over ``axes`` (a tuple of axis numbers), as an array."""
    return np.asarray(x.sum(axis=axes, keepdims=keepdims))


def spread(g, shape, axes, keepdims=False):
    """The backward of ``sum``: g repeated along the summed ``axes`` back to ``shape`` (a view)."""
    return np.broadcast_to(g if keepdims else np.expand_dims(g, axes), shape)


def sum_scaled(x, scale=1.0):
    """scale * sum(x) as a 0-d array of x's dtype (summed in float64, then rounded once)."""
    return np.asarray(x.sum(dtype=np.float64) * scale, dtype=x.dtype)


def reshape(x, shape):
    return x.reshape(shape)


def index(x, index):
    """x[index] (any numpy index)."""
    return x[index]


def placed(shape, dtype, index, src) -> np.ndarray:
    """An array of ``shape`` holding src at ``index`` and 0 elsewhere; an index repeated in an
    integer array adds every occurrence (the backward of ``x[index]``)."""
    out = np.zeros(shape, dtype)
    parts = index if isinstance(index, tuple) else (index,)
    if all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in parts):
        out[index] = src            # slices and integers: no element is picked twice
    else:
        np.add.at(out, index, src)  # integer arrays may repeat an index
    return out


def split(g, bounds, axis):
    """g cut along ``axis`` at ``bounds`` (the backward of ``concatenate``), views."""
    return tuple(np.split(g, bounds, axis=axis))


def unstack(g, axis):
    """Each slice of g along ``axis`` (the backward of ``stack``)."""
    return tuple(np.take(g, i, axis=axis) for i in range(g.shape[axis]))


def dropout_mask(shape, dtype, p, rng):
    """A new array of ``shape``: 1 / (1 - p) with probability 1 - p, else 0 (drawn from ``rng``).

    Each element keeps when a uniform 32-bit integer u is >= ceil(p * 2**32): the raw output of
    rng's bit generator, two draws per 64-bit word (drawing and comparing: 2x faster than
    ``rng.random`` in float32; bool * scale: 10x faster than ``np.where`` with two scalars)."""
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    u = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n].reshape(shape)
    keep = u >= np.uint32(min(math.ceil(p * 2.0 ** 32), 2 ** 32 - 1))
    return np.multiply(keep, dtype.type(1.0 / (1.0 - p)), dtype=dtype)


def clip_inplace(x, lo, hi):
    """x = min(max(x, lo), hi) in place."""
    np.clip(x, lo, hi, out=x)
