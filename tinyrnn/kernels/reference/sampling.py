"""The sampling rule of every ``*_generate`` kernel and of ``tinyrnn.generate``, described once here.

Sampling one index from the logits z (V,), with u in [0, 1):
    temperature <= 0: argmax(z) (the first maximum), u unused.
    else p = softmax(z / temperature); order = indices by decreasing p (stable: ties by index);
         keep the first top_k of order (all if top_k <= 0), then, if top_p < 1, the shortest
         prefix of those whose probabilities sum to >= top_p; return the first kept index
         (walking in that order) at which the running sum of kept p exceeds u * (sum of kept p).
    When neither top_k nor top_p cuts anything (top_k <= 0 or >= V, top_p >= 1: the default),
    order is the indices in increasing order instead: the same distribution, without a sort.

The CPU kernel (``cpu/generate.py``'s ``_sample_index``) implements the same rule inside Numba;
the CUDA generation and ``tinyrnn.generate.fill`` call ``sample_index`` itself. numpy only.
"""
import numpy as np


def sample_index(logits, u, temperature, top_k, top_p):
    """One index from logits (V,) with the uniform u, by the rule in the module docstring."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    keep = len(p) if top_k <= 0 else min(top_k, len(p))
    if keep == len(p) and top_p >= 1:
        order = np.arange(len(p))           # nothing is cut: no need to sort
    else:
        order = np.argsort(-p, kind="stable")
    if top_p < 1:
        cum = np.cumsum(p[order[:keep]])
        keep = min(keep, int(np.searchsorted(cum, top_p, side="left")) + 1)
    cum = np.cumsum(p[order[:keep]])
    j = int(np.searchsorted(cum, u * cum[-1], side="right"))
    return int(order[min(j, keep - 1)])
