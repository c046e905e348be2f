"""Softmax cross-entropy and log-softmax on the GPU: one block per row.

Each row is made safe by subtracting its maximum m first (see the reference module):

    log softmax(x)[v] = x[v] - m - log(sum_u exp(x[u] - m))

A block of ``row_threads(V)`` threads handles one row: thread ``tid`` visits the columns
tid, tid + threads, tid + 2*threads, ..., keeps a running max (or sum) of its own, and the
block then combines the per-thread values with a tree reduction in shared memory:

    shared[tid] = mine;  for stride = threads/2, threads/4, ..., 1:
                             if tid < stride: shared[tid] = op(shared[tid], shared[tid + stride])

Elementwise backward passes use one thread per element.
"""
import math

from numba import cuda

from .device import ROW_THREADS, block_max, block_sum, blocks_for, jit, row_threads, threads_for


# --------------------------------------------------------------------------------------------
# Softmax cross-entropy
# --------------------------------------------------------------------------------------------
@jit
def _softmax_xent_forward_kernel(logits, targets, ignore_index, probs, losses):
    """Block ``row``: probs[row] = softmax(logits[row]); losses[row] = lse - (logits[row, t] - m)."""
    shared = cuda.shared.array(ROW_THREADS, logits.dtype)
    row, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    V = logits.shape[1]
    m = logits.dtype.type(-math.inf)
    for v in range(tid, V, nthreads):
        if logits[row, v] > m:
            m = logits[row, v]
    m = block_max(shared, m)
    total = logits.dtype.type(0.0)
    for v in range(tid, V, nthreads):
        e = math.exp(logits[row, v] - m)
        probs[row, v] = e
        total += e
    total = block_sum(shared, total)
    for v in range(tid, V, nthreads):   # the same columns this thread wrote above
        probs[row, v] = probs[row, v] / total
    if tid == 0:
        t = targets[row]
        if t == ignore_index:
            losses[row] = 0
        else:
            losses[row] = math.log(total) - (logits[row, t] - m)


@jit
def _softmax_xent_backward_kernel(probs, targets, ignore_index, scale, dlogits):
    """One thread per element: dlogits[n, v] = scale * (probs[n, v] - [v == t_n]), 0 if ignored."""
    i = cuda.grid(1)
    N, V = probs.shape
    if i < N * V:
        n, v = i // V, i % V
        t = targets[n]
        if t == ignore_index:
            dlogits[n, v] = 0
        elif v == t:
            dlogits[n, v] = scale * (probs[n, v] - probs.dtype.type(1.0))
        else:
            dlogits[n, v] = scale * probs[n, v]


def softmax_xent_forward(logits, targets, ignore_index, probs_out, losses_out):
    """probs = softmax(logits) per row; losses[n] = -log probs[n, targets[n]] (0 where ignored).

    logits: (N, V); targets: (N,) int64; probs_out: (N, V); losses_out: (N,)
    """
    N, V = logits.shape
    if N == 0:
        return
    _softmax_xent_forward_kernel[N, row_threads(V)](logits, targets, int(ignore_index), probs_out, losses_out)


def softmax_xent_backward(probs, targets, ignore_index, scale, dlogits_out):
    """dlogits = scale * (probs - onehot(targets)); rows with target == ignore_index get 0."""
    n = probs.shape[0] * probs.shape[1]
    if n == 0:
        return
    _softmax_xent_backward_kernel[blocks_for(n), threads_for(n)](
        probs, targets, int(ignore_index), probs.dtype.type(scale), dlogits_out)


# --------------------------------------------------------------------------------------------
# Log-softmax
# --------------------------------------------------------------------------------------------
@jit
def _log_softmax_forward_kernel(x, out):
    """Block ``row``: out[row] = x[row] - m - log(sum exp(x[row] - m))."""
    shared = cuda.shared.array(ROW_THREADS, x.dtype)
    row, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    V = x.shape[1]
    m = x.dtype.type(-math.inf)
    for v in range(tid, V, nthreads):
        if x[row, v] > m:
            m = x[row, v]
    m = block_max(shared, m)
    total = x.dtype.type(0.0)
    for v in range(tid, V, nthreads):
        total += math.exp(x[row, v] - m)
    log_total = math.log(block_sum(shared, total))
    for v in range(tid, V, nthreads):
        out[row, v] = (x[row, v] - m) - log_total


@jit
def _log_softmax_backward_kernel(out, dout, dx):
    """Block ``row``: dx[row] = dout[row] - exp(out[row]) * sum(dout[row])."""
    shared = cuda.shared.array(ROW_THREADS, out.dtype)
    row, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    V = out.shape[1]
    total = out.dtype.type(0.0)
    for v in range(tid, V, nthreads):
        total += dout[row, v]
    total = block_sum(shared, total)
    for v in range(tid, V, nthreads):
        dx[row, v] = dout[row, v] - math.exp(out[row, v]) * total


def log_softmax_forward(x, out):
    """out = log softmax(x) per row.   x: (N, V); out: (N, V)"""
    N, V = x.shape
    if N:
        _log_softmax_forward_kernel[N, row_threads(V)](x, out)


def log_softmax_backward(out, dout, dx_out):
    """dx = dout - exp(out) * sum(dout), per row.   out, dout, dx_out: (N, V)"""
    N, V = out.shape
    if N:
        _log_softmax_backward_kernel[N, row_threads(V)](out, dout, dx_out)
