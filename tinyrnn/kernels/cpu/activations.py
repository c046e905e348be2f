"""Nonlinearities for the Numba kernels: the gates' ``sigmoid(x)`` and ``tanh(x)``, and the
softmax's ``exp(x)``, on scalars.

All are compiled *into* the calling kernel and dispatch on the argument's type:

* float64: exact library math (``math.tanh``, ``1 / (1 + exp(-x))``). Gradient checks run
  in float64, so no approximation is allowed there.
* float32: a rational approximation that LLVM can vectorise (there is no vector ``tanh``
  here, so ``math.tanh`` in a loop is a scalar call per element, ~10x slower):

      tanh(x) ~= x * P(x^2) / Q(x^2),   |x| clamped to 9 (tanh(9) = 1 - 3e-8)
      sigmoid(x) = 0.5 + 0.5 * tanh(x / 2)

  P and Q have degree 4 in x^2; their coefficients are a minimax fit on [0, 9] (fitted for
  this project with a linear-programming rational fit): the error of the formula is 4.8e-8
  in exact arithmetic and at most 3.2e-7 (a few float32 ulps) when evaluated in float32;
  the result is clipped to [-1, 1].
* exp in float32: ``exp(y) = exp(y / 128) ** 128``, the Taylor series to z^13 at z = y / 128
  (|z| <= 0.82 over float32's range; error < 2e-12), then 7 squarings, all in float64: no
  library call and no bit tricks, so LLVM vectorises the loop around it. The result is within
  ~1e-10 of exp before its rounding to float32 (so exp correctly rounded, or one rounding from
  it), 0 below y = -104 (where float32's exp is 0 too), inf above 88.7, NaN through. (The
  softmax at N 2048, V 65 took 0.43-0.55 ms on one Zen 4 core with ``math.exp``, 0.27 with this.)

Kernels call them like any function: ``from .activations import sigmoid, tanh``. tanh and sigmoid
also take SIMD vectors (``simd.Vec``): float32 vectors run the same rational formula on 16 lanes at once;
float64 vectors apply the exact scalar formula lane by lane. Outside a kernel (plain Python)
they compute the exact float64 formulas.
"""
import math

import numpy as np
from numba import types
from numba.extending import overload

from ..jit import OVERLOAD_OPTIONS, kernel
from .simd import LANES, Vec, vget, vset

# tanh(x) ~= x * (1 + P1 s + P2 s^2 + P3 s^3 + P4 s^4) / (1 + Q1 s + ... + Q4 s^4), s = x^2
_P1, _P2, _P3, _P4 = 0.1337052837843038, 0.0034834593828489686, 2.0423079279166366e-05, 1.3122173285587839e-08
_Q1, _Q2, _Q3, _Q4 = 0.4670383246356285, 0.025829959980670222, 0.00032663872562021108, 7.6760832737708435e-07
_CLAMP = 9.0
# exp in float32 kernels: 1/k! for k = 0..13, and the input below which the result is 0
_E = tuple(1.0 / math.factorial(k) for k in range(14))
_EXP_LO = -104.0


def tanh(x):
    """tanh(x); exact in float64, rational approximation (abs err ~3e-7) in float32 kernels."""
    return math.tanh(x)


def sigmoid(x):
    """1 / (1 + exp(-x)); exact in float64, 0.5 + 0.5 * tanh(x / 2) (approximate) in float32 kernels."""
    return 1.0 / (1.0 + math.exp(-x))


def exp(x):
    """exp(x); exact in float64, the formula below (relative error ~1e-10 before rounding) in float32 kernels."""
    return math.exp(x)


def _is_float32(x):
    """A float32 scalar or a vector of float32 (one formula serves both)."""
    if isinstance(x, Vec):
        x = x.dtype
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(tanh, jit_options=OVERLOAD_OPTIONS)
def _tanh_overload(x):
    if _is_float32(x):
        one, clamp = np.float32(1.0), np.float32(_CLAMP)
        p1, p2, p3, p4 = np.float32(_P1), np.float32(_P2), np.float32(_P3), np.float32(_P4)
        q1, q2, q3, q4 = np.float32(_Q1), np.float32(_Q2), np.float32(_Q3), np.float32(_Q4)

        def tanh_float32(x):
            x = min(max(x, -clamp), clamp)
            s = x * x
            p = one + s * (p1 + s * (p2 + s * (p3 + s * p4)))
            q = one + s * (q1 + s * (q2 + s * (q3 + s * q4)))
            return min(max(x * p / q, -one), one)  # rounding may overshoot 1 by an ulp or two

        return tanh_float32
    if isinstance(x, types.Float):
        return lambda x: math.tanh(x)
    if isinstance(x, Vec):
        return lambda x: _tanh_lanes(x)


@overload(sigmoid, jit_options=OVERLOAD_OPTIONS)
def _sigmoid_overload(x):
    if _is_float32(x):
        half = np.float32(0.5)
        return lambda x: half + half * tanh(half * x)
    if isinstance(x, types.Float):
        return lambda x: 1.0 / (1.0 + math.exp(-x))
    if isinstance(x, Vec):
        return lambda x: _sigmoid_lanes(x)



@overload(exp, jit_options=OVERLOAD_OPTIONS)
def _exp_overload(x):
    if _is_float32(x) and isinstance(x, types.Float):
        lo, scale = np.float64(_EXP_LO), np.float64(1.0 / 128.0)

        def exp_float32(x):
            y = np.float64(x)
            y = lo if y < lo else y                 # exp(-104) is 0 in float32; NaN passes through
            z = y * scale                           # |z| <= 0.82 for y in [-104, 88.8]
            p = _E[13]
            for k in range(12, -1, -1):             # Taylor series to z^13 (error < 2e-12), Horner
                p = p * z + _E[k]
            p = p * p                               # exp(y) = exp(y / 128)^(2^7): 7 squarings
            p = p * p
            p = p * p
            p = p * p
            p = p * p
            p = p * p
            p = p * p
            return np.float32(p)

        return exp_float32
    if isinstance(x, types.Float):
        return lambda x: math.exp(x)


# float64 vectors: the exact scalar formulas, lane by lane
@kernel
def _tanh_lanes(x):
    out = x
    for lane in range(LANES):
        out = vset(out, lane, math.tanh(vget(x, lane)))
    return out


@kernel
def _sigmoid_lanes(x):
    out = x
    for lane in range(LANES):
        out = vset(out, lane, 1.0 / (1.0 + math.exp(-vget(x, lane))))
    return out
