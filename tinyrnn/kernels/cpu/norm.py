"""Layer normalisation over the last axis as Numba kernels: one ``prange`` iteration per row.

Same math as ``tinyrnn.kernels.reference.norm`` (read that first). A row's mean and variance (two
passes: the mean, then the squares about it) and the backward's two row means are accumulated in
float64 whatever the dtype. The gain and shift gradients sum over rows: each ``prange`` iteration
sums a block of rows, in address order, into float64 sums of its own (no two threads write the same
number), and the blocks' sums are added last. Measured at N = 3072, D = 1152 float32 (one update's
recurrent products at the time budget's GRU), 2 threads of the Zen 4 VM, each kernel alternating
with the others, medians: forward 1.76 ms, input gradient 1.58, gain and shift gradients 1.08;
PyTorch's ``layer_norm`` 1.85 forward, 3.68 backward (all three gradients). (The sums cut by
columns instead, 64 a parallel iteration each walking every row, took 3.05 against 0.36-0.40 ms
in a calmer moment; the forward's gain and shift in a pass after ``normalise_row``, which the
sequence kernels share, costs ~12%: 1.76 against 1.57 written in one pass.)
"""
import math

import numpy as np

from ..jit import kernel, parallel_kernel, prange

ROW_BLOCKS = 16  # the gain and shift gradients' row blocks (parallel iterations; more than the threads of most
                # machines, few enough that adding up their sums costs little)


@parallel_kernel
def layer_norm_forward(x, weight, bias, eps, out, mean_out, rstd_out):
    """out = (x - mean) * rstd * weight + bias, per row.

    x, out: (N, D); weight, bias: (D,) or (0,) (none); eps: float; mean_out, rstd_out: (N,)
    """
    N, D = x.shape
    gain, shift = weight.size > 0, bias.size > 0
    for n in prange(N):
        on = out[n]
        mean_out[n], rstd_out[n] = normalise_row(x[n], on, eps)
        if gain and shift:
            for d in range(D):
                on[d] = on[d] * weight[d] + bias[d]
        elif gain:
            for d in range(D):
                on[d] *= weight[d]
        elif shift:
            for d in range(D):
                on[d] += bias[d]


@kernel
def normalise_row(v, out, eps):
    """out = (v - mean) * rstd, rstd = 1 / sqrt(var + eps), over v's D numbers (out may be v: in place)
    -> (mean, rstd). Two passes (the mean, then the squares about it), float64 sums. The
    layer-normalised GRU's sequence kernels call it at every step (``sequence.py``)."""
    D = v.shape[0]
    total = 0.0
    for d in range(D):
        total += v[d]
    mean = total / D
    squares = 0.0
    for d in range(D):
        squares += (v[d] - mean) ** 2
    rstd = 1.0 / math.sqrt(squares / D + eps)
    for d in range(D):
        out[d] = (v[d] - mean) * rstd
    return mean, rstd


@parallel_kernel
def _layer_norm_dx(x, weight, mean, rstd, dout, dx_out):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight, per row."""
    N, D = x.shape
    gain = weight.size > 0
    for n in prange(N):
        xn, gn, dn = x[n], dout[n], dx_out[n]
        m, r = mean[n], rstd[n]
        sum_g, sum_gx = 0.0, 0.0
        for d in range(D):
            g = gn[d] * weight[d] if gain else gn[d]
            sum_g += g
            sum_gx += g * ((xn[d] - m) * r)
        mean_g, mean_gx = sum_g / D, sum_gx / D
        for d in range(D):
            g = gn[d] * weight[d] if gain else gn[d]
            dn[d] = r * (g - mean_g - ((xn[d] - m) * r) * mean_gx)


@parallel_kernel
def layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out):
    """dweight = sum over rows of dout * xhat, dbias = sum over rows of dout (the reference's
    docstring has the shapes): the rows cut into
    ``ROW_BLOCKS`` blocks, each summed (in float64, a row at a time, in address order) by one
    parallel iteration into sums of its own, which are then added up in block order."""
    N, D = x.shape
    n_blocks = max(1, min(ROW_BLOCKS, N))
    sums = np.zeros((n_blocks, 2, D))         # [block, 0] sums dout * xhat, [block, 1] sums dout
    for k in prange(n_blocks):
        sum_gx, sum_g = sums[k, 0], sums[k, 1]
        for n in range(k * N // n_blocks, (k + 1) * N // n_blocks):
            xn, gn = x[n], dout[n]
            m, r = mean[n], rstd[n]
            for d in range(D):
                sum_g[d] += gn[d]
                sum_gx[d] += gn[d] * ((xn[d] - m) * r)
    for d in range(D):
        total_gx, total_g = 0.0, 0.0
        for k in range(n_blocks):
            total_gx += sums[k, 0, d]
            total_g += sums[k, 1, d]
        if dweight_out.size:
            dweight_out[d] = total_gx
        if dbias_out.size:
            dbias_out[d] = total_g


def layer_norm_backward(x, weight, mean, rstd, dout, dx_out, dweight_out, dbias_out):
    """The gradients of ``layer_norm_forward`` (reference module docstring).

    x, dout, dx_out: (N, D); weight: (D,) or (0,); mean, rstd: (N,) from the forward;
    dweight_out, dbias_out: (D,), overwritten (or (0,): not computed)
    """
    _layer_norm_dx(x, weight, mean, rstd, dout, dx_out)
    if dweight_out.size or dbias_out.size:
        layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out)
