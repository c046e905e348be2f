"""Gradient clipping, in place on ``p.grad`` of each parameter (parameters without a grad are skipped)."""
import math

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


def _fast(g):
    return g.flags.c_contiguous and g.dtype in _FLOAT_DTYPES


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

        total = sqrt(sum over every gradient element of g**2)
        if total > max_norm:  g *= max_norm / (total + 1e-6)     (as torch.nn.utils.clip_grad_norm_)

    Returns ``total``, the norm before clipping, as a float (accumulated in float64; the sum does
    not depend on the thread count). A non-finite total (a NaN or inf gradient) leaves the
    gradients untouched and is returned, for the caller to notice.

    Gradients on the GPU are summed on the GPU into one float64 number, the only thing copied back.
    """
    from tinyrnn.kernels import cpu, reference

    grads = _grads(params)
    if grads and not isinstance(grads[0], np.ndarray):
        return _clip_grad_norm_cuda(grads, max_norm)
    sum_sq = 0.0
    for g in grads:
        K = cpu if _fast(g) else reference
        sum_sq += K.sum_of_squares(g.reshape(-1) if _fast(g) else g)
    total = math.sqrt(sum_sq)
    coef = max_norm / (total + 1e-6)
    if math.isfinite(total) and coef < 1.0:
        for g in grads:
            if _fast(g):
                cpu.scale_inplace(g.reshape(-1), coef)
            else:
                reference.scale_inplace(g, coef)
    return total


def _clip_grad_norm_cuda(grads, max_norm):
    from tinyrnn.kernels import cuda
    from tinyrnn.kernels.cuda import arrays

    acc = arrays.zeros(1, np.float64)
    for g in grads:
        if isinstance(g, np.ndarray):
            raise TypeError("clip_grad_norm: gradients on both the CPU and the GPU; move the model to one device")
        cuda.sum_of_squares_into(g, acc, True)
    total = math.sqrt(float(acc.copy_to_host()[0]))
    coef = max_norm / (total + 1e-6)
    if math.isfinite(total) and coef < 1.0:
        for g in grads:
            cuda.scale_inplace(g, coef)
    return total


def clip_grad_value(params, value):
    """Clamp every gradient element into [-value, value], in place."""
    if value < 0:
        raise ValueError(f"clip value must be >= 0, got {value}")
    for g in _grads(params):
        if isinstance(g, np.ndarray):
            np.clip(g, -value, value, out=g)
        else:
            from tinyrnn.kernels.cuda import arrays

            arrays.clip_inplace(g, -value, value)
