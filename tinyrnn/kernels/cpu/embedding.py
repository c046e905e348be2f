"""Embedding lookup and its scatter-add backward as Numba kernels.

Same math as ``tinyrnn.kernels.reference.embedding``. The caller checks that every index lies in
[0, V): these kernels do no bounds checks.
"""
from ..jit import parallel_kernel, prange

# embedding_backward gives each prange iteration a block of this many columns of dweight.
_COLUMN_BLOCK = 128


@parallel_kernel
def embedding_forward(weight, idx, out):
    """out[n] = weight[idx[n]].   weight: (V, E); idx: (N,) int64; out: (N, E)

    One prange iteration per output row: each writes only its own row.
    """
    N = idx.shape[0]
    E = weight.shape[1]
    for n in prange(N):
        src = weight[idx[n]]
        dst = out[n]
        for e in range(E):
            dst[e] = src[e]


@parallel_kernel
def embedding_backward(idx, dout, dweight):
    """dweight[idx[n]] += dout[n] for every n (repeated indices add up).

    idx: (N,) int64; dout: (N, E); dweight: (V, E), accumulated into.

    Two rows n1, n2 with the same index write the same row of dweight, so splitting over n would
    race. Instead the E columns are split into blocks of _COLUMN_BLOCK: each iteration walks all
    N rows but only adds into its own columns, so no element has two writers, and the rows are
    summed in the order n = 0, 1, ... (the result does not depend on the thread count).
    """
    N, E = dout.shape
    n_blocks = (E + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for b in prange(n_blocks):
        lo = b * _COLUMN_BLOCK
        hi = min(E, lo + _COLUMN_BLOCK)
        for n in range(N):
            dst = dweight[idx[n], lo:hi]
            src = dout[n, lo:hi]
            for k in range(hi - lo):
                dst[k] += src[k]
