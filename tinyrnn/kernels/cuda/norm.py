"""Layer normalisation over the last axis on the GPU.

Same math as ``tinyrnn.kernels.reference.norm`` (read that first). The forward and the input
gradient take one block per row, as the log-softmax does (``loss.py``): each thread sums the
columns tid, tid + threads, ... and the block combines the sums in shared memory (``block_sum``),
in the arrays' own dtype (float32 math in a float32 kernel, as every kernel here but the
optimizers'; the tree reduction sums in pairs). The gain and shift gradients sum over rows: one thread per column
walks the rows in order (neighbouring threads read neighbouring columns), as ``bias_backward`` does.
"""
import math

from numba import cuda

from .device import ROW_THREADS, block_sum, blocks_for, jit, row_threads, threads_for


@jit
def _layer_norm_forward_kernel(x, weight, bias, eps, out, mean_out, rstd_out):
    """Block ``row``: out[row] = (x[row] - mean) * rstd * weight + bias."""
    shared = cuda.shared.array(ROW_THREADS, x.dtype)
    row, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    one, D = x.dtype.type(1.0), x.shape[1]
    per_d = one / x.dtype.type(D)
    total = x.dtype.type(0.0)
    for d in range(tid, D, nthreads):
        total += x[row, d]
    mean = block_sum(shared, total) * per_d
    squares = x.dtype.type(0.0)
    for d in range(tid, D, nthreads):
        squares += (x[row, d] - mean) * (x[row, d] - mean)
    rstd = one / math.sqrt(block_sum(shared, squares) * per_d + eps)
    for d in range(tid, D, nthreads):
        y = (x[row, d] - mean) * rstd
        if weight.size > 0:
            y *= weight[d]
        if bias.size > 0:
            y += bias[d]
        out[row, d] = y
    if tid == 0:
        mean_out[row] = mean
        rstd_out[row] = rstd


@jit
def _layer_norm_dx_kernel(x, weight, mean, rstd, dout, dx):
    """Block ``row``: dx[row] = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight."""
    shared = cuda.shared.array(ROW_THREADS, x.dtype)
    row, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    D = x.shape[1]
    per_d = x.dtype.type(1.0) / x.dtype.type(D)
    m, r = mean[row], rstd[row]
    sum_g, sum_gx = x.dtype.type(0.0), x.dtype.type(0.0)
    for d in range(tid, D, nthreads):
        g = dout[row, d] * weight[d] if weight.size > 0 else dout[row, d]
        sum_g += g
        sum_gx += g * ((x[row, d] - m) * r)
    mean_g = block_sum(shared, sum_g) * per_d
    mean_gx = block_sum(shared, sum_gx) * per_d
    for d in range(tid, D, nthreads):
        g = dout[row, d] * weight[d] if weight.size > 0 else dout[row, d]
        dx[row, d] = r * (g - mean_g - ((x[row, d] - m) * r) * mean_gx)


@jit
def _layer_norm_dparams_kernel(x, mean, rstd, dout, dweight, dbias):
    """Thread ``d``: dweight[d] = sum over rows of dout * xhat, dbias[d] = sum over rows of dout."""
    d = cuda.grid(1)
    N, D = x.shape
    if d < D:
        sum_g, sum_gx = x.dtype.type(0.0), x.dtype.type(0.0)
        for n in range(N):
            sum_g += dout[n, d]
            sum_gx += dout[n, d] * ((x[n, d] - mean[n]) * rstd[n])
        if dweight.size > 0:
            dweight[d] = sum_gx
        if dbias.size > 0:
            dbias[d] = sum_g


def layer_norm_forward(x, weight, bias, eps, out, mean_out, rstd_out):
    """out = (x - mean) * rstd * weight + bias, per row.

    x, out: (N, D); weight, bias: (D,) or (0,) (none); eps: float; mean_out, rstd_out: (N,)
    """
    N, D = x.shape
    if N:
        _layer_norm_forward_kernel[N, row_threads(D)](x, weight, bias, x.dtype.type(eps), out, mean_out, rstd_out)


def layer_norm_backward(x, weight, mean, rstd, dout, dx_out, dweight_out, dbias_out):
    """The gradients of ``layer_norm_forward`` (reference module docstring).

    x, dout, dx_out: (N, D); weight: (D,) or (0,); mean, rstd: (N,) from the forward;
    dweight_out, dbias_out: (D,), overwritten (or (0,): not computed)
    """
    N, D = x.shape
    if N:
        _layer_norm_dx_kernel[N, row_threads(D)](x, weight, mean, rstd, dout, dx_out)
    layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out)


def layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out):
    """dweight = sum over rows of dout * xhat, dbias = sum of dout (the reference's docstring has the shapes)."""
    D = x.shape[1]
    if D and (dweight_out.size or dbias_out.size):
        _layer_norm_dparams_kernel[blocks_for(D), threads_for(D)](x, mean, rstd, dout, dweight_out, dbias_out)
