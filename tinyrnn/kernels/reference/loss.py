"""Softmax cross-entropy and log-softmax, in plain numpy: the spec for the fast kernels.

Every row is made numerically safe by subtracting its maximum first. With m = max_v x[v]:

    log softmax(x)[v] = x[v] - m - log(sum_u exp(x[u] - m))

and exp(x[u] - m) <= 1, so nothing overflows, and the loss is computed from the log-sum-exp
(never as -log of a probability that may have underflowed to 0), so logits of +-1e4 stay finite.
"""
import numpy as np


def softmax_xent_forward(logits, targets, ignore_index, probs_out, losses_out):
    """Softmax per row, and the cross-entropy loss of each row.

    logits: (N, V); targets: (N,) int64; probs_out: (N, V); losses_out: (N,)
    probs[n] = softmax(logits[n]);  losses[n] = -log probs[n, targets[n]]
                                              = log(sum_v exp(logits[n,v] - m)) - (logits[n,t] - m)
    Rows whose target equals ``ignore_index`` get loss 0 (their probs are still written).
    Every other target must lie in [0, V).
    """
    row_max = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - row_max)
    total = e.sum(axis=1, keepdims=True)
    probs_out[...] = e / total
    keep = targets != ignore_index
    rows = np.nonzero(keep)[0]
    losses_out[...] = 0
    losses_out[rows] = np.log(total[rows, 0]) - (logits[rows, targets[rows]] - row_max[rows, 0])


def softmax_xent_backward(probs, targets, ignore_index, scale, dlogits_out):
    """Gradient of scale * sum_n losses[n] with respect to the logits.

    probs: (N, V) from the forward pass; targets: (N,) int64; dlogits_out: (N, V)
    dlogits[n] = scale * (probs[n] - onehot(targets[n])); rows with target == ignore_index get 0.
    (``scale`` is typically 1 / number-of-counted-rows, for a mean loss.)
    """
    keep = targets != ignore_index
    rows = np.nonzero(keep)[0]
    onehot = np.zeros_like(probs)
    onehot[rows, targets[rows]] = 1
    dlogits_out[...] = scale * (probs - onehot)
    dlogits_out[~keep] = 0


def log_softmax_forward(x, out):
    """out = log softmax(x) per row.   x: (N, V); out: (N, V)"""
    row_max = x.max(axis=1, keepdims=True)
    shifted = x - row_max
    out[...] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_softmax_backward(out, dout, dx_out):
    """Backward of log-softmax from its output.   out, dout, dx_out: (N, V)

    With y = log softmax(x):  dy[v]/dx[u] = [u == v] - softmax(x)[u], so
    dx[u] = dout[u] - exp(y[u]) * sum_v dout[v]        (exp(y) is softmax(x))
    """
    dx_out[...] = dout - np.exp(out) * dout.sum(axis=1, keepdims=True)
