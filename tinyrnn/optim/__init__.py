"""Optimizers, gradient clipping and learning-rate schedules, with PyTorch's interface.

    opt = tinyrnn.optim.Adam(model.parameters(), lr=2e-3)
    sched = tinyrnn.optim.WarmupLR(opt, 100, after=tinyrnn.optim.CosineLR(opt, total_steps))
    for batch in batches:
        opt.zero_grad()
        loss = ...; loss.backward()
        tinyrnn.optim.clip_grad_norm(model.parameters(), 5.0)
        opt.step()
        sched.step()

Importing this package does not import numba; the first ``step()`` does.
"""
from .clip import clip_grad_norm, clip_grad_value
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedules import CosineLR, Schedule, StepLR, WarmupLR

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop",
    "clip_grad_norm", "clip_grad_value",
    "Schedule", "StepLR", "CosineLR", "WarmupLR",
]
