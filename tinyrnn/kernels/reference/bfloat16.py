"""bfloat16 weights for generation, stored as 16-bit integers (numpy has no bfloat16 type).

A bfloat16 is the top 16 bits of a float32: the same sign and 8-bit exponent (the same range),
7 bits of mantissa instead of 23 (about 3 significant digits). Batch-1 sampling reads every
weight once per character, so halving the bytes halves the memory traffic; the kernels widen each
number back to float32 in registers (``u << 16``, reinterpreted) and multiply in float32.

    to_bfloat16(a)   float array -> uint16 array, rounded to the nearest bfloat16 (ties to even)
    from_bfloat16(u) uint16 array -> float32 array: the exact value each bfloat16 stands for
    widen(w)         from_bfloat16(w) for a uint16 array, w itself for a float array
"""
import numpy as np


def to_bfloat16(a) -> np.ndarray:
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16          # round to nearest, ties to even
    return rounded.astype(np.uint16)


def from_bfloat16(u) -> np.ndarray:
    return (np.asarray(u, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def widen(w) -> np.ndarray:
    return from_bfloat16(w) if w.dtype == np.uint16 else w
