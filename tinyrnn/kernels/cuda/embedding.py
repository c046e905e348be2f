"""Embedding lookup (a gather) and its backward (a scatter-add) on the GPU.

One thread per element of ``out`` / ``dout``: thread i handles row n = i // E, column
e = i % E. Neighbouring threads touch neighbouring columns of one row, so both the reads and
the writes are coalesced.

In the backward pass two rows n1, n2 with the same index add into the same row of
``dweight``, so the adds are atomic (``cuda.atomic.add``). Repeated indices therefore add up in
an unspecified order: in float32 the result may differ from the reference's in the last bits.
"""
from numba import cuda

from .device import blocks_for, jit, threads_for


@jit
def _embedding_forward_kernel(weight, idx, out):
    i = cuda.grid(1)
    N, E = out.shape
    if i < N * E:
        n, e = i // E, i % E
        out[n, e] = weight[idx[n], e]


@jit
def _embedding_backward_kernel(idx, dout, dweight):
    i = cuda.grid(1)
    N, E = dout.shape
    if i < N * E:
        n, e = i // E, i % E
        cuda.atomic.add(dweight, (idx[n], e), dout[n, e])


def embedding_forward(weight, idx, out):
    """out[n] = weight[idx[n]].   weight: (V, E); idx: (N,) int64 in [0, V); out: (N, E)"""
    total = out.shape[0] * out.shape[1]
    if total:
        _embedding_forward_kernel[blocks_for(total), threads_for(total)](weight, idx, out)


def embedding_backward(idx, dout, dweight):
    """dweight[idx[n]] += dout[n] for every n (repeats add up); accumulates into dweight.

    idx: (N,) int64 in [0, V); dout: (N, E); dweight: (V, E)
    """
    total = dout.shape[0] * dout.shape[1]
    if total:
        _embedding_backward_kernel[blocks_for(total), threads_for(total)](idx, dout, dweight)
