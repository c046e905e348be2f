"""Bias add, its backward, and the optimizer updates, in plain numpy: the spec for the fast kernels.

The optimizer updates follow PyTorch's ``torch.optim`` formulas (default options: no amsgrad,
no maximize, no dampening). Each works in place on the arrays of one parameter: ``param``,
``grad`` (only read) and the optimizer's state buffers, all of the same shape and dtype
(the fast kernels want them flat and contiguous; these work on any shape).
Hyperparameters are Python numbers.
"""
import math

import numpy as np


def add_bias_forward(x, bias):
    """x += bias, added to every row, in place.   x: (N, M); bias: (M,)"""
    x += bias


def bias_backward(dout, dbias, accumulate):
    """dbias (+)= dout.sum(0): the bias was added to every row.   dout: (N, M); dbias: (M,)"""
    if accumulate:
        dbias += dout.sum(axis=0)
    else:
        dbias[...] = dout.sum(axis=0)


def sum_of_squares(x):
    """sum(x**2) as a Python float, accumulated in float64 (for gradient-norm clipping)."""
    x64 = x.astype(np.float64)
    return float(np.sum(x64 * x64))


def scale_inplace(x, s):
    """x *= s, in place."""
    x *= s


def sgd_update(param, grad, buf, lr, momentum, nesterov, weight_decay):
    """Stochastic gradient descent with optional momentum (torch.optim.SGD, dampening 0).

        g = grad + weight_decay * param
        if momentum != 0:
            buf = momentum * buf + g          (buf starts at zero, so the first step gives buf = g)
            g   = g + momentum * buf  if nesterov  else  buf
        param = param - lr * g

    ``buf`` is not touched when momentum == 0 (pass any array, e.g. an empty one).
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        buf[...] = momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """Adam (torch.optim.Adam), or AdamW (torch.optim.AdamW) when ``decoupled`` is true.

    ``step`` counts the updates of this parameter, this one included (1 on the first call).

        if decoupled: param = param * (1 - lr * weight_decay)     (AdamW: decay the weight itself)
        else:         g = grad + weight_decay * param             (Adam: L2 term in the gradient)
        m = beta1 * m + (1 - beta1) * g                            (exp_avg)
        v = beta2 * v + (1 - beta2) * g * g                        (exp_avg_sq)
        param = param - lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)
    """
    g = grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            g = grad + weight_decay * param
    exp_avg[...] = beta1 * exp_avg + (1 - beta1) * g
    exp_avg_sq[...] = beta2 * exp_avg_sq + (1 - beta2) * g * g
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    param -= step_size * exp_avg / (np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay):
    """Adagrad (torch.optim.Adagrad, lr_decay 0, initial accumulator 0).

        g = grad + weight_decay * param
        sum_sq = sum_sq + g * g
        param = param - lr * g / (sqrt(sum_sq) + eps)
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    sum_sq += g * g
    param -= lr * g / (np.sqrt(sum_sq) + eps)


def rmsprop_update(param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    """RMSprop (torch.optim.RMSprop).

        g = grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        if centered:                                   (divide by an estimate of the variance)
            grad_avg = alpha * grad_avg + (1 - alpha) * g
            denom = sqrt(square_avg - grad_avg**2) + eps
        else:
            denom = sqrt(square_avg) + eps
        if momentum > 0:
            buf = momentum * buf + g / denom
            param = param - lr * buf
        else:
            param = param - lr * g / denom

    ``grad_avg`` is untouched unless centered, ``buf`` unless momentum > 0 (pass empty arrays).
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    square_avg[...] = alpha * square_avg + (1 - alpha) * g * g
    if centered:
        grad_avg[...] = alpha * grad_avg + (1 - alpha) * g
        denom = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        denom = np.sqrt(square_avg) + eps
    if momentum > 0:
        buf[...] = momentum * buf + g / denom
        param -= lr * buf
    else:
        param -= lr * g / denom
