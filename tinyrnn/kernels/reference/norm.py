"""Layer normalisation over the last axis (Ba, Kiros and Hinton, 2016), as PyTorch's ``layer_norm``.

Each row x (D numbers) is shifted to mean 0 and scaled to variance 1, then given a gain and a shift:

    mean = sum(x) / D,   var = sum((x - mean)**2) / D      (the biased variance, as PyTorch)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    out  = xhat * weight + bias                          (weight, bias: (D,), one per column)

Backward, with g = dout * weight (the gradient reaching xhat):

    dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))        (per row; means over its D numbers)
    dweight = sum over rows of dout * xhat
    dbias   = sum over rows of dout

(The two means come from xhat's dependence on the row's own mean and variance: each of x's numbers moves
all of its row's xhat.) The forward saves each row's mean and rstd for the backward.

``weight`` and ``bias`` may be empty arrays (shape (0,)): no gain (1) and no shift (0); the backward
then leaves ``dweight_out`` / ``dbias_out``, empty too, alone.
"""
import numpy as np


def layer_norm_forward(x, weight, bias, eps, out, mean_out, rstd_out):
    """out = (x - mean) * rstd * weight + bias, per row.

    x, out: (N, D); weight, bias: (D,) or (0,); eps: float; mean_out, rstd_out: (N,) (saved for the backward)
    """
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[:, None]) * rstd[:, None]
    out[...] = xhat * (weight if weight.size else 1.0) + (bias if bias.size else 0.0)
    mean_out[...] = mean
    rstd_out[...] = rstd


def layer_norm_backward(x, weight, mean, rstd, dout, dx_out, dweight_out, dbias_out):
    """The gradients of ``layer_norm_forward`` (module docstring).

    x, dout, dx_out: (N, D); weight: (D,) or (0,); mean, rstd: (N,) from the forward;
    dweight_out, dbias_out: (D,), overwritten (or (0,): not computed)
    """
    xhat = (x - mean[:, None]) * rstd[:, None]
    g = dout * weight if weight.size else dout
    dx_out[...] = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out)


def layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out):
    """The gain and shift gradients alone: dweight = sum over rows of dout * xhat, dbias = sum of dout.

    x, dout: (N, D); mean, rstd: (N,) (x already normalised: mean 0s, rstd 1s); dweight_out, dbias_out: (D,)
    overwritten (or (0,): not computed)
    """
    xhat = (x - mean[:, None]) * rstd[:, None]
    if dweight_out.size:
        dweight_out[...] = (dout * xhat).sum(axis=0)
    if dbias_out.size:
        dbias_out[...] = dout.sum(axis=0)
