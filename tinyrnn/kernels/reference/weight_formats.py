"""Compact weight formats for generation: bfloat16, and int8 with a scale per row.

Batch-1 sampling reads every weight once per character, so fewer bytes per weight mean less
memory traffic; the kernels multiply the compact weights in registers, bfloat16 ones as float32
and int8 ones as integers (below).

bfloat16 (2 bytes) is the top 16 bits of a float32: the same sign and 8-bit exponent (the same
range), 7 bits of mantissa instead of 23 (about 3 significant digits). numpy has no bfloat16 type,
so it is stored as uint16; widened, it is ``u << 16`` reinterpreted as float32. A product with a
bfloat16 matrix rounds its vector x to bfloat16 too (the rule of ``to_bfloat16``), and sums the
products, each exact in float32, in float32 (whatever x's dtype), as AVX512-BF16's and Arm's
bfloat16 dot products do: the kernels then read weights and vector as pairs of bfloat16s in 32-bit
words, and widen neither with a shuffle (``cpu/simd.py``, ``vdot_bf16``). The vector's rounding moves
each element by at most 2**-8 of itself, as the weights' rounding does (BENCHMARKS.md measures both).

Without AVX-512 BF16 (AVX2, and AVX-512 before Cooper Lake and Zen 4) a kernel makes each bfloat16
of a pair a float32 itself: the first is ``word << 16``, the second ``word & 0xFFFF0000``. There the
matrices are stored in *pairs* (``to_bfloat16_pairs``), and the mask is not needed: along each row,
column 2m holds its bfloat16 as above, and column 2m+1 the top half of a float32 whose bottom half
is column 2m's 16 bits, chosen so that the whole 32-bit word, read as a float32, is the value nearest
the weight (of the two top halves around it, one bfloat16 step apart, the nearer; ties to the one
that keeps the weight's own top half). That word is the second weight, and the kernels read it
with no instruction at all (with the mask, a sampled character of the AVX2 build took 1.05-1.09x the
time; BENCHMARKS.md). It moves the weight by at most 2**-8 of itself, as a bfloat16's rounding does;
a weight of 0 reads as at most 2**-133 (a denormal), and a non-finite one stays non-finite.
``isa.bf16_pairs`` says which layout the CPU kernels were compiled for; ``to_stored_bfloat16`` and
``from_stored_bfloat16`` follow it.

int8 (1 byte) keeps one float32 scale per row r of a matrix (per output unit):
``w[r, k] ~ scale[r] * q[r, k]`` with ``q`` in [-127, 127] and ``scale[r] = max_k |w[r, k]| / 127``,
so every row uses the full range. A matrix-vector product ``w @ x`` with an int8 matrix also
rounds the vector x to 8-bit integers, so that the dot products are integer ones of bytes (on
x86 one ``vpmaddubsw`` does 32 of them, unsigned times signed bytes summed in pairs in 16 bits:
the kernels multiply q + 128 and take 128 * sum(xq) off; ``cpu/simd.py``, ``vdot_u8s8``). So the
CPU kernels store q *in excess 128*, as the unsigned byte q + 128 (``to_stored_int8``), which
the byte products read as it is (flipping each byte's top bit as it was loaded cost int8 sampling
4% of its time on Zen 4, natively; on Intel's cores, where it took the multiplies' vector ports,
LLVM's models give it a quarter of the loop; BENCHMARKS.md):

    levels = min(64, (2**31 - 1) // (255 * K))           K = len(x): no int32 sum can overflow
    step   = max|x| / levels                             (0 for x = 0)
    xq     = rint(x / step)                              int8, in [-levels, levels]
    (w @ x)[r] ~ (scale[r] * step) * (q[r] . xq)         the dot exact in int32

(64 levels: a pair of ``vpmaddubsw``'s products, 255 * 64 * 2 = 32,640, fits in 16 bits.) Every
element of x moves by at most step / 2 (1/128 of max|x| up to K = 131,586), twice as far for its
vector as a weight moves for its row (1/254 of the row's largest); BENCHMARKS.md measures what each
costs in bits/char (3e-4 for the vectors).

    to_bfloat16(a)             float array -> uint16 array, rounded to the nearest bfloat16 (ties to even)
    from_bfloat16(u)           uint16 array -> float32 array: the exact value each bfloat16 stands for
    to_bfloat16_pairs(a)       float array (..., K) -> uint16 array, in pairs along its last axis (above)
    from_bfloat16_pairs(u)     uint16 array (..., K) in pairs -> the float32 values they stand for
    to_stored_bfloat16(a)      / from_stored_bfloat16(u): the same in the layout the CPU kernels read
                               (pairs where ``isa.bf16_pairs()``, else plain bfloat16s)
    to_int8_rows(a)            float array (..., R, K) -> (q int8 (..., R, K), scale float32 (..., R))
    from_int8_rows(q, scale)   the values q and scale stand for (float64, exact)
    to_stored_int8(q)          int8 array -> uint8 array q + 128, the layout the CPU kernels read
    from_stored_int8(u)        uint8 array -> int8 array u - 128
    no_scale(w)                the empty scale (..., 0) that float and bfloat16 matrices go with
    widen(w, scale)            w as float: from_stored_bfloat16 for uint16, from_int8_rows of
                               from_stored_int8 for uint8, else w itself
    to_int8_activations(x)     float vector (K,) -> (xq int8 (K,), step float64), the rule above
    times(w, scale, x, cols)   w[:, cols] @ x[cols] for a matrix in any of the formats (int8: by the
                               rule above, x rounded as a whole; bfloat16: x rounded to bfloat16, the
                               sum in float32; cols a slice, all columns by default)
"""
import numpy as np


def to_bfloat16(a) -> np.ndarray:
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16          # round to nearest, ties to even
    return rounded.astype(np.uint16)


def from_bfloat16(u) -> np.ndarray:
    return (np.asarray(u, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_bfloat16_pairs(a) -> np.ndarray:
    t = np.ascontiguousarray(a, dtype=np.float32)
    stored = to_bfloat16(t)
    seconds = np.ascontiguousarray(t[..., 1::2])
    n = seconds.shape[-1]
    m = seconds.view(np.uint32).astype(np.int64)
    base = (m & 0xFFFF0000) | stored[..., 0:2 * n:2].astype(np.int64)     # the first's 16 bits below
    other = np.where(base > m, base - 0x10000, base + 0x10000)           # the top half one step away
    finite = (other >> 31 == m >> 31) & ((other >> 23) & 0xFF != 0xFF)   # not across the sign, nor to inf / NaN
    other = np.where(finite, other, base)
    value = lambda bits: bits.astype(np.uint32).view(np.float32).astype(np.float64)   # noqa: E731
    exact = seconds.astype(np.float64)
    with np.errstate(invalid="ignore"):             # inf - inf for a non-finite weight (kept plain below)
        nearest = np.where(np.abs(value(other) - exact) < np.abs(value(base) - exact), other, base)  # ties: base
    stored[..., 1::2] = np.where(np.isfinite(seconds), nearest >> 16, stored[..., 1::2])
    return stored


def from_bfloat16_pairs(u) -> np.ndarray:
    u = np.asarray(u, dtype=np.uint16)
    values = from_bfloat16(u)
    n = u.shape[-1] // 2
    words = (u[..., 1:2 * n:2].astype(np.uint32) << 16) | u[..., 0:2 * n:2]
    values[..., 1:2 * n:2] = words.view(np.float32)
    return values


def to_stored_bfloat16(a) -> np.ndarray:
    return to_bfloat16_pairs(a) if _pairs() else to_bfloat16(a)


def from_stored_bfloat16(u) -> np.ndarray:
    return from_bfloat16_pairs(u) if _pairs() else from_bfloat16(u)


def _pairs() -> bool:
    from ..isa import bf16_pairs

    return bf16_pairs()


def to_int8_rows(a):
    a = np.asarray(a, dtype=np.float32)
    scale = np.abs(a).max(axis=-1, initial=0.0) / np.float32(127)
    safe = np.where(scale > 0, scale, np.float32(1))                # an all-zero row stays zero
    q = np.clip(np.rint(a / safe[..., None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def from_int8_rows(q, scale) -> np.ndarray:
    # float64: a float32 scale times an int8 is exact there (31 significant bits), as in the kernels
    return np.asarray(q, dtype=np.float64) * np.asarray(scale, dtype=np.float64)[..., None]


def to_stored_int8(q) -> np.ndarray:
    return (np.asarray(q, dtype=np.int8).astype(np.int16) + 128).astype(np.uint8)


def from_stored_int8(u) -> np.ndarray:
    return (np.asarray(u, dtype=np.uint8).astype(np.int16) - 128).astype(np.int8)


def no_scale(w) -> np.ndarray:
    return np.zeros(w.shape[:-2] + (0,), dtype=np.float32)


def widen(w, scale) -> np.ndarray:
    if w.dtype == np.uint16:
        return from_stored_bfloat16(w)
    if w.dtype == np.uint8:
        return from_int8_rows(from_stored_int8(w), scale)
    return w


def activation_levels(K: int) -> int:
    return max(1, min(64, (2 ** 31 - 1) // (255 * K)))


def to_int8_activations(x):
    x = np.asarray(x)
    amax = float(np.abs(x).max(initial=0.0))
    if amax == 0:
        return np.zeros(x.shape, np.int8), 0.0
    levels = activation_levels(x.shape[0])
    return np.rint(x.astype(np.float64) * (levels / amax)).astype(np.int8), amax / levels


def times(w, scale, x, cols=slice(None)) -> np.ndarray:
    if w.dtype == np.uint16:
        return from_stored_bfloat16(w)[:, cols] @ from_bfloat16(to_bfloat16(x))[cols]
    if w.dtype != np.uint8:
        return w[:, cols] @ x[cols]
    xq, step = to_int8_activations(x)
    dots = (from_stored_int8(w[:, cols]).astype(np.int64) @ xq[cols].astype(np.int64)).astype(x.dtype)
    return (scale.astype(x.dtype) * x.dtype.type(step)) * dots
