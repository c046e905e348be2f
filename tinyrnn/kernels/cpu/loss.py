"""Softmax cross-entropy and log-softmax as Numba kernels; one ``prange`` iteration per row.

Same math as ``tinyrnn.kernels.reference.loss`` (read that first). Row sums are accumulated in
float64 whatever the dtype. ``exp`` is ``activations.exp``: exact in float64; in float32 a formula
LLVM vectorises (``math.exp`` is a scalar library call per number: at N = 2048, V = 65 the
softmax took 0.43-0.55 ms on one core, 0.27 without), within ~1e-10 of exp before rounding to
float32. ``math.log`` (once a row) is exact.
"""
import math

from ..jit import parallel_kernel, prange
from .activations import exp


@parallel_kernel
def softmax_xent_forward(logits, targets, ignore_index, probs_out, losses_out):
    """probs[n] = softmax(logits[n]); losses[n] = -log probs[n, targets[n]] (0 where ignored).

    logits, probs_out: (N, V); targets: (N,) int64; losses_out: (N,)
    loss = log(sum_v exp(logits[n,v] - m)) - (logits[n,t] - m), m the row max: finite for any
    finite logits, even when probs[n, t] underflows to 0.
    """
    N, V = logits.shape
    for n in prange(N):
        x = logits[n]
        p = probs_out[n]
        m = x[0]
        for v in range(1, V):
            m = max(m, x[v])
        for v in range(V):
            p[v] = exp(x[v] - m)
        total = 0.0
        for v in range(V):
            total += p[v]
        for v in range(V):
            p[v] = p[v] / total
        t = targets[n]
        if t == ignore_index:
            losses_out[n] = 0.0
        else:
            losses_out[n] = math.log(total) - (x[t] - m)


@parallel_kernel
def softmax_xent_backward(probs, targets, ignore_index, scale, dlogits_out):
    """dlogits[n] = scale * (probs[n] - onehot(targets[n])); 0 for rows with target == ignore_index.

    probs, dlogits_out: (N, V); targets: (N,) int64
    """
    N, V = probs.shape
    for n in prange(N):
        p = probs[n]
        d = dlogits_out[n]
        t = targets[n]
        if t == ignore_index:
            for v in range(V):
                d[v] = 0.0
        else:
            for v in range(V):
                d[v] = scale * p[v]
            d[t] = scale * (p[t] - 1.0)


@parallel_kernel
def log_softmax_forward(x, out):
    """out[n] = x[n] - m - log(sum_v exp(x[n,v] - m)), m the row max.   x, out: (N, V)"""
    N, V = x.shape
    for n in prange(N):
        xn = x[n]
        on = out[n]
        m = xn[0]
        for v in range(1, V):
            m = max(m, xn[v])
        total = 0.0
        for v in range(V):
            total += exp(xn[v] - m)
        log_total = math.log(total)
        for v in range(V):
            on[v] = (xn[v] - m) - log_total


@parallel_kernel
def log_softmax_backward(out, dout, dx_out):
    """dx[n] = dout[n] - exp(out[n]) * sum_v dout[n, v]   (exp(out) is the softmax).

    out, dout, dx_out: (N, V)
    """
    N, V = out.shape
    for n in prange(N):
        yn = out[n]
        gn = dout[n]
        dn = dx_out[n]
        total = 0.0
        for v in range(V):
            total += gn[v]
        for v in range(V):
            dn[v] = gn[v] - exp(yn[v]) * total
