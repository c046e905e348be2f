"""Primitive ops, each a forward and its backward side by side (re-exported by ``tinyrnn.ops``).

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

Devices: an op runs where its inputs are (all on the CPU, or all on the GPU; a mix is an error:
``same_device``), calling ``K = kernels(device)`` and ``A = arrays(device)`` for its kernels and
array helpers (numpy on the CPU, the same names over device arrays on the GPU), so each op is
written once. The ops a character model needs run on CUDA tensors: matmul, linear, embedding,
cross_entropy, log_softmax and layer_norm (last axis), add/sub/mul (same shapes, or a tensor and a Python
number), neg, sum/mean of everything, reshape, getitem with ints and slices, concat, stack,
split, dropout; where the GPU helpers support less than numpy they raise ``DeviceError``. The
rest (pow, astype, tanh, sigmoid, relu, exp, log, transpose, div by a tensor) are CPU-only.
"""
from __future__ import annotations

import numpy as np

from ..backend import DeviceError, arrays, device_of, kernels, to_numpy
from ..tensor import Tensor, record


# ---- helpers ------------------------------------------------------------------------------
def same_device(op: str, *tensors) -> str:
    """The device all ``tensors`` are on (None entries skipped); DeviceError if they disagree.

    Public: every op with several tensor inputs (here, in ``recurrent.py``, or your own) starts with it.
    """
    device = tensors[0].device
    for t in tensors[1:]:
        if t is not None and t.device != device:
            raise DeviceError(f"{op}: tensors on different devices ({device} and {t.device}); "
                              f"move them to one device first, e.g. x.to('{device}')")
    return device


def _cpu_only(op: str, x: Tensor):
    if x.device != "cpu":
        raise DeviceError(f"{op} is not supported on CUDA tensors; move to the CPU first: x.to('cpu')")


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
    return Tensor(arr, device=like.device if like is not None else None)


def _binary(a, b, op: str):
    """Both operands as tensors of one dtype on one device, and that device's array helpers."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: at least one operand must be a Tensor")
    a = _lift(a, b if isinstance(b, Tensor) else None)
    b = _lift(b, a)
    _check_dtype(a.data, b.data, op)
    return a, b, arrays(same_device(op, a, b))


def _with_number(a, b):
    """(tensor, number, number_first) when one operand is a Tensor and the other a number, else None."""
    if isinstance(a, Tensor) and not isinstance(b, Tensor) and np.ndim(b) == 0:
        return a, float(b), False
    if isinstance(b, Tensor) and not isinstance(a, Tensor) and np.ndim(a) == 0:
        return b, float(a), True
    return None


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes numpy broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape)))) if grad.ndim > len(shape) else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _rows(A, x):
    """x: (..., n) as a C-contiguous (rows, n) array (a copy only if x is not contiguous)."""
    return A.contiguous(x).reshape(-1, x.shape[x.ndim - 1])


# ---- arithmetic -----------------------------------------------------------------------------
# A tensor and a number (x + 2, 2 - x, 3 * x) is one affine op on the tensor: scale * x + shift.
def add(a, b):
    number = _with_number(a, b)
    if number:
        x, c, _ = number
        return record(arrays(x.device).affine(x.data, 1.0, c), (x,), lambda g: (g,), "add")
    a, b, A = _binary(a, b, "add")

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

    return record(A.add(a.data, b.data), (a, b), backward, "add")


def sub(a, b):
    number = _with_number(a, b)
    if number:
        x, c, number_first = number
        A = arrays(x.device)
        if number_first:                                                         # c - x
            return record(A.affine(x.data, -1.0, c), (x,), lambda g: (A.affine(g, -1.0),), "sub")
        return record(A.affine(x.data, 1.0, -c), (x,), lambda g: (g,), "sub")    # x - c
    a, b, A = _binary(a, b, "sub")

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(A.affine(g, -1.0), b.shape)

    return record(A.sub(a.data, b.data), (a, b), backward, "sub")


def mul(a, b):
    number = _with_number(a, b)
    if number:
        x, c, _ = number
        A = arrays(x.device)
        return record(A.affine(x.data, c), (x,), lambda g: (A.affine(g, c),), "mul")
    a, b, A = _binary(a, b, "mul")

    def backward(g):
        return unbroadcast(A.mul(g, b.data), a.shape), unbroadcast(A.mul(g, a.data), b.shape)

    return record(A.mul(a.data, b.data), (a, b), backward, "mul")


def div(a, b):
    """a / b; on the GPU only by a number (as a * (1/b))."""
    if isinstance(a, Tensor) and a.device != "cpu" and _with_number(a, b):
        return mul(a, 1.0 / float(b))
    a, b, _ = _binary(a, b, "div")
    _cpu_only("div (by a tensor)", a)
    out = a.data / b.data

    def backward(g):
        gb = g / b.data
        return unbroadcast(gb, a.shape), unbroadcast(-gb * out, b.shape)

    return record(out, (a, b), backward, "div")


def neg(x):
    x = _lift(x)
    A = arrays(x.device)
    return record(A.affine(x.data, -1.0), (x,), lambda g: (A.affine(g, -1.0),), "neg")


def pow(x, exponent: float):
    """x ** p for a constant p."""
    x = _lift(x)
    _cpu_only("pow", x)
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a constant number")
    p = float(exponent)

    def backward(g):
        return (g * (p * x.data ** (p - 1)),)

    return record(x.data ** p, (x,), backward, "pow")


def astype(x, dtype):
    """Convert between float32 and float64 explicitly (the only way dtypes may mix)."""
    x = _lift(x)
    _cpu_only("astype", x)
    source = x.dtype

    def backward(g):
        return (g.astype(source),)

    return record(x.data.astype(dtype), (x,), backward, "astype")


# ---- elementwise functions --------------------------------------------------------------------
def tanh(x):
    x = _lift(x)
    _cpu_only("tanh", x)
    out = np.tanh(x.data)
    return record(out, (x,), lambda g: (g * (1 - out * out),), "tanh")


def sigmoid(x):
    x = _lift(x)
    _cpu_only("sigmoid", x)
    # 1/(1+exp(-x)) overflows for very negative x; this form is exact and never overflows.
    out = 0.5 * (1 + np.tanh(0.5 * x.data))
    return record(out, (x,), lambda g: (g * out * (1 - out),), "sigmoid")


def relu(x):
    x = _lift(x)
    _cpu_only("relu", x)
    out = np.maximum(x.data, 0)
    return record(out, (x,), lambda g: (g * (x.data > 0),), "relu")


def exp(x):
    x = _lift(x)
    _cpu_only("exp", x)
    out = np.exp(x.data)
    return record(out, (x,), lambda g: (g * out,), "exp")


def log(x):
    x = _lift(x)
    _cpu_only("log", x)
    return record(np.log(x.data), (x,), lambda g: (g / x.data,), "log")


# ---- reductions -------------------------------------------------------------------------------
def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(a % ndim for a in axes)


def sum(x, axis=None, keepdims=False):
    """x summed over ``axis`` (None: every element). backward: g repeated along the summed axes."""
    x = _lift(x)
    axes = _normalize_axes(axis, x.ndim)
    A = arrays(x.device)
    return record(A.sum(x.data, axes, keepdims), (x,), lambda g: (A.spread(g, x.shape, axes, keepdims),), "sum")


def mean(x, axis=None, keepdims=False):
    x = _lift(x)
    axes = _normalize_axes(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return mul(sum(x, axes, keepdims), 1.0 / count)


# ---- shape ops ----------------------------------------------------------------------------------
def reshape(x, shape):
    x = _lift(x)
    A = arrays(x.device)
    return record(A.reshape(x.data, shape), (x,), lambda g: (A.reshape(g, x.shape),), "reshape")


def transpose(x, axes=None):
    x = _lift(x)
    _cpu_only("transpose", x)
    inverse = None if axes is None else tuple(np.argsort(axes))
    return record(np.transpose(x.data, axes), (x,), lambda g: (np.transpose(g, inverse),), "transpose")


def getitem(x, index):
    """x[index] for slices, integers and integer arrays (repeated indices add up in backward).
    On the GPU: ints and slices only (any step, e.g. x[::-1]); the result is a contiguous copy."""
    x = _lift(x)
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    A = arrays(x.device)

    def backward(g):
        return (A.placed(x.shape, x.dtype, index, g),)

    return record(A.index(x.data, index), (x,), backward, "getitem")


def permute(x, order, axis=0):
    """x reordered along ``axis`` by the permutation ``order``: out.take(i) = x.take(order[i]) (CPU).

    backward: the gradient put back in place by the inverse permutation, a gather (``getitem``
    with an index array would scatter-add, which a permutation, repeating no index, never needs).
    Rows of an embedding lookup, permuted, are still a lookup (``Tensor._lookup``, indices permuted):
    a layer sorting a batch by length still projects the table, not every row."""
    x = _lift(x)
    _cpu_only("permute", x)
    order = np.asarray(order)
    n = x.shape[axis]
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"permute: order must be a permutation of range({n}) (axis {axis} of {x.shape})")
    inverse = np.argsort(order)
    out = record(np.take(x.data, order, axis=axis), (x,), lambda g: (np.take(g, inverse, axis=axis),), "permute")
    if x._lookup is not None and axis % x.ndim < x.ndim - 1:     # rows of an embedding reordered: still a lookup
        table, idx = x._lookup
        out._lookup = (table, np.take(idx, order, axis=axis % x.ndim))
    return out


def concat(tensors, axis=0):
    """Join tensors along an existing axis (numpy.concatenate)."""
    tensors = [_lift(t) for t in tensors]
    for t in tensors[1:]:
        _check_dtype(tensors[0].data, t.data, "concat")
    A = arrays(same_device("concat", *tensors))
    axis = axis % tensors[0].ndim
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    out = A.concatenate([t.data for t in tensors], axis=axis)
    return record(out, tuple(tensors), lambda g: A.split(g, bounds, axis), "concat")


def stack(tensors, axis=0):
    """Join tensors along a new axis (numpy.stack)."""
    tensors = [_lift(t) for t in tensors]
    for t in tensors[1:]:
        _check_dtype(tensors[0].data, t.data, "stack")
    A = arrays(same_device("stack", *tensors))
    axis = axis % (tensors[0].ndim + 1)
    out = A.stack([t.data for t in tensors], axis=axis)
    return record(out, tuple(tensors), lambda g: A.unstack(g, axis), "stack")


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
    a, b, A = _binary(a, b, "matmul")
    if b.ndim != 2 or a.ndim < 2:
        raise ValueError(f"matmul supports (..., M, K) @ (K, N); got {a.shape} @ {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({a.shape[-1]} != {b.shape[0]})")
    K = kernels(a.device)
    a2 = _rows(A, a.data)
    bd = A.contiguous(b.data)
    out = A.empty((a2.shape[0], bd.shape[1]), dtype=a.dtype)
    K.matmul_nn(a2, bd, out, False)

    def backward(g):
        g2 = _rows(A, g)
        da = db = None
        if a.requires_grad:
            da = A.empty_like(a2)
            K.matmul_nt(g2, bd, da, False)
            da = da.reshape(a.shape)
        if b.requires_grad:
            db = A.empty_like(bd)
            K.matmul_tn(a2, g2, db, False)
        return da, db

    return record(out.reshape(a.shape[:-1] + (bd.shape[1],)), (a, b), backward, "matmul")


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias for x: (..., I), weight: (O, I), bias: (O,) -> (..., O).

    One fused op: the product uses the nt kernel (weight is kept in PyTorch's (O, I) layout),
    the bias is added in place. backward: dx = g @ W, dW = g.T @ x, db = g summed over rows.
    """
    x, weight, _ = _binary(x, weight, "linear")
    if bias is not None:
        bias = _lift(bias, weight)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input features {x.shape[-1]} != weight's {weight.shape[1]}")
    device = same_device("linear", x, weight, bias)
    K, A = kernels(device), arrays(device)
    x2 = _rows(A, x.data)
    w = A.contiguous(weight.data)
    out = A.empty((x2.shape[0], w.shape[0]), dtype=x.dtype)
    K.matmul_nt(x2, w, out, False)
    if bias is not None:
        K.add_bias_forward(out, A.contiguous(bias.data))

    def backward(g):
        g2 = _rows(A, g)
        dx = dw = db = None
        if x.requires_grad:
            dx = A.empty_like(x2)
            K.matmul_nn(g2, w, dx, False)
            dx = dx.reshape(x.shape)
        if weight.requires_grad:
            dw = A.empty_like(w)
            K.matmul_tn(g2, x2, dw, False)
        if bias is not None and bias.requires_grad:
            db = A.empty(bias.shape, dtype=bias.dtype)
            K.bias_backward(g2, db, False)
        return dx, dw, db

    parents = (x, weight) if bias is None else (x, weight, bias)
    return record(out.reshape(x.shape[:-1] + (w.shape[0],)), parents, backward, "linear")


# ---- lookups, dropout ------------------------------------------------------------------------
def _index_array(idx, device: str = "cpu"):
    """Integer indices as a contiguous int64 array: indices already on the GPU stay there (for a
    GPU ``device``); host indices are checked and returned on the host (``A.to_device`` uploads them)."""
    arr = idx.data if isinstance(idx, Tensor) else idx
    if device_of(arr) == "cuda":
        if device == "cpu":
            raise DeviceError("indices are on the GPU but the tensor is on the CPU; move them with .to('cpu')")
        if arr.dtype != np.int64:
            raise TypeError(f"indices on the GPU must be int64, got {arr.dtype}")
        return arrays("cuda").contiguous(arr)
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def embedding(weight, idx):
    """Rows of ``weight`` (V, E) picked by integer ``idx`` (any shape) -> idx.shape + (E,).

    backward: a scatter-add of the gradient rows into dweight (repeated indices add up).
    """
    weight = _lift(weight)
    device = weight.device
    idx = _index_array(idx, device)
    V, E = weight.shape
    if isinstance(idx, np.ndarray) and idx.size and (idx.min() < 0 or idx.max() >= V):  # (not checked on the GPU)
        raise IndexError(f"embedding: index out of range [0, {V}) (got {idx.min()}..{idx.max()})")
    K, A = kernels(device), arrays(device)
    flat = A.to_device(idx.reshape(-1))
    w = A.contiguous(weight.data)
    out = A.empty((flat.size, E), dtype=weight.dtype)
    K.embedding_forward(w, flat, out)

    def backward(g):
        dweight = A.zeros_like(w)
        K.embedding_backward(flat, _rows(A, g), dweight)
        return (dweight,)

    result = record(out.reshape(idx.shape + (E,)), (weight,), backward, "embedding")
    if device == "cpu":  # (the table projection of ops/recurrent.py reads host indices)
        result._lookup = (weight, idx)
    return result


def reverse_padded(x, lengths, axis=0):
    """Each sequence of a padded batch reversed within its own length; the padding stays in place.

    x: (T, B, ...) (axis=0) or (B, T, ...) (axis=1); lengths: (B,) integers in [1, T]. Row b's
    position t < lengths[b] comes from position lengths[b] - 1 - t. The map is its own inverse,
    so the backward is the same gather of the gradient. CPU only.
    """
    x = _lift(x)
    _cpu_only("reverse_padded", x)
    if axis not in (0, 1):
        raise ValueError(f"reverse_padded: axis must be 0 (time first) or 1 (batch first), got {axis}")
    T, B = (x.shape[0], x.shape[1]) if axis == 0 else (x.shape[1], x.shape[0])
    L = np.asarray(lengths, dtype=np.int64)[None, :]
    if L.shape[1] != B or np.any(L < 1) or np.any(L > T):
        raise ValueError(f"reverse_padded: lengths must be {B} integers in [1, {T}], "
                         f"got {np.asarray(lengths).tolist()}")
    t = np.arange(T)[:, None]
    source = np.where(t < L, L - 1 - t, t)                               # (T, B): the time step read
    index = (source, np.arange(B)[None, :]) if axis == 0 else (np.arange(B)[:, None], source.T)

    def backward(g):
        return (g[index],)

    return record(x.data[index], (x,), backward, "reverse_padded")


def dropout(x, p: float, training: bool = True, rng: np.random.Generator | None = None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval mode)."""
    x = _lift(x)
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    rng = rng if rng is not None else np.random.default_rng()
    A = arrays(x.device)   # on the GPU the mask is drawn there, seeded from rng (see kernels/cuda/arrays.py)
    mask = A.dropout_mask(x.shape, x.dtype, p, rng)
    return record(A.mul(x.data, mask), (x,), lambda g: (A.mul(g, mask),), "dropout")


# ---- normalisation ----------------------------------------------------------------------------
def layer_norm(x, weight=None, bias=None, eps: float = 1e-5):
    """Layer normalisation over the last axis, as PyTorch's ``layer_norm(x, (D,), weight, bias, eps)``:
    x: (..., D), weight, bias: (D,) or None -> (..., D).

        xhat = (x - mean) / sqrt(var + eps)      mean, var (biased) over each row's D numbers
        y    = xhat * weight + bias

    backward (g = dy * weight): dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps),
    dweight = sum of dy * xhat over rows, dbias = sum of dy over rows. One op over the kernels
    ``layer_norm_forward`` / ``layer_norm_backward`` (the math: ``kernels/reference/norm.py``),
    which save each row's mean and 1/std for the backward.
    """
    x = _lift(x)
    weight = None if weight is None else _lift(weight, x)
    bias = None if bias is None else _lift(bias, x)
    D = x.shape[-1] if x.ndim else 0
    if D == 0:
        raise ValueError(f"layer_norm: x must have a last axis of at least 1 number, got shape {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (D,):
            raise ValueError(f"layer_norm: {name} must have shape ({D},) (one per number of x's last axis), "
                             f"got {p.shape}")
        if p is not None:
            _check_dtype(x.data, p.data, "layer_norm")
    device = same_device("layer_norm", x, weight, bias)
    K, A = kernels(device), arrays(device)
    none = A.empty((0,), dtype=x.dtype)                 # the kernels' "no gain" / "no shift"
    x2 = _rows(A, x.data)
    w = none if weight is None else A.contiguous(weight.data)
    b = none if bias is None else A.contiguous(bias.data)
    out = A.empty_like(x2)
    mean, rstd = A.empty((x2.shape[0],), dtype=x.dtype), A.empty((x2.shape[0],), dtype=x.dtype)
    K.layer_norm_forward(x2, w, b, float(eps), out, mean, rstd)

    def backward(g):
        dx = A.empty_like(x2)
        dw = none if weight is None or not weight.requires_grad else A.empty((D,), dtype=x.dtype)
        db = none if bias is None or not bias.requires_grad else A.empty((D,), dtype=x.dtype)
        K.layer_norm_backward(x2, w, mean, rstd, _rows(A, g), dx, dw, db)
        grads = [dx.reshape(x.shape)]
        grads += [] if weight is None else [dw if dw.size else None]
        grads += [] if bias is None else [db if db.size else None]
        return tuple(grads)

    parents = tuple(p for p in (x, weight, bias) if p is not None)
    return record(out.reshape(x.shape), parents, backward, "layer_norm")


# ---- softmax and the loss ---------------------------------------------------------------------
def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, stably: x - max - log(sum(exp(x - max))).

    backward: dx = g - softmax(x) * sum(g)
    """
    x = _lift(x)
    axis = axis % x.ndim
    K, A = kernels(x.device), arrays(x.device)
    moved = A.moveaxis(x.data, axis, -1)          # (on the GPU only the last axis: no move)
    flat = _rows(A, moved)
    out = A.empty_like(flat)
    K.log_softmax_forward(flat, out)

    def backward(g):
        dx = A.empty_like(flat)
        K.log_softmax_backward(out, _rows(A, A.moveaxis(g, axis, -1)), dx)
        return (A.moveaxis(dx.reshape(moved.shape), -1, axis),)

    return record(A.moveaxis(out.reshape(moved.shape), -1, axis), (x,), backward, "log_softmax")


def cross_entropy(logits, targets, ignore_index: int = -100):
    """Mean over tokens of -log softmax(logits)[target], fused and numerically stable.

    logits: (..., V); targets: integer array of shape logits.shape[:-1]; tokens whose target is
    ``ignore_index`` count neither in the sum nor in the mean.
    backward: dlogits = (softmax(logits) - onehot(target)) / count
    """
    logits = _lift(logits)
    device = logits.device
    targets = _index_array(to_numpy(targets.data if isinstance(targets, Tensor) else targets)).reshape(-1)
    V = logits.shape[-1]                  # (targets are small: the checks and the count are made on the host)
    K, A = kernels(device), arrays(device)
    flat = _rows(A, logits.data)
    if targets.size != flat.shape[0]:
        raise ValueError(f"cross_entropy: {flat.shape[0]} rows of logits but {targets.size} targets")
    if targets.size and 0 <= targets.min() and targets.max() < V and not 0 <= ignore_index < V:
        count = targets.size                # the common case, in two passes: every target a class
    else:
        valid = targets != ignore_index
        if np.any((targets[valid] < 0) | (targets[valid] >= V)):
            raise IndexError(f"cross_entropy: target out of range [0, {V})")
        count = max(int(valid.sum()), 1)
    targets = A.to_device(targets)
    probs = A.empty_like(flat)
    losses = A.empty(flat.shape[0], dtype=flat.dtype)
    K.softmax_xent_forward(flat, targets, ignore_index, probs, losses)
    loss = A.sum_scaled(losses, 1.0 / count)   # on the GPU a 0-d device array: nothing comes back until .item()

    def backward(g):
        dlogits = A.empty_like(probs)
        K.softmax_xent_backward(probs, targets, ignore_index, 1.0 / count, dlogits)
        A.scale_by(dlogits, g)             # g stays where it is (on the CPU, 1 is skipped)
        return (dlogits.reshape(logits.shape),)

    return record(loss, (logits,), backward, "cross_entropy")
