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

Devices: an op runs where its inputs are (all on the CPU, or all on the GPU; a mix is an error),
calling ``kernels(device)`` and allocating through ``arrays(device)`` (numpy on the CPU, the
same names over device arrays on the GPU). The ops a character model needs run on CUDA
tensors: matmul, linear, embedding, cross_entropy, log_softmax (last axis), add/sub/mul (same
shapes, or a tensor and a Python number), neg, sum/mean of everything, reshape, getitem with
ints and slices, concat, stack, split, dropout. The others raise ``DeviceError`` on a CUDA tensor.
"""
from __future__ import annotations

import numpy as np

from ..backend import HOST, DeviceError, arrays, kernels
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
    if not isinstance(x.data, HOST):
        raise DeviceError(f"{op} is not supported on CUDA tensors; move to the CPU first: x.to('cpu')")


def _on_cuda(a, b) -> bool:
    """True if either operand is a tensor on the GPU (cheap: two isinstance checks per operand)."""
    return (isinstance(a, Tensor) and not isinstance(a.data, HOST)) or \
           (isinstance(b, Tensor) and not isinstance(b.data, HOST))


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
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: at least one operand must be a Tensor")
    a = _lift(a, b if isinstance(b, Tensor) else None)
    b = _lift(b, a)
    _check_dtype(a.data, b.data, op)
    return a, b


def _cuda_arith(op: str, a, b):
    """add, sub or mul with a CUDA tensor: both tensors of one shape, or a tensor and a number.

    The number may be on either side (2 - x); numpy's broadcasting of other shapes is not
    supported on the GPU.
    """
    A = arrays("cuda")
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        same_device(op, a, b)
        _check_dtype(a.data, b.data, op)
        if a.shape != b.shape:
            raise DeviceError(f"{op}: shapes {a.shape} and {b.shape} differ; broadcasting is not supported "
                              f"on CUDA tensors (only a tensor and a number)")
        if op == "add":
            return record(A.add(a.data, b.data), (a, b), lambda g: (g, g), op)
        if op == "sub":
            return record(A.sub(a.data, b.data), (a, b), lambda g: (g, A.affine(g, -1.0)), op)
        return record(A.mul(a.data, b.data), (a, b), lambda g: (A.mul(g, b.data), A.mul(g, a.data)), op)
    x, c, number_first = (b, a, True) if isinstance(b, Tensor) else (a, b, False)
    if isinstance(c, Tensor) or np.ndim(c) != 0:
        raise DeviceError(f"{op}: a CUDA tensor and {type(c).__name__} {np.shape(c)}: move it to the "
                          f"GPU as a tensor of the same shape, or use a number")
    c = float(c)
    if op == "add":                                         # x + c
        return record(A.affine(x.data, 1.0, c), (x,), lambda g: (g,), op)
    if op == "sub" and number_first:                        # c - x
        return record(A.affine(x.data, -1.0, c), (x,), lambda g: (A.affine(g, -1.0),), op)
    if op == "sub":                                         # x - c
        return record(A.affine(x.data, 1.0, -c), (x,), lambda g: (g,), op)
    return record(A.affine(x.data, c), (x,), lambda g: (A.affine(g, c),), op)   # x * c


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


def _rows(A, x):
    """x: (..., n) as a C-contiguous (rows, n) array (a copy only if x is not contiguous)."""
    return A.contiguous(x).reshape(-1, x.shape[x.ndim - 1])


# ---- arithmetic -----------------------------------------------------------------------------
def add(a, b):
    if _on_cuda(a, b):
        return _cuda_arith("add", a, b)
    a, b = _binary(a, b, "add")

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

    return record(a.data + b.data, (a, b), backward, "add")


def sub(a, b):
    if _on_cuda(a, b):
        return _cuda_arith("sub", a, b)
    a, b = _binary(a, b, "sub")

    def backward(g):
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)

    return record(a.data - b.data, (a, b), backward, "sub")


def mul(a, b):
    if _on_cuda(a, b):
        return _cuda_arith("mul", a, b)
    a, b = _binary(a, b, "mul")

    def backward(g):
        return unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)

    return record(a.data * b.data, (a, b), backward, "mul")


def div(a, b):
    if _on_cuda(a, b):
        if not isinstance(b, Tensor) and np.ndim(b) == 0:
            return mul(a, 1.0 / float(b))
        raise DeviceError("div is not supported on CUDA tensors (only division by a number); "
                          "move to the CPU first: x.to('cpu')")
    a, b = _binary(a, b, "div")
    out = a.data / b.data

    def backward(g):
        gb = g / b.data
        return unbroadcast(gb, a.shape), unbroadcast(-gb * out, b.shape)

    return record(out, (a, b), backward, "div")


def neg(x):
    x = _lift(x)
    if not isinstance(x.data, HOST):
        A = arrays("cuda")
        return record(A.affine(x.data, -1.0), (x,), lambda g: (A.affine(g, -1.0),), "neg")
    return record(-x.data, (x,), lambda g: (-g,), "neg")


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
    x = _lift(x)
    axes = _normalize_axes(axis, x.ndim)
    if not isinstance(x.data, HOST):
        return _cuda_sum(x, axes, keepdims)
    out = np.asarray(x.data.sum(axis=axes, keepdims=keepdims))

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, x.shape),)

    return record(out, (x,), backward, "sum")


def _cuda_sum(x, axes, keepdims):
    """The sum of every element of a CUDA tensor, a scalar on the GPU (backward: g everywhere)."""
    if len(axes) != x.ndim:
        raise DeviceError("sum over some axes is not supported on CUDA tensors (only of all elements); "
                          "move to the CPU first: x.to('cpu')")
    A = arrays("cuda")
    out = A.sum(x.data)
    if keepdims:
        out = out.reshape((1,) * x.ndim)
    return record(out, (x,), lambda g: (A.broadcast_scalar(g, x.shape),), "sum")


def mean(x, axis=None, keepdims=False):
    x = _lift(x)
    axes = _normalize_axes(axis, x.ndim)
    count = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return mul(sum(x, axes, keepdims), 1.0 / count)


# ---- shape ops ----------------------------------------------------------------------------------
def reshape(x, shape):
    x = _lift(x)
    if not isinstance(x.data, HOST):  # device arrays reshape only when contiguous
        A = arrays("cuda")
        return record(A.contiguous(x.data).reshape(shape), (x,),
                      lambda g: (A.contiguous(g).reshape(x.shape),), "reshape")
    return record(x.data.reshape(shape), (x,), lambda g: (g.reshape(x.shape),), "reshape")


def transpose(x, axes=None):
    x = _lift(x)
    _cpu_only("transpose", x)
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
    if not isinstance(x.data, HOST):
        return _cuda_getitem(x, index, basic)

    def backward(g):
        grad = np.zeros_like(x.data)
        if basic:  # slices and integers: no element is picked twice
            grad[index] += g
        else:      # integer arrays may repeat an index: add.at adds every occurrence
            np.add.at(grad, index, g)
        return (grad,)

    return record(x.data[index], (x,), backward, "getitem")


def _cuda_getitem(x, index, basic):
    """x[index] on the GPU for ints and slices (any step, e.g. x[::-1]); the result is a contiguous copy."""
    parts = index if isinstance(index, tuple) else (index,)
    if not basic or any(i is None or i is Ellipsis for i in parts):
        raise DeviceError("getitem on CUDA tensors takes only ints and slices; move to the CPU first: x.to('cpu')")
    A = arrays("cuda")
    view = x.data[index]
    if not A.is_device_array(view) or view.ndim == 0:
        raise DeviceError("getitem: picking one element of a CUDA tensor is not supported; use x.numpy()[...]")

    def backward(g):
        grad = A.zeros(x.shape, x.dtype)
        A.add_into(grad[index], g)
        return (grad,)

    return record(A.contiguous(view), (x,), backward, "getitem")


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
    if same_device("concat", *tensors) == "cuda":
        return _cuda_join(tensors, axis, new_axis=False)

    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))

    return record(np.concatenate([t.data for t in tensors], axis=axis), tuple(tensors), backward, "concat")


def stack(tensors, axis=0):
    """Join tensors along a new axis (numpy.stack)."""
    tensors = [_lift(t) for t in tensors]
    for t in tensors[1:]:
        _check_dtype(tensors[0].data, t.data, "stack")
    if same_device("stack", *tensors) == "cuda":
        return _cuda_join(tensors, axis % (tensors[0].ndim + 1), new_axis=True)
    out = np.stack([t.data for t in tensors], axis=axis)
    axis = axis % out.ndim

    def backward(g):
        return tuple(np.take(g, i, axis=axis) for i in range(len(tensors)))

    return record(out, tuple(tensors), backward, "stack")


def _cuda_join(tensors, axis, new_axis):
    """concat (new_axis=False) or stack (True) on the GPU: each input is copied into its slab of
    the output; backward copies the slabs of the gradient out again."""
    A = arrays("cuda")
    first = tensors[0]
    for t in tensors[1:]:
        if (t.shape if new_axis else t.shape[:axis] + t.shape[axis + 1:]) != \
                (first.shape if new_axis else first.shape[:axis] + first.shape[axis + 1:]):
            raise ValueError(f"{'stack' if new_axis else 'concat'}: shapes {first.shape} and {t.shape} do not fit")
    slabs, start = [], 0
    for t in tensors:
        if new_axis:
            slabs.append((slice(None),) * axis + (start,))
            start += 1
        else:
            slabs.append((slice(None),) * axis + (slice(start, start + t.shape[axis]),))
            start += t.shape[axis]
    rest = first.shape[axis:] if new_axis else first.shape[axis + 1:]
    shape = first.shape[:axis] + (start,) + rest
    out = A.empty(shape, first.dtype)
    for t, slab in zip(tensors, slabs):
        A.copyto(out[slab], t.data)

    def backward(g):
        return tuple(A.contiguous(g[slab]) for slab in slabs)

    return record(out, tuple(tensors), backward, "stack" if new_axis else "concat")


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
    device = same_device("matmul", a, b)
    K, A = kernels(device), arrays(device)
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
    x, weight = _binary(x, weight, "linear")
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
    """Integer indices as a contiguous int64 array on ``device`` (host indices are uploaded)."""
    arr = idx.data if isinstance(idx, Tensor) else idx
    if not isinstance(arr, np.ndarray) and hasattr(arr, "copy_to_host"):  # already on the GPU
        if device == "cpu":
            raise DeviceError("indices are on the GPU but the tensor is on the CPU; move them with .to('cpu')")
        if arr.dtype != np.int64:
            raise TypeError(f"indices on the GPU must be int64, got {arr.dtype}")
        return arrays("cuda").contiguous(arr)
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _upload(arr, device):
    """A host index array on ``device`` (checks are done on the host first, then one copy)."""
    if device == "cpu" or not isinstance(arr, np.ndarray):
        return arr
    return arrays(device).to_device(arr)


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
    flat = _upload(idx.reshape(-1), device)
    w = A.contiguous(weight.data)
    out = A.empty((flat.size, E), dtype=weight.dtype)
    K.embedding_forward(w, flat, out)

    def backward(g):
        dweight = A.zeros_like(w)
        K.embedding_backward(flat, _rows(A, g), dweight)
        return (dweight,)

    result = record(out.reshape(idx.shape + (E,)), (weight,), backward, "embedding")
    if device == "cpu":
        result._lookup = (weight, idx)
    return result


def dropout(x, p: float, training: bool = True, rng: np.random.Generator | None = None):
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval mode)."""
    x = _lift(x)
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    rng = rng if rng is not None else np.random.default_rng()
    if not isinstance(x.data, HOST):  # a mask drawn on the GPU (seeded from rng; see kernels/cuda/arrays.py)
        A = arrays("cuda")
        mask = A.dropout_mask(x.shape, x.dtype, p, rng)
        return record(A.mul(x.data, mask), (x,), lambda g: (A.mul(g, mask),), "dropout")
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)
    return record(x.data * mask, (x,), lambda g: (g * mask,), "dropout")


# ---- softmax and the loss ---------------------------------------------------------------------
def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, stably: x - max - log(sum(exp(x - max))).

    backward: dx = g - softmax(x) * sum(g)
    """
    x = _lift(x)
    axis = axis % x.ndim
    if not isinstance(x.data, HOST):
        return _cuda_log_softmax(x, axis)
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


def _cuda_log_softmax(x, axis):
    if axis != x.ndim - 1:
        raise DeviceError("log_softmax on CUDA tensors works along the last axis only; move to the CPU first")
    K, A = kernels("cuda"), arrays("cuda")
    flat = _rows(A, x.data)
    out = A.empty_like(flat)
    K.log_softmax_forward(flat, out)

    def backward(g):
        dx = A.empty_like(flat)
        K.log_softmax_backward(out, _rows(A, g), dx)
        return (dx.reshape(x.shape),)

    return record(out.reshape(x.shape), (x,), backward, "log_softmax")


def cross_entropy(logits, targets, ignore_index: int = -100):
    """Mean over tokens of -log softmax(logits)[target], fused and numerically stable.

    logits: (..., V); targets: integer array of shape logits.shape[:-1]; tokens whose target is
    ``ignore_index`` count neither in the sum nor in the mean.
    backward: dlogits = (softmax(logits) - onehot(target)) / count
    """
    logits = _lift(logits)
    device = logits.device
    targets = _index_array(targets)
    if device == "cuda" and not isinstance(targets, np.ndarray):
        targets = targets.copy_to_host()   # small; the checks and the count below are made on the host
    targets = targets.reshape(-1)
    V = logits.shape[-1]
    K, A = kernels(device), arrays(device)
    flat = _rows(A, logits.data)
    if targets.size != flat.shape[0]:
        raise ValueError(f"cross_entropy: {flat.shape[0]} rows of logits but {targets.size} targets")
    valid = targets != ignore_index
    if np.any((targets[valid] < 0) | (targets[valid] >= V)):
        raise IndexError(f"cross_entropy: target out of range [0, {V})")
    count = max(int(valid.sum()), 1)
    targets = _upload(targets, device)
    probs = A.empty_like(flat)
    losses = A.empty(flat.shape[0], dtype=flat.dtype)
    K.softmax_xent_forward(flat, targets, ignore_index, probs, losses)
    if device == "cpu":
        loss = np.asarray(losses.sum(dtype=np.float64) / count, dtype=flat.dtype)
    else:
        loss = A.sum(losses, 1.0 / count)   # a 0-d device array: nothing comes back until .item()

    def backward(g):
        dlogits = A.empty_like(probs)
        if device == "cpu":
            K.softmax_xent_backward(probs, targets, ignore_index, float(g) / count, dlogits)
        else:  # g stays on the GPU: scale by 1/count in the kernel, then by g
            K.softmax_xent_backward(probs, targets, ignore_index, 1.0 / count, dlogits)
            A.scale_by(dlogits, g)
        return (dlogits.reshape(logits.shape),)

    return record(loss, (logits,), backward, "cross_entropy")
