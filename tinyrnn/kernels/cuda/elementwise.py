"""Bias add, its backward, reductions for gradient clipping, and the fused optimizer updates.

Same math as ``tinyrnn.kernels.reference.elementwise``, where each optimizer's formula is
written out. One GPU thread per element for the elementwise work; the optimizer updates treat
every array as flat (contiguous arrays of any shape are viewed as 1-D on the host) and make
one pass over memory per step. Scalars arrive as Python floats and stay float64 inside the
kernels, so, as in the CPU kernels, the arithmetic of a float32 element runs in float64 and is
rounded once, when stored (the updates are memory-bound: the float64 math costs nothing).

``sum_of_squares`` reduces in float64 in a fixed order for a given size (per-thread strided
sums, then tree reductions in shared memory), so its result is reproducible run to run.
``sum_of_squares_into`` (CUDA only) adds the sum into a device scalar without waiting, so
gradient clipping can sum every parameter on the device and copy back one number.
"""
import math

import numpy as np
from numba import cuda

from .device import blocks_for, jit, sum_into, threads_for

# sum_of_squares: at most this many blocks, each thread striding over x.


# --------------------------------------------------------------------------------------------
# Bias
# --------------------------------------------------------------------------------------------
@jit
def _add_bias_kernel(x, bias):
    i = cuda.grid(1)
    N, M = x.shape
    if i < N * M:
        n, j = i // M, i % M
        x[n, j] += bias[j]


@jit
def _bias_backward_kernel(dout, dbias, accumulate):
    """One thread per column j; it walks the rows in order (neighbouring threads read
    neighbouring columns, so each row is one coalesced read)."""
    j = cuda.grid(1)
    N, M = dout.shape
    if j < M:
        total = dout.dtype.type(0.0)
        for n in range(N):
            total += dout[n, j]
        if accumulate:
            dbias[j] += total
        else:
            dbias[j] = total


def add_bias_forward(x, bias):
    """x += bias, added to every row, in place.   x: (N, M); bias: (M,)"""
    total = x.shape[0] * x.shape[1]
    if total:
        _add_bias_kernel[blocks_for(total), threads_for(total)](x, bias)


def bias_backward(dout, dbias, accumulate):
    """dbias (+)= dout.sum(0).   dout: (N, M); dbias: (M,)"""
    M = dout.shape[1]
    if M:
        _bias_backward_kernel[blocks_for(M), threads_for(M)](dout, dbias, bool(accumulate))


# --------------------------------------------------------------------------------------------
# Reductions and scaling (gradient clipping)
# --------------------------------------------------------------------------------------------
def sum_of_squares_into(x, acc, accumulate=True):
    """acc[0] (+)= sum(x**2) in float64, on the device, without waiting for the result.

    x: any contiguous device array; acc: (1,) float64 device array. (CUDA only.)
    """
    sum_into(x.reshape(x.size), acc, square=True, accumulate=accumulate)


def sum_of_squares(x):
    """sum(x**2) as a Python float, accumulated in float64 (copies one number back)."""
    acc = cuda.device_array(1, dtype=np.float64)
    sum_of_squares_into(x, acc, False)
    return float(acc.copy_to_host()[0])


@jit
def _scale_kernel(x, s):
    i = cuda.grid(1)
    if i < x.size:
        x[i] = x[i] * s


def scale_inplace(x, s):
    """x *= s, in place (any contiguous shape)."""
    flat = x.reshape(x.size)
    if flat.size:
        _scale_kernel[blocks_for(flat.size), threads_for(flat.size)](flat, float(s))


# --------------------------------------------------------------------------------------------
# Optimizer updates (flat arrays, in place)
# --------------------------------------------------------------------------------------------
def _flat(a):
    return a if a.ndim == 1 else a.reshape(a.size)


def _launch_shape(param):
    return blocks_for(max(param.size, 1)), threads_for(max(param.size, 1))


@jit
def _sgd_kernel(param, grad, buf, lr, momentum, nesterov, weight_decay):
    i = cuda.grid(1)
    if i < param.size:
        g = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            b = momentum * buf[i] + g
            buf[i] = b
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        param[i] = param[i] - lr * g


def sgd_update(param, grad, buf, lr, momentum, nesterov, weight_decay):
    """SGD with optional (Nesterov) momentum, in place.   param, grad, buf: same shape

        g = grad + weight_decay * param
        if momentum != 0:
            buf = momentum * buf + g
            g   = g + momentum * buf  if nesterov  else  buf
        param = param - lr * g

    ``buf`` is untouched when momentum == 0.
    """
    if param.size:
        _sgd_kernel[_launch_shape(param)](_flat(param), _flat(grad), _flat(buf), float(lr), float(momentum),
                                          bool(nesterov), float(weight_decay))


@jit
def _adam_kernel(param, grad, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt, beta1, beta2, eps, decay, l2):
    i = cuda.grid(1)
    if i < param.size:
        p = param[i]
        g = grad[i] + l2 * p
        exp_avg[i] = beta1 * exp_avg[i] + (1.0 - beta1) * g
        exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (1.0 - beta2) * g * g
        # m and v are used as stored (rounded to the dtype), as the reference does.
        param[i] = p * decay - step_size * exp_avg[i] / (math.sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + eps)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Adam, or AdamW when ``decoupled``; in place.   param, grad, exp_avg, exp_avg_sq: same shape

    step: updates of this parameter so far, this one included (1 on the first call).

        if decoupled: param = param * (1 - lr * weight_decay)
        else:         g = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        param = param - lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)
    """
    if not param.size:
        return
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    _adam_kernel[_launch_shape(param)](_flat(param), _flat(grad), _flat(exp_avg), _flat(exp_avg_sq),
                                       float(step_size), float(bias_correction2_sqrt), float(beta1),
                                       float(beta2), float(eps), float(decay), float(l2))


@jit
def _adagrad_kernel(param, grad, sum_sq, lr, eps, weight_decay):
    i = cuda.grid(1)
    if i < param.size:
        g = grad[i] + weight_decay * param[i]
        sum_sq[i] = sum_sq[i] + g * g
        param[i] = param[i] - lr * g / (math.sqrt(sum_sq[i]) + eps)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay):
    """Adagrad, in place.   param, grad, sum_sq: same shape

        g = grad + weight_decay * param
        sum_sq = sum_sq + g * g
        param = param - lr * g / (sqrt(sum_sq) + eps)
    """
    if param.size:
        _adagrad_kernel[_launch_shape(param)](_flat(param), _flat(grad), _flat(sum_sq), float(lr), float(eps),
                                              float(weight_decay))


@jit
def _rmsprop_kernel(param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    i = cuda.grid(1)
    if i < param.size:
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


def rmsprop_update(param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    """RMSprop, optionally centered and with momentum; in place.   param, grad, square_avg: same shape

    grad_avg: same shape if centered (else unused); buf: same shape if momentum > 0 (else unused).

        g = grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        denom = sqrt(square_avg - grad_avg**2) + eps,  grad_avg = alpha * grad_avg + (1 - alpha) * g,  if centered
                sqrt(square_avg) + eps                                                                otherwise
        if momentum > 0:  buf = momentum * buf + g / denom;  param = param - lr * buf
        else:             param = param - lr * g / denom
    """
    if param.size:
        _rmsprop_kernel[_launch_shape(param)](_flat(param), _flat(grad), _flat(square_avg), _flat(grad_avg),
                                              _flat(buf), float(lr), float(alpha), float(eps), float(weight_decay),
                                              float(momentum), bool(centered))
