"""Embedding lookup and its scatter-add backward, in plain numpy: the spec for the fast kernels."""
import numpy as np


def embedding_forward(weight, idx, out):
    """out[n] = weight[idx[n]].   weight: (V, E); idx: (N,) int64 in [0, V); out: (N, E)"""
    out[...] = weight[idx]


def embedding_backward(idx, dout, dweight):
    """dweight[idx[n]] += dout[n] for every n; repeated indices add up.

    idx: (N,) int64 in [0, V); dout: (N, E); dweight: (V, E), accumulated into (zero it first
    for a fresh gradient). ``np.add.at`` is the unbuffered scatter-add: ``dweight[idx] += dout``
    would keep only one of the rows of a repeated index.
    """
    np.add.at(dweight, idx, dout)
