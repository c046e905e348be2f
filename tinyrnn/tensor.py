"""The tape: ``Tensor``, ``backward`` and ``no_grad``.

A ``Tensor`` wraps a numpy array. Every op that takes part in a computation records, on
the tensor it returns, its inputs (``_parents``) and a function (``_backward``) that maps
the gradient of the output to the gradients of the inputs. ``loss.backward()`` sorts the
recorded graph topologically (iteratively, so a graph unrolled over 10,000 time steps does
not hit Python's recursion limit) and calls those functions from the loss back to the leaves,
adding (``+=``) each gradient into ``.grad``.

    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = (x * 2).tanh().sum()
    y.backward()          # x.grad == 2 * (1 - tanh(2)**2)

The ops themselves, each a forward/backward pair, live in ``tinyrnn.ops``.

Devices: ``data`` is a numpy array (the tensor is on the CPU) or a numba.cuda device array (on
the GPU: ``x.to('cuda')``, or any tensor made after ``tinyrnn.set_device('cuda')``). The tape
is the same on both; the ops pick their kernels from their inputs' device, and gradients are
accumulated on the device of the tensor they belong to.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backend

DEFAULT_DTYPE = np.float32
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Within this block ops record nothing: no graph, no saved arrays (inference, sampling)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def as_array(data, dtype=None) -> np.ndarray:
    """Turn ``data`` into a numpy array; floats default to float32, ints stay ints."""
    if isinstance(data, Tensor):
        data = data.data
    arr = np.asarray(data)
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if not isinstance(data, (np.ndarray, np.generic)) and arr.dtype.kind in "fiub":
        return arr.astype(DEFAULT_DTYPE)  # Python numbers and lists become float32
    if arr.dtype.kind == "f" and arr.dtype not in FLOAT_DTYPES:
        return arr.astype(DEFAULT_DTYPE)  # float16 and friends
    return arr


FREED = None    # a node's ``_parents`` once a backward pass without ``retain_graph`` has freed it (a leaf has ())
SECOND_BACKWARD = ("Trying to backward through the graph a second time (its saved arrays were freed by the first "
                   "backward()): pass retain_graph=True to the first backward() if you need to call it again")


class Tensor:
    """An array plus what is needed to differentiate through it.

    data:          the array: numpy on the CPU, a numba.cuda device array on the GPU
                   (float32 by default; float64 for gradient checks)
    grad:          d loss / d data after ``backward()``, same shape and device, or None
    requires_grad: whether gradients flow to this tensor
    device:        where ``data`` lives: 'cpu', or 'cuda'; host data given to the constructor
                   goes to ``device`` (default: ``tinyrnn.get_device()``), device arrays stay put
    """

    # _lookup: set only on an embedding's output (or ops.permute of its rows), (table, indices), so
    # that a layer reading it can project the small table instead of every row (see
    # ``ops/recurrent.py``, ``InputProjection``).
    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op", "_lookup", "__weakref__")
    __array_priority__ = 100  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if backend.is_device_array(data):  # device arrays stay where they are unless told
            if dtype is not None and np.dtype(dtype) != data.dtype:
                raise TypeError(f"cannot convert a CUDA array from {data.dtype} to {np.dtype(dtype)} on the "
                                f"device; move it to the CPU first")
            self.data = data if device is None else backend.to_device(data, device)
        else:
            self.data = backend.to_device(as_array(data, dtype), device or backend.get_device())
        if requires_grad and self.data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"only float32/float64 tensors can require gradients, got {self.data.dtype}")
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self._op = ""
        self._lookup = None

    # ---- array-like properties -------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    @property
    def device(self) -> str:
        """'cpu' (numpy data) or 'cuda' (numba.cuda device data)."""
        return backend.device_of(self.data)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op}" if self._op else ""
        where = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"Tensor({self.numpy()!r}{where}{grad}{op})"

    def numpy(self) -> np.ndarray:
        """The data as a numpy array: the array itself on the CPU, a host copy of GPU data."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number (from the GPU: copies one number back)."""
        return self.numpy().item()

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device`` ('cpu' or 'cuda'): itself if it is there already, else a copy.
        The move is recorded on the tape: gradients flow back to the original device."""
        if device == self.device:
            return self
        source = self.device
        backend.require_device(device)
        return record(backend.to_device(self.data, device), (self,),
                      lambda g: (backend.to_device(g, source),), "to")

    def detach(self) -> "Tensor":
        """The same array, cut from the graph (truncated BPTT feeds final states in this way)."""
        return Tensor(self.data)

    def astype(self, dtype) -> "Tensor":
        return ops.astype(self, dtype)

    def zero_grad(self):
        self.grad = None

    # ---- the backward pass -----------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False):
        """Back-propagate from this tensor: fill ``.grad`` of every tensor it depends on.

        grad: d loss / d self; defaults to 1 for a scalar.
        retain_graph: keep the recorded graph (and its saved arrays) for a second backward.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad())")
        device = self.device
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar, got shape {self.shape}")
            grad = backend.arrays(device).ones_like(self.data)
        elif isinstance(grad, Tensor):
            grad = grad.data
        grad = backend.to_device(grad if backend.is_device_array(grad) else as_array(grad, self.dtype), device)
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"gradient shape {grad.shape} does not match tensor shape {self.shape}")

        order = self._topological_order()
        if any(node._parents is FREED for node in order):     # this graph, or one it builds on, was freed
            raise RuntimeError(SECOND_BACKWARD)
        for node in order:  # gradients of intermediate results are per pass; leaves accumulate
            if node._backward is not None:
                node.grad = None
        _accumulate(self, grad)
        adopted = set()     # ids of arrays some tensor took as its .grad in this pass (see ``_accumulate``)
        for node in reversed(order):
            if node._backward is None or node.grad is None:
                continue
            parent_grads = node._backward(node.grad)
            held = _owner(node.grad)     # the memory of node's own gradient: never a parent's too
            for parent, g in zip(node._parents, parent_grads):
                if g is not None and parent.requires_grad:
                    memory = _owner(g)
                    own = not retain_graph and memory is not held and id(memory) not in adopted
                    if _accumulate(parent, g, own):
                        adopted.add(id(memory))
            if not retain_graph:  # free the saved arrays as we go, like PyTorch
                node._backward = None
                node._parents = FREED

    def _topological_order(self) -> list:
        """Every tensor this one depends on, inputs before the ops that use them (iterative DFS)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for parent in node._parents or ():
                if parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
        return order

    # ---- operators and methods: thin wrappers over the ops (``ops``, bound at the bottom) --
    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __neg__(self):
        return ops.neg(self)

    def __pow__(self, exponent):
        return ops.pow(self, exponent)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def tanh(self):
        return ops.tanh(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def relu(self):
        return ops.relu(self)

    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def pow(self, exponent):
        return ops.pow(self, exponent)

    def sum(self, axis=None, keepdims=False):
        return ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis, keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.transpose(self, axes or None)

    @property
    def T(self):
        return ops.transpose(self, None)

    def log_softmax(self, axis=-1):
        return ops.log_softmax(self, axis)


def _owner(a):
    """The array that owns a's memory (a itself, or the base of the view a is); None off the host."""
    if type(a) is not np.ndarray:
        return None
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _accumulate(tensor: Tensor, grad, may_own: bool = False) -> bool:
    """tensor.grad += grad; no two tensors ever share a buffer. The first time, tensor.grad is a
    fresh copy of grad, or, when ``may_own`` (the caller knows no other tensor holds grad's memory
    and no saved graph will return it again), grad itself if it is a host array of the right dtype
    that spans all of its memory (an op's backward returns new arrays, or whole reshaped views of
    them): copying every gradient of a step cost a tenth of a small model's step. Returns whether
    tensor.grad is now grad itself."""
    if type(grad) is _Slot:    # one result of a multi-result op: its gradient, as it is, in its slot
        if tensor.grad is None:
            tensor.grad = [None] * grad.n
        tensor.grad[grad.k] = grad.grad    # (each result is one tensor: one gradient per pass)
        return False
    device = tensor.device
    if backend.device_of(grad) != device:  # an op's backward returned its gradient elsewhere: a bug in the op
        raise backend.DeviceError(f"gradient for a {device} tensor of op {tensor._op or 'leaf'!r} came back on "
                                  f"{backend.device_of(grad)}")
    A = backend.arrays(device)
    if tensor.grad is not None:
        A.add_into(tensor.grad, grad)
        return False
    if may_own and type(grad) is np.ndarray and grad.dtype == tensor.dtype and grad.flags.c_contiguous \
            and grad.flags.writeable and grad.nbytes == _owner(grad).nbytes:
        tensor.grad = grad
        return True
    tensor.grad = A.clone(grad, tensor.dtype)
    return False


class _Slot:
    """The gradient of result k of an op with n results (``record_outputs``) on its way to the op."""
    __slots__ = ("k", "n", "grad")

    def __init__(self, k: int, n: int, grad):
        self.k, self.n, self.grad = k, n, grad


def record_outputs(datas: tuple, parents: tuple, backward, op: str) -> tuple:
    """Wrap the results of an op that has several (a recurrent layer's outputs and final states).

    One tape node holds the op; each result is a tensor whose only parent is that node. The node's
    backward(grads) gets a list with one gradient per result, None for a result nothing used, and
    returns one gradient (or None) per parent. (The node's .data is the first result.)
    """
    node = record(datas[0], parents, backward, op)
    n = len(datas)
    return tuple(record(data, (node,), lambda g, k=k: (_Slot(k, n, g),), f"{op}[{k}]")
                 for k, data in enumerate(datas))


def record(data: np.ndarray, parents: tuple, backward, op: str) -> Tensor:
    """Wrap an op's result; remember how to differentiate it if any input needs gradients.

    backward(grad_out) returns one gradient (or None) per parent, each shaped like that parent.
    """
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out._op = op
    out._lookup = None
    if is_grad_enabled() and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
    else:
        out.requires_grad = False
        out._parents = ()
        out._backward = None
    return out


def tensor(data, dtype=None, requires_grad: bool = False, device: str | None = None) -> Tensor:
    """Make a tensor: ``tinyrnn.tensor([[1, 2], [3, 4]], requires_grad=True)`` (float32 by default;
    on ``device``, default ``tinyrnn.get_device()``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


# The ops import this module (for Tensor and record), so they are imported last, once: by the time
# any method above runs, ``ops`` is the finished module.
from .ops import primitives as ops  # noqa: E402
