"""Gradient clipping, in place on ``p.grad`` of each parameter (parameters without a grad are skipped).

The kernels and array helpers come from ``tinyrnn.backend`` for the gradients' device, so
``TINYRNN_KERNELS=reference`` applies here too.
"""
import math

import numpy as np

from .. import backend


def _grads(params):
    """The gradients, and the one device they are all on (TypeError if they are on two)."""
    grads = [p.grad for p in params if p.grad is not None]
    devices = {backend.device_of(g) for g in grads}
    if len(devices) > 1:
        raise TypeError("gradient clipping: gradients on both the CPU and the GPU; move the model to one device")
    return grads, devices.pop() if devices else "cpu"


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

        total = sqrt(sum over every gradient element of g**2)
        if total > max_norm:  g *= max_norm / (total + 1e-6)     (as torch.nn.utils.clip_grad_norm_)

    Returns ``total``, the norm before clipping, as a float (accumulated in float64; the sum does
    not depend on the thread count). A non-finite total (a NaN or inf gradient) leaves the
    gradients untouched and is returned, for the caller to notice.

    Gradients on the GPU are summed on the GPU into one float64 number, the only thing copied back.
    """
    grads, device = _grads(params)
    K, A = backend.kernels(device), backend.arrays(device)
    flats = [A.contiguous(g) for g in grads]   # the gradients themselves, unless one is not contiguous
    total = math.sqrt(_sum_of_squares(K, A, device, flats))
    coef = max_norm / (total + 1e-6)
    if math.isfinite(total) and coef < 1.0:
        for g, flat in zip(grads, flats):
            K.scale_inplace(flat.reshape(flat.size), coef)
            if flat is not g:
                A.copyto(g, flat)
    return total


def _sum_of_squares(K, A, device, flats):
    """sum of g**2 over every element of every array, accumulated in float64."""
    if device == "cuda":  # summed into one number on the GPU: one copy back, not one per gradient
        acc = A.zeros(1, np.float64)
        for g in flats:
            K.sum_of_squares_into(g, acc, True)
        return float(A.to_host(acc)[0])
    return sum(K.sum_of_squares(g.reshape(g.size)) for g in flats)


def clip_grad_value(params, value):
    """Clamp every gradient element into [-value, value], in place."""
    if value < 0:
        raise ValueError(f"clip value must be >= 0, got {value}")
    grads, device = _grads(params)
    A = backend.arrays(device)
    for g in grads:
        A.clip_inplace(g, -value, value)
