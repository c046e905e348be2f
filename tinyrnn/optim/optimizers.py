"""Optimizers with PyTorch's interface: ``opt = Adam(model.parameters(), lr=1e-3)``, then per batch
``opt.zero_grad(); loss.backward(); opt.step()``.

A parameter is any object with ``.data`` (a float32 or float64 ndarray, updated in place) and
``.grad`` (an ndarray of the same shape, or None: such a parameter is skipped by ``step``).

The update formulas, written once, are next to the kernels in
``tinyrnn/kernels/reference/elementwise.py``. ``step`` runs the fused Numba kernels of
``tinyrnn.kernels.cpu`` on flat views of C-contiguous parameters, and the numpy reference kernels
(same math) on anything else. Parameters on the GPU (numba.cuda device arrays) are updated by the
kernels of ``tinyrnn.kernels.cuda``, with state buffers made on the GPU: nothing is copied back.

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

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _kernels():
    from tinyrnn.kernels import cpu

    return cpu


def _reference():
    from tinyrnn.kernels import reference

    return reference


def _check_finite(hyper):
    """ValueError for a hyperparameter that is NaN or infinite (``Adam(lr=nan)``, ``betas=(inf, 0.9)``)."""
    for name, value in hyper.items():
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if not isinstance(v, bool) and isinstance(v, (int, float)) and not abs(v) < float("inf"):
                raise ValueError(f"invalid {name} {value}: hyperparameters must be finite numbers")


def _on_gpu(a) -> bool:
    return not isinstance(a, backend.HOST)


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
            if not (isinstance(data, np.ndarray) or backend.is_device_array(data)) or data.dtype not in _FLOAT_DTYPES:
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
            elif _on_gpu(p.grad):
                backend.arrays("cuda").fill(p.grad, 0)
            else:
                p.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient, in place."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(f"parameter {i}: grad shape {p.grad.shape} != data shape {p.data.shape}")
            self.steps[i] += 1
            data = p.data
            buffers = self.state[i]
            if _on_gpu(data):  # parameters on the GPU are contiguous; flat views, as below
                if not _on_gpu(p.grad) or p.grad.dtype != data.dtype:
                    raise TypeError(f"parameter {i} is on the GPU: its grad must be a CUDA array of dtype {data.dtype}")
                flat = {name: b.reshape(b.size) for name, b in buffers.items()}
                self._update(backend.kernels("cuda"), data.reshape(data.size), p.grad.reshape(p.grad.size), flat,
                             self.steps[i])
                continue
            grad = np.asarray(p.grad, dtype=data.dtype)
            if data.flags.c_contiguous:
                # Flat views: the kernels write through them into p.data and the state buffers.
                flat = {name: b.reshape(-1) for name, b in buffers.items()}
                self._update(_kernels(), data.reshape(-1), np.ascontiguousarray(grad).reshape(-1), flat, self.steps[i])
            else:
                self._update(_reference(), data, grad, buffers, self.steps[i])

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
                state[f"{i}.{name}"] = b.copy_to_host() if _on_gpu(b) else b.copy()
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
                if _on_gpu(b):
                    b.copy_to_device(np.ascontiguousarray(saved, dtype=b.dtype))
                else:
                    b[...] = saved
        self.steps = [int(s) for s in d["steps"]]

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.hyper().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {args})"


def _zeros(p, shape):
    """A zero state buffer on the parameter's device."""
    if _on_gpu(p.data):
        return backend.arrays("cuda").zeros(shape, p.data.dtype)
    return np.zeros(shape, dtype=p.data.dtype)


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
