"""Bias add, its backward, and the fused optimizer updates as Numba kernels.

Same math as ``tinyrnn.kernels.reference.elementwise``, where each optimizer's formula is written
out. The updates work in place on flat 1-D contiguous arrays (``param.reshape(-1)`` views) and
make one pass over memory per step, instead of one numpy temporary per term. Scalars arrive as
Python floats, so for float32 parameters the arithmetic of an element runs in float64 and is
rounded once, when stored. Every prange iteration writes only its own elements, so the results do
not depend on the number of threads.
"""
import math

import numpy as np

from ..jit import parallel_kernel, prange

# sum_of_squares adds up fixed blocks of this many elements, then the block sums in order, so its
# result is the same for any thread count (needed for bit-exact resumption of training).
_SUM_BLOCK = 4096
# bias_backward sums fixed blocks of this many rows of dout, then the block sums in order.
_ROW_BLOCK = 128


@parallel_kernel
def add_bias_forward(x, bias):
    """x[n] += bias for every row n, in place.   x: (N, M); bias: (M,)"""
    N, M = x.shape
    for n in prange(N):
        row = x[n]
        for j in range(M):
            row[j] += bias[j]


@parallel_kernel
def bias_backward(dout, dbias, accumulate):
    """dbias (+)= dout.sum(0).   dout: (N, M); dbias: (M,)

    Each prange iteration sums a block of _ROW_BLOCK whole rows into its own float64 row of
    partial sums (contiguous reads along every row), and the partial sums are added in block order
    afterwards, so the result does not depend on the thread count. (Blocks of 256 columns instead,
    each iteration walking every row: 2-2.3x slower at 2,048 x 768 and 2,048 x 1,024 on 2 threads,
    and only 3 iterations for a GRU's 768 gate columns; BENCHMARKS.md. Slices such as ``dout[n]``
    rather than ``dout[n, j]``: a possibly negative index gets a wraparound check that stops
    vectorisation.)
    """
    N, M = dout.shape
    n_blocks = (N + _ROW_BLOCK - 1) // _ROW_BLOCK
    partial = np.zeros((n_blocks, M), dtype=np.float64)
    for b in prange(n_blocks):
        acc = partial[b]
        for n in range(b * _ROW_BLOCK, min(N, (b + 1) * _ROW_BLOCK)):
            row = dout[n]
            for j in range(M):
                acc[j] += row[j]
    for j in range(M):
        total = 0.0
        for b in range(n_blocks):
            total += partial[b, j]
        dbias[j] = dbias[j] + total if accumulate else total


@parallel_kernel
def sum_of_squares(x):
    """sum(x**2) of a 1-D array, accumulated in float64; returns a float.   x: (P,)"""
    P = x.shape[0]
    n_blocks = (P + _SUM_BLOCK - 1) // _SUM_BLOCK
    block_sums = np.empty(n_blocks, dtype=np.float64)
    for b in prange(n_blocks):
        block = x[b * _SUM_BLOCK: min(P, (b + 1) * _SUM_BLOCK)]  # a slice: the loop vectorises
        s = 0.0
        for k in range(block.shape[0]):
            v = np.float64(block[k])
            s += v * v
        block_sums[b] = s
    total = 0.0
    for b in range(n_blocks):
        total += block_sums[b]
    return total


@parallel_kernel
def scale_inplace(x, s):
    """x *= s, in place.   x: (P,)"""
    for i in prange(x.shape[0]):
        x[i] = x[i] * s


@parallel_kernel
def sgd_update(param, grad, buf, lr, momentum, nesterov, weight_decay):
    """SGD with optional (Nesterov) momentum, in place.   param, grad, buf: (P,)

        g = grad + weight_decay * param
        if momentum != 0:
            buf = momentum * buf + g
            g   = g + momentum * buf  if nesterov  else  buf
        param = param - lr * g
    """
    P = param.shape[0]
    for i in prange(P):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            b = momentum * buf[i] + g
            buf[i] = b
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        param[i] = param[i] - lr * g


@parallel_kernel
def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Adam, or AdamW when ``decoupled``; in place.   param, grad, exp_avg, exp_avg_sq: (P,)

    step: updates of this parameter so far, this one included (1 on the first call).

        if decoupled: param = param * (1 - lr * weight_decay)
        else:         g = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        param = param - lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)
    """
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    P = param.shape[0]
    for i in prange(P):
        p = param[i]
        g = grad[i] + l2 * p
        m = beta1 * exp_avg[i] + (1.0 - beta1) * g
        v = beta2 * exp_avg_sq[i] + (1.0 - beta2) * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        # m and v are used as stored (rounded to the dtype), as the reference does.
        param[i] = p * decay - step_size * exp_avg[i] / (math.sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + eps)


@parallel_kernel
def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay):
    """Adagrad, in place.   param, grad, sum_sq: (P,)

        g = grad + weight_decay * param
        sum_sq = sum_sq + g * g
        param = param - lr * g / (sqrt(sum_sq) + eps)
    """
    P = param.shape[0]
    for i in prange(P):
        g = grad[i] + weight_decay * param[i]
        sum_sq[i] = sum_sq[i] + g * g
        param[i] = param[i] - lr * g / (math.sqrt(sum_sq[i]) + eps)


@parallel_kernel
def rmsprop_update(param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    """RMSprop, optionally centered and with momentum; in place.   param, grad, square_avg: (P,)

    grad_avg: (P,) if centered (else unused); buf: (P,) if momentum > 0 (else unused).

        g = grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        denom = sqrt(square_avg - grad_avg**2) + eps,  grad_avg = alpha * grad_avg + (1 - alpha) * g,  if centered
                sqrt(square_avg) + eps                                                                otherwise
        if momentum > 0:  buf = momentum * buf + g / denom;  param = param - lr * buf
        else:             param = param - lr * g / denom
    """
    P = param.shape[0]
    for i in prange(P):
        g = grad[i] + weight_decay * param[i]
        square_avg[i] = alpha * square_avg[i] + (1.0 - alpha) * g * g
        if centered:
            grad_avg[i] = alpha * grad_avg[i] + (1.0 - alpha) * g
            denom = math.sqrt(square_avg[i] - grad_avg[i] * grad_avg[i]) + eps
        else:
            denom = math.sqrt(square_avg[i]) + eps
        if momentum > 0.0:
            buf[i] = momentum * buf[i] + g / denom
            param[i] = param[i] - lr * buf[i]
        else:
            param[i] = param[i] - lr * g / denom
