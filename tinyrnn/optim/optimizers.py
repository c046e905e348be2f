"""Optimizers with PyTorch's interface: ``opt = Adam(model.parameters(), lr=1e-3)``, then per batch
``opt.zero_grad(); loss.backward(); opt.step()``.

A parameter is any object with ``.data`` (a float32 or float64 ndarray, updated in place) and
``.grad`` (an ndarray of the same shape, or None: such a parameter is skipped by ``step``).

The update formulas, written once, are next to the kernels in
``tinyrnn/kernels/reference/elementwise.py``. ``step`` runs the fused update kernel of the
parameter's device (``tinyrnn.backend.kernels``: Numba on the CPU, or the numpy reference with
``TINYRNN_KERNELS=reference``; numba.cuda on the GPU, state buffers made there, nothing copied
back) on flat views of the parameter, its gradient and its state. A parameter that is not
C-contiguous is updated through a contiguous copy, written back after the step.

State dict layout (plain Python numbers, lists, strings and ndarrays only; no pickle needed):

    {
        "type":  "Adam",                                   # class name, checked on load
        "hyper": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0},
        "steps": [12, 12, 0],                              # updates done, per parameter
        "state": {"0.exp_avg": ndarray, "0.exp_avg_sq": ndarray, "1.exp_avg": ...},
    }

Everything but ``"state"`` is JSON; ``"state"`` maps names to arrays, e.g. for ``np.savez``.
Arrays are copied both ways (numpy arrays, also for an optimizer over GPU parameters). Loading a state dict into an optimizer built over the same
parameters (same order, shapes and dtypes, same values) continues training bit for bit.
"""
import numpy as np

from .. import backend
from ..tensor import FLOAT_DTYPES


def _check_finite(hyper):
    """ValueError for a hyperparameter that is NaN or infinite (``Adam(lr=nan)``, ``betas=(inf, 0.9)``)."""
    for name, value in hyper.items():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if not isinstance(v, bool) and isinstance(v, (int, float)) and not abs(v) < float("inf"):
                raise ValueError(f"invalid {name} {value}: hyperparameters must be finite numbers")


class Optimizer:
    """Base class: keeps the parameters, per-parameter step counts and state buffers.

    Subclasses set ``_buffers`` (the names of their per-parameter state arrays), implement
    ``_update(kernels, param, grad, buffers, step)`` and ``hyper()``.
    """

    _buffers = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            data = getattr(p, "data", None)
            if not (isinstance(data, np.ndarray) or backend.is_device_array(data)) or data.dtype not in FLOAT_DTYPES:
                raise TypeError(f"parameter {i}: .data must be a float32 or float64 ndarray (or CUDA device array)")
        if not 0 <= lr < float("inf"):
            raise ValueError(f"invalid learning rate {lr}: it must be a finite number >= 0")
        self.lr = float(lr)
        _check_finite(self.hyper())
        self.steps = [0] * len(self.params)
        self.state = [{name: self._new_buffer(p, name) for name in self._buffers} for p in self.params]

    def _new_buffer(self, p, name):
        """A zero buffer shaped like the parameter (an empty one if this configuration does not use it)."""
        return _zeros(p, p.data.shape)

    def zero_grad(self, set_to_none=False):
        """Zero every gradient in place (or drop it: ``.grad = None``)."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                backend.arrays(backend.device_of(p.grad)).fill(p.grad, 0)

    def step(self):
        """Update every parameter that has a gradient, in place."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(f"parameter {i}: grad shape {p.grad.shape} != data shape {p.data.shape}")
            self.steps[i] += 1
            data, grad, device = p.data, p.grad, backend.device_of(p.data)
            if backend.device_of(grad) != device:
                raise TypeError(f"parameter {i} is on {device} but its grad is on {backend.device_of(grad)}")
            A = backend.arrays(device)
            if grad.dtype != data.dtype:
                grad = A.clone(grad, data.dtype)   # converted on the CPU; the GPU raises TypeError
            work = A.contiguous(data)   # data itself, or a contiguous copy written back below
            # Flat views: the kernels write through them into the parameter and the state buffers.
            flat = {name: b.reshape(b.size) for name, b in self.state[i].items()}
            self._update(backend.kernels(device), work.reshape(work.size), A.contiguous(grad).reshape(grad.size),
                         flat, self.steps[i])
            if work is not data:
                A.copyto(data, work)

    def hyper(self):
        """The hyperparameters as a JSON-ready dict."""
        raise NotImplementedError

    def _set_hyper(self, hyper):
        _check_finite(hyper)
        for name, value in hyper.items():
            setattr(self, name, tuple(value) if isinstance(value, list) else value)

    def state_dict(self):
        """A copy of the optimizer state (layout in the module docstring)."""
        state = {}
        for i, buffers in enumerate(self.state):
            for name, b in buffers.items():
                state[f"{i}.{name}"] = backend.arrays(backend.device_of(b)).to_host(b)
        return {"type": type(self).__name__, "hyper": self.hyper(), "steps": list(self.steps), "state": state}

    def load_state_dict(self, d):
        """Restore hyperparameters (``lr`` included), step counts and buffers from ``state_dict()``."""
        if d["type"] != type(self).__name__:
            raise ValueError(f"state dict is for {d['type']}, not {type(self).__name__}")
        if len(d["steps"]) != len(self.params):
            raise ValueError(f"state dict has {len(d['steps'])} parameters, optimizer has {len(self.params)}")
        self._set_hyper(d["hyper"])
        # Buffers depend on the hyperparameters (e.g. momentum on/off): rebuild them, then fill.
        self.state = [{name: self._new_buffer(p, name) for name in self._buffers} for p in self.params]
        for i, buffers in enumerate(self.state):
            for name, b in buffers.items():
                saved = np.asarray(d["state"][f"{i}.{name}"])
                if saved.shape != tuple(b.shape):
                    raise ValueError(f"state {i}.{name}: shape {saved.shape} != expected {b.shape}")
                A = backend.arrays(backend.device_of(b))
                A.copyto(b, A.to_device(np.ascontiguousarray(saved, dtype=b.dtype)))
        self.steps = [int(s) for s in d["steps"]]

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {args})"


def _zeros(p, shape):
    """A zero state buffer on the parameter's device (C-contiguous: ``step`` updates flat views of it)."""
    return backend.arrays(backend.device_of(p.data)).zeros(shape, p.data.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight decay.

    State: ``momentum_buffer`` (empty when momentum == 0).
    """

    _buffers = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        super().__init__(params, lr)

    def _new_buffer(self, p, name):
        return _zeros(p, p.data.shape if self.momentum != 0 else (0,))

    def _update(self, K, param, grad, s, step):
        K.sgd_update(param, grad, s["momentum_buffer"], self.lr, self.momentum, self.nesterov, self.weight_decay)

    def hyper(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds an L2 term to the gradient.

    State: ``exp_avg`` (first moment m), ``exp_avg_sq`` (second moment v).
    """

    _buffers = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        super().__init__(params, lr)

    def _update(self, K, param, grad, s, step):
        beta1, beta2 = self.betas
        K.adam_update(param, grad, s["exp_avg"], s["exp_avg_sq"], step, self.lr, beta1, beta2, self.eps,
                      self.weight_decay, self._decoupled)

    def hyper(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): param *= 1 - lr * weight_decay each step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class Adagrad(Optimizer):
    """Adagrad: each element's step is scaled by 1 / sqrt(sum of its squared gradients).

    State: ``sum`` (the running sum of squared gradients).
    """

    _buffers = ("sum",)

    def __init__(self, params, lr=1e-2, eps=1e-10, weight_decay=0.0):
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        super().__init__(params, lr)

    def _update(self, K, param, grad, s, step):
        K.adagrad_update(param, grad, s["sum"], self.lr, self.eps, self.weight_decay)

    def hyper(self):
        return {"lr": self.lr, "eps": self.eps, "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    """RMSprop: each element's step is scaled by 1 / sqrt(running mean of its squared gradients).

    State: ``square_avg``; ``grad_avg`` (empty unless centered); ``momentum_buffer`` (empty unless
    momentum > 0).
    """

    _buffers = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.centered = bool(centered)
        super().__init__(params, lr)

    def _new_buffer(self, p, name):
        used = name == "square_avg" or (name == "grad_avg" and self.centered) or (
            name == "momentum_buffer" and self.momentum > 0)
        return _zeros(p, p.data.shape if used else (0,))

    def _update(self, K, param, grad, s, step):
        K.rmsprop_update(param, grad, s["square_avg"], s["grad_avg"], s["momentum_buffer"], self.lr, self.alpha,
                         self.eps, self.weight_decay, self.momentum, self.centered)

    def hyper(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                "momentum": self.momentum, "centered": self.centered}
