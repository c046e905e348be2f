"""Learning-rate schedules. Each sets ``optimizer.lr``; call ``step()`` once after each ``opt.step()``.

A schedule counts its calls to ``step()`` in ``t`` (0 at construction) and sets the learning rate
for the next update to ``lr_at(t)``, a pure function of t and of ``base_lr``, the optimizer's lr
when the schedule was made. So update number k (1, 2, ...) runs with lr_at(k - 1).

``state_dict()`` is a JSON-ready dict; ``load_state_dict`` restores t and sets ``optimizer.lr``.
"""
import math


def _finite(name, value):
    """float(value), or ValueError when it is NaN or infinite."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


class Schedule:
    """Base class: subclasses implement ``lr_at(t)`` and list their settings in ``_settings``."""

    _settings = ()
    _scaled = ()         # settings that are learning rates (``scale`` multiplies them with base_lr)

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = _finite("the optimizer's lr", optimizer.lr)
        self.t = 0

    def lr_at(self, t):
        raise NotImplementedError

    @property
    def lr(self):
        """The learning rate the next update uses."""
        return self.lr_at(self.t)

    def _apply(self):
        self.optimizer.lr = self.lr_at(self.t)

    def step(self):
        """Advance one update and set the optimizer's lr for the next one."""
        self.t += 1
        self._apply()

    def scale(self, factor):
        """Multiply every learning rate the schedule gives by ``factor`` from now on (``Trainer.retarget``
        with a new peak lr), and set the optimizer's lr."""
        self.base_lr *= factor
        for name in self._scaled:
            setattr(self, name, getattr(self, name) * factor)
        self._apply()

    def state_dict(self):
        d = {"type": type(self).__name__, "t": self.t, "base_lr": self.base_lr}
        d.update({name: getattr(self, name) for name in self._settings})
        return d

    def load_state_dict(self, d):
        if d["type"] != type(self).__name__:
            raise ValueError(f"state dict is for {d['type']}, not {type(self).__name__}")
        self.t = int(d["t"])
        self.base_lr = float(d["base_lr"])
        for name in self._settings:
            setattr(self, name, d[name])
        self._apply()

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)}" for name in self._settings)
        return f"{type(self).__name__}({args}, t={self.t}, lr={self.lr:g})"


class StepLR(Schedule):
    """lr = base_lr * gamma ** (t // step_size): multiply by gamma every step_size updates."""

    _settings = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        if not step_size >= 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        _finite("gamma", gamma)
        super().__init__(optimizer)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self._apply()

    def lr_at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


class CosineLR(Schedule):
    """Half a cosine from base_lr down to min_lr over total_steps updates, then min_lr:

        lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(t, total_steps) / total_steps)) / 2
    """

    _settings = ("total_steps", "min_lr")
    _scaled = ("min_lr",)

    def __init__(self, optimizer, total_steps, min_lr=0.0):
        if not total_steps >= 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        _finite("min_lr", min_lr)
        super().__init__(optimizer)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)
        self._apply()

    def lr_at(self, t):
        progress = min(t, self.total_steps) / self.total_steps
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupLR(Schedule):
    """Linear warm-up over warmup_steps updates, then base_lr or the ``after`` schedule:

        lr = base_lr * (t + 1) / warmup_steps      for t < warmup_steps
           = after.lr_at(t - warmup_steps)         afterwards (base_lr when after is None)

    ``after`` is a schedule built on the same optimizer *before* this one, e.g.
    ``WarmupLR(opt, 100, after=CosineLR(opt, 10_000))``. Only this schedule's ``step()`` is called;
    it drives ``after`` (whose own counter is kept in step, for its state_dict).
    """

    _settings = ("warmup_steps",)

    def __init__(self, optimizer, warmup_steps, after=None):
        if not warmup_steps >= 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if after is not None and after.optimizer is not optimizer:
            raise ValueError("the `after` schedule must drive the same optimizer")
        super().__init__(optimizer)
        self.warmup_steps = int(warmup_steps)
        self.after = after
        if after is not None:
            self.base_lr = after.base_lr
        self._apply()

    def lr_at(self, t):
        if t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        if self.after is not None:
            return self.after.lr_at(t - self.warmup_steps)
        return self.base_lr

    def _apply(self):
        if self.after is not None:
            self.after.t = max(0, self.t - self.warmup_steps)
        super()._apply()

    def scale(self, factor):
        if self.after is not None:
            self.after.scale(factor)        # sets the optimizer's lr from ``after`` alone: reset below
        super().scale(factor)

    def state_dict(self):
        d = super().state_dict()
        d["after"] = self.after.state_dict() if self.after is not None else None
        return d

    def load_state_dict(self, d):
        if (d.get("after") is None) != (self.after is None):
            raise ValueError("state dict and schedule disagree on the `after` schedule")
        if self.after is not None:
            a = d["after"]
            if a["type"] != type(self.after).__name__:
                raise ValueError(f"`after` state dict is for {a['type']}, not {type(self.after).__name__}")
            self.after.base_lr = float(a["base_lr"])
            for name in self.after._settings:
                setattr(self.after, name, a[name])
        super().load_state_dict(d)
