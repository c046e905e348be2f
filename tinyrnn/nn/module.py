"""``Module`` and ``Parameter``: named, trainable state, PyTorch-style.

A module's attributes that are ``Parameter``s or ``Module``s are registered automatically,
so ``named_parameters()`` yields dotted names (``rnn.weight_ih_l0``) and ``state_dict()`` maps
those names to numpy arrays (what checkpoints store, and what PyTorch's state dicts hold).
``to('cuda')`` / ``to('cpu')`` moves every parameter in place; state dicts are numpy either way.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a module trains: requires_grad is always True."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    # ---- parameters -------------------------------------------------------------------------
    def named_parameters(self, prefix: str = ""):
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for m in self._modules.values():
            yield from m.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ---- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- device and dtype -------------------------------------------------------------------
    def to(self, device: str):
        """Move every parameter (and its gradient) to ``device`` ('cpu' or 'cuda'), in place.

        Optimizers hold the parameter objects, not their arrays, but their state buffers stay where
        they were made: move the model first, then build the optimizer.
        """
        backend.require_device(device)
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = backend.to_device(p.grad, device)
        return self

    def cuda(self):
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    @property
    def device(self) -> str:
        """The device of the first parameter ('cpu' for a module without parameters)."""
        params = self.parameters()
        return params[0].device if params else "cpu"

    def to_dtype(self, dtype):
        """Convert every parameter in place (e.g. ``np.float64`` for gradient checks)."""
        for p in self.parameters():
            device = p.device
            p.data = backend.to_device(backend.to_numpy(p.data).astype(dtype), device)
            p.grad = None
        return self

    def double(self):
        return self.to_dtype(np.float64)

    def float(self):
        return self.to_dtype(np.float32)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{name: numpy array} (copies, also of parameters on the GPU)."""
        return {name: p.data.copy() if p.device == "cpu" else p.numpy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copy arrays into the parameters (cast to their dtype). Accepts anything np.asarray takes."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        checked = {}
        for name, value in state.items():       # check everything first: a bad key changes nothing
            if name not in own:
                continue
            value = np.asarray(value)
            if value.shape != own[name].shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape}, expected {own[name].shape}")
            checked[name] = value
        for name, value in checked.items():
            p = own[name]
            p.data = backend.to_device(np.array(value, dtype=p.dtype), p.device)
        return self

    def __repr__(self):
        inner = ", ".join(f"{k}={v}" for k, v in self.extra_repr().items())
        children = "".join(f"\n  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}({inner}){children}"

    def extra_repr(self) -> dict:
        return {}
