"""Primitive ops, each a forward and its backward side by side.

Every op follows one pattern (micrograd's, on arrays):

    def op(x):
        out = <forward on x.data>
        def backward(g):               # g = d loss / d out
            return (<d loss / d x>,)   # one entry per input, shaped like that input
        return record(out, (x,), backward, "op")

``record`` (in ``tinyrnn.tensor``) keeps ``backward`` only when some input needs gradients.
Binary ops broadcast like numpy; their backward sums the gradient back down to each input's
shape (``unbroadcast``). The heavy ops (matmul, linear, embedding, softmax cross-entropy)
call kernels from ``tinyrnn.kernels`` through ``tinyrnn.backend``.
"""
from __future__ import annotations

import numpy as np

from .backend import kernels
from .tensor import FLOAT_DTYPES, Tensor, record


# ---- helpers ------------------------------------------------------------------------------
def _check_dtype(a: np.ndarray, b: np.ndarray, op: str):
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: mixed dtypes {a.dtype} and {b.dtype}; convert one first, "
                        f"e.g. x.astype(np.{b.dtype}) (tinyrnn never upcasts silently)")


def _lift(x, like: Tensor | None = None) -> Tensor:
    """Wrap a Python number or numpy array as a constant tensor with ``like``'s dtype."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    if like is not None:
        if arr.dtype.kind == "f" and arr.ndim > 0 and arr.dtype != like.dtype:
            _check_dtype(like.data, arr, "operand")
        arr = arr.astype(like.dtype, copy=False)
    return Tensor(arr)


def _binary(a, b, op: str):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: at least one operand must be a Tensor")
    a = _lift(a, b if isinstance(b, Tensor) else None)
    b = _lift(b, a)
    _check_dtype(a.data, b.data, op)
    return a, b


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes numpy broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape)))) if grad.ndim > len(shape) else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _contiguous(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x)


# ---- arithmetic -----------------------------------------------------------------------------
def add(a, b):
    a, b = _binary(a, b, "add")

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

    return record(a.data + b.data, (a, b), backward, "add")


def sub(a, b):
    a, b = _binary(a, b, "sub")

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)

    return record(a.data - b.data, (a, b), backward, "sub")


def mul(a, b):
    a, b = _binary(a, b, "mul")

    def backward(g):
        return unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)

    return record(a.data * b.data, (a, b), backward, "mul")


def div(a, b):
    a, b = _binary(a, b, "div")
    out = a.data / b.data

    def backward(g):
        gb = g / b.data
        return unbroadcast(gb, a.shape), unbroadcast(-gb * out, b.shape)

    return record(out, (a, b), backward, "div")


def neg(x):
    x = _lift(x)
    return record(-x.data, (x,), lambda g: (-g,), "neg")


def pow(x, exponent: float):
    """x ** p for a constant p."""
    x = _lift(x)
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a constant number")
    p = float(exponent)

    def backward(g):
        return (g * (p * x.data ** (p - 1)),)

    return record(x.data ** p, (x,), backward, "pow")


def astype(x, dtype):
    """Convert between float32 and float64 explicitly (the only way dtypes may mix)."""
    x = _lift(x)
    source = x.dtype

    def backward(g):
        return (g.astype(source),)

    return record(x.data.astype(dtype), (x,), backward, "astype")


# ---- elementwise functions --------------------------------------------------------------------
def tanh(x):
    x = _lift(x)
    out = np.tanh(x.data)
    return record(out, (x,), lambda g: (g * (1 - out * out),), "tanh")


def sigmoid(x):
    x = _lift(x)
    # 1/(1+exp(-x)) overflows for very negative x; this form is exact and never overflows.
    out = 0.5 * (1 + np.tanh(0.5 * x.data))
    return record(out, (x,), lambda g: (g * out * (1 - out),), "sigmoid")


def relu(x):
    x = _lift(x)
    out = np.maximum(x.data, 0)
    return record(out, (x,), lambda g: (g * (x.data > 0),), "relu")


def exp(x):
    x = _lift(x)
    out = np.exp(x.data)
    return record(out, (x,), lambda g: (g * out,), "exp")


def log(x):
    x = _lift(x)
    return record(np.log(x.data), (x,), lambda g: (g / x.data,), "log")


# ---- reductions -------------------------------------------------------------------------------
def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(a % ndim for a in axes)


def sum(x, axis=None, keepdims=False):
    x = _lift(x)
    axes = _normalize_axes(axis, x.ndim)
    out = np.asarray(x.data.sum(axis=axes, keepdims=keepdims))

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, x.shape),)

    return record(out, (x,), backward, "sum")


def mean(x, axis=None, keepdims=False):
    x = _lift(x)
    axes = _normalize_axes(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return mul(sum(x, axes, keepdims), 1.0 / count)


# ---- shape ops ----------------------------------------------------------------------------------
def reshape(x, shape):
    x = _lift(x)
    return record(x.data.reshape(shape), (x,), lambda g: (g.reshape(x.shape),), "reshape")


def transpose(x, axes=None):
    x = _lift(x)
    inverse = None if axes is None else tuple(np.argsort(axes))
    return record(np.transpose(x.data, axes), (x,), lambda g: (np.transpose(g, inverse),), "transpose")


def getitem(x, index):
    """x[index] for slices, integers and integer arrays (repeated indices add up in backward)."""
    x = _lift(x)
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)

    basic = _is_basic_index(index)

    def backward(g):
        grad = np.zeros_like(x.data)
        if basic:  # slices and integers: no element is picked twice
            grad[index] += g
        else:      # integer arrays may repeat an index: add.at adds every occurrence
            np.add.at(grad, index, g)
        return (grad,)

    return record(x.data[index], (x,), backward, "getitem")


def _is_basic_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in parts)


def concat(tensors, axis=0):
    """Join tensors along an existing axis (numpy.concatenate)."""
    tensors = [_lift(t) for t in tensors]
    for t in tensors[1:]:
        _check_dtype(tensors[0].data, t.data, "concat")
    axis = axis % tensors[0].ndim
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))

    return record(np.concatenate([t.data for t in tensors], axis=axis), tuple(tensors), backward, "concat")


def stack(tensors, axis=0):
    """Join tensors along a new axis (numpy.stack)."""
    tensors = [_lift(t) for t in tensors]
    for t in tensors[1:]:
        _check_dtype(tensors[0].data, t.data, "stack")
    out = np.stack([t.data for t in tensors], axis=axis)
    axis = axis % out.ndim

    def backward(g):
        return tuple(np.take(g, i, axis=axis) for i in range(len(tensors)))

    return record(out, tuple(tensors), backward, "stack")


def split(x, sizes_or_sections, axis=0):
    """Split into pieces: an int n gives n equal pieces; a list gives pieces of those sizes."""
    x = _lift(x)
    n = x.shape[axis]
    if isinstance(sizes_or_sections, int):
        if n % sizes_or_sections:
            raise ValueError(f"split: axis of size {n} does not divide into {sizes_or_sections} equal pieces")
        sizes = [n // sizes_or_sections] * sizes_or_sections
    else:
        sizes = list(sizes_or_sections)
        if np.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to the axis size {n}")
    pieces, start = [], 0
    for size in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        pieces.append(getitem(x, tuple(index)))
        start += size
    return pieces


# ---- matrix products (Numba kernels) -----------------------------------------------------------
def matmul(a, b):
    """a @ b for a: (..., M, K) and b: (K, N) -> (..., M, N).

    backward: da = g @ b.T,  db = a.T @ g   (the kernels' nt and tn variants; nothing transposed in memory)
    """
    a, b = _binary(a, b, "matmul")
    if b.ndim != 2 or a.ndim < 2:
        raise ValueError(f"matmul supports (..., M, K) @ (K, N); got {a.shape} @ {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({a.shape[-1]} != {b.shape[0]})")
    K = kernels()
    a2 = _contiguous(a.data.reshape(-1, a.shape[-1]))
    bd = _contiguous(b.data)
    out = np.empty((a2.shape[0], bd.shape[1]), dtype=a.dtype)
    K.matmul_nn(a2, bd, out, False)

    def backward(g):
        g2 = _contiguous(g.reshape(-1, g.shape[-1]))
        da = db = None
        if a.requires_grad:
            da = np.empty_like(a2)
            K.matmul_nt(g2, bd, da, False)
            da = da.reshape(a.shape)
        if b.requires_grad:
            db = np.empty_like(bd)
            K.matmul_tn(a2, g2, db, False)
        return da, db

    return record(out.reshape(a.shape[:-1] + (bd.shape[1],)), (a, b), backward, "matmul")


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias for x: (..., I), weight: (O, I), bias: (O,) -> (..., O).

    One fused op: the product uses the nt kernel (weight is kept in PyTorch's (O, I) layout),
    the bias is added in place. backward: dx = g @ W, dW = g.T @ x, db = g summed over rows.
    """
    x, weight = _binary(x, weight, "linear")
    if bias is not None:
        bias = _lift(bias, weight)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input features {x.shape[-1]} != weight's {weight.shape[1]}")
    K = kernels()
    x2 = _contiguous(x.data.reshape(-1, x.shape[-1]))
    w = _contiguous(weight.data)
    out = np.empty((x2.shape[0], w.shape[0]), dtype=x.dtype)
    K.matmul_nt(x2, w, out, False)
    if bias is not None:
        K.add_bias_forward(out, _contiguous(bias.data))

    def backward(g):
        g2 = _contiguous(g.reshape(-1, g.shape[-1]))
        dx = dw = db = None
        if x.requires_grad:
            dx = np.empty_like(x2)
            K.matmul_nn(g2, w, dx, False)
            dx = dx.reshape(x.shape)
        if weight.requires_grad:
            dw = np.empty_like(w)
            K.matmul_tn(g2, x2, dw, False)
        if bias is not None and bias.requires_grad:
            db = np.empty_like(bias.data)
            K.bias_backward(g2, db, False)
        return dx, dw, db

    parents = (x, weight) if bias is None else (x, weight, bias)
    return record(out.reshape(x.shape[:-1] + (w.shape[0],)), parents, backward, "linear")


# ---- lookups, dropout ------------------------------------------------------------------------
def _index_array(idx) -> np.ndarray:
    arr = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def embedding(weight, idx):
    """Rows of ``weight`` (V, E) picked by integer ``idx`` (any shape) -> idx.shape + (E,).

    backward: a scatter-add of the gradient rows into dweight (repeated indices add up).
    """
    weight = _lift(weight)
    idx = _index_array(idx)
    V, E = weight.shape
    if idx.size and (idx.min() < 0 or idx.max() >= V):
        raise IndexError(f"embedding: index out of range [0, {V}) (got {idx.min()}..{idx.max()})")
    K = kernels()
    flat = idx.reshape(-1)
    w = _contiguous(weight.data)
    out = np.empty((flat.size, E), dtype=weight.dtype)
    K.embedding_forward(w, flat, out)

    def backward(g):
        dweight = np.zeros_like(w)
        K.embedding_backward(flat, _contiguous(g.reshape(-1, E)), dweight)
        return (dweight,)

    return record(out.reshape(idx.shape + (E,)), (weight,), backward, "embedding")


def dropout(x, p: float, training: bool = True, rng: np.random.Generator | None = None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval mode)."""
    x = _lift(x)
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    rng = rng if rng is not None else np.random.default_rng()
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return record(x.data * mask, (x,), lambda g: (g * mask,), "dropout")


# ---- softmax and the loss ---------------------------------------------------------------------
def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, stably: x - max - log(sum(exp(x - max))).

    backward: dx = g - softmax(x) * sum(g)
    """
    x = _lift(x)
    axis = axis % x.ndim
    moved = np.moveaxis(x.data, axis, -1)
    flat = _contiguous(moved.reshape(-1, moved.shape[-1]))
    K = kernels()
    out = np.empty_like(flat)
    K.log_softmax_forward(flat, out)

    def backward(g):
        g2 = _contiguous(np.moveaxis(g, axis, -1).reshape(flat.shape))
        dx = np.empty_like(flat)
        K.log_softmax_backward(out, g2, dx)
        return (np.moveaxis(dx.reshape(moved.shape), -1, axis),)

    return record(np.moveaxis(out.reshape(moved.shape), -1, axis), (x,), backward, "log_softmax")


def cross_entropy(logits, targets, ignore_index: int = -100):
    """Mean over tokens of -log softmax(logits)[target], fused and numerically stable.

    logits: (..., V); targets: integer array of shape logits.shape[:-1]; tokens whose target is
    ``ignore_index`` count neither in the sum nor in the mean.
    backward: dlogits = (softmax(logits) - onehot(target)) / count
    """
    logits = _lift(logits)
    targets = _index_array(targets).reshape(-1)
    V = logits.shape[-1]
    flat = _contiguous(logits.data.reshape(-1, V))
    if targets.size != flat.shape[0]:
        raise ValueError(f"cross_entropy: {flat.shape[0]} rows of logits but {targets.size} targets")
    valid = targets != ignore_index
    if np.any((targets[valid] < 0) | (targets[valid] >= V)):
        raise IndexError(f"cross_entropy: target out of range [0, {V})")
    count = max(int(valid.sum()), 1)
    K = kernels()
    probs = np.empty_like(flat)
    losses = np.empty(flat.shape[0], dtype=flat.dtype)
    K.softmax_xent_forward(flat, targets, ignore_index, probs, losses)
    loss = np.asarray(losses.sum(dtype=np.float64) / count, dtype=flat.dtype)

    def backward(g):
        dlogits = np.empty_like(probs)
        K.softmax_xent_backward(probs, targets, ignore_index, float(g) / count, dlogits)
        return (dlogits.reshape(logits.shape),)

    return record(loss, (logits,), backward, "cross_entropy")
