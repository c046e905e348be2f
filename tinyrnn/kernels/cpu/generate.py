"""Batch-1 generation from a whole character model, with no Python per character (Numba).

Same names, arguments and math as ``reference/generate.py`` (the spec, where the layout is
described: a layer's gates are one product of W = [w_ih | w_hh] with v = [x; h]; layer 0 reads its
input half from a table x0 of one row per character, and multiplies only its w_hh).

``lstm_generate``, ``gru_generate``, ``rnn_generate`` sample from a stacked unidirectional
character model (embedding -> L layers -> linear head); each step calls ``_lstm_unit`` /
``_gru_unit`` of ``cells.py``::

    lstm_generate(x0[V,4H], w0[4H,H], s0[4H], w[L-1,4H,2H], s[L-1,4H], b[L,4H],
                  w_out[V,H], s_out[V], b_out[V], h[L,H], c[L,H], prime[P], uniforms[N],
                  temperature, top_k, top_p, out[N])
    gru_generate(x0[V,3H], w0[3H,H], s0, w[L-1,3H,2H], s, b_ih[L,3H], b_hh[L,3H], w_out, s_out,
                 b_out, h[L,H], prime, uniforms, temperature, top_k, top_p, out)
    rnn_generate(x0[V,H], w0[H,H], s0, w[L-1,H,2H], s, b[L,H], relu, w_out, s_out, b_out,
                 h[L,H], prime, uniforms, temperature, top_k, top_p, out)

LSTM/RNN take ``b = b_ih + b_hh``. ``h`` (``c``) hold the initial state and are updated in place.
The model reads ``prime`` (P >= 1 indices), then writes ``N = len(out)`` sampled indices, one
uniform of ``uniforms`` each; on return the state is the one after reading ``prime`` and
``out[:-1]`` (to continue, pass ``out[-1:]`` as the next prime). The sampling rule is described
once, in ``reference/sampling.py``; ``_sample_index`` implements it.

Per layer and character, the gates start from the bias (plus the table row x0[index] at layer 0),
x and h are copied side by side into a work vector v (layer 0's x is empty), then one product
w @ v runs (the GRU's n rows in two halves, ``_layer_rows``), then the unit math. One product of
K = 2H columns instead of two of H: int8 rows run faster over a longer K (one 1,024 x 512 product
takes about 0.8x the time of two 1,024 x 256 ones, BENCHMARKS.md), and the work vector is rounded
for int8 once.

Threads: one parallel region a call, one worker a thread, and the workers coordinate by atomic
counters (``atomics.py``) instead of entering a region per layer. A run is a sequence of phases,
each cut into one slot per worker (``_worker``, ``_phase``, ``_slot``): FEED (one layer for one
input; slot k owns units ``_block(k)``: their G gate rows, the product and the unit math, so a
layer needs no wait between its product and its cells; each worker rounds v itself), HEAD (the
logits; one slot, which also draws, unless the head has PARALLEL_MIN weights: then row blocks
and a DRAW phase). h is double-buffered (h2: the state before and after an input), so a slot
reads the old h while others write the new. A worker waits at the end of every phase until all
slots are done (spinning on a counter), and does any slot whose owner has not started or has
stalled, so it never waits for a thread that is not running (``_phase``). Each worker keeps the
same units every character, so its share of the weights stays in its core's cache. At batch 1 a
product reads every weight once, so one core is held by its cache's bandwidth (~100 GB/s a core
on the Zen 4 VM); two cores read twice as much. Against a parallel region per layer (~2-3 us
each, and the copies around them), config b: bfloat16 15.4 -> 12.6 us a character, float32 28.3
-> 24.9, int8 12.4 -> 9.7 (BENCHMARKS.md). Models under ``PARALLEL_MIN`` weights a product run
one worker (``_workers``).

Everything a worker runs is a ``leaf_kernel`` (``jit.py``): no reference counts, an atomic
instruction per array a function receives or slices, on counters both workers update (the machine
code of ``_layer_slot`` alone held 81; without them sampling took 0.91-0.97x the time, b to d, all
formats, and one worker at b ~1 us a character less; BENCHMARKS.md). So the workers allocate
nothing: a run's buffers (the state, the gate rows, each worker's work vector, the draw's sort
buffers) are allocated once, first, by ``_shared_state``.

Each weight matrix (w0, w, w_out) is followed by its row scales (s0, s, s_out). A matrix may be
float, bfloat16 stored as uint16 (half the bytes a character reads), or int8 with a float32 scale
per row (a quarter); float and bfloat16 matrices take empty scales (shape (..., 0)). The formats
are described in ``reference/weight_formats.py``. Float products (``_float_rows``) are plain
dot products, 16 columns a vector FMA (LLVM's own vectorising of the loop used half-width
registers on AVX-512: float32 sampling at b 1.18x faster this way, BENCHMARKS.md). The compact
formats round their vector first, into a work buffer: bfloat16 products (``_bf16_rows``) to
bfloat16 (``round_to_bfloat16``), then read weights and vector as pairs of bfloat16s in 32-bit
words, 32 products a ``vdot_bf16`` on AVX-512, 16 on AVX2 (``BF16_PER_DOT``;
one ``vdpbf16ps`` where the CPU has AVX-512 BF16, 0.6-0.9x the time of the alternative; elsewhere a
shift (a ``vpshufb`` in an AVX2 build for an Intel core) makes the first of each pair a float32, and
the second is the whole word, the matrix being
stored in pairs (``BF16_PAIRS``, ``weight_formats.to_bfloat16_pairs``): no widening shuffle, 0.68-0.80x
the time of widening each weight; with the mask too, a character at b and c of the AVX2 build took
1.05-1.09x the time; BENCHMARKS.md);
int8 products (``_int8_rows``) to 8-bit integers (``quantize_activations``) and take integer dot
products, 64 weights a ``vdot_u8s8`` (on x86 with VNNI one ``vpdpbusd`` a register: int8
sampling 0.88-0.92x the time on the Intel VM; without it ``vpmaddubsw`` and ``vpmaddwd``, against
two widenings, two ``vpmaddwd`` and two additions with a 16-bit vector, which this replaced; the
weights stored in excess 128, so that no ``vpxor`` flips them as they are loaded: 0.96x the time
natively on Zen 4; 8 rows at a time with AVX-512 and four rows' sums finished together as vectors,
``vadd_row_dots``: 0.83x at b on Zen 4; BENCHMARKS.md). Numba compiles one version per weight type
(``_rows`` chooses when compiling).
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..isa import bf16_pairs, byte_products
from ..jit import kernel, leaf_kernel, parallel_kernel, prange
from .activations import exp, tanh
from .aligned import aligned_empty
from .atomics import atomic_add, atomic_cas, atomic_load, spin_pause
from .cells import _gru_unit, _lstm_unit
from .simd import (BF16_PER_DOT, LANES, vadd_row_dots, vdot_bf16, vdot_u8s8, vfma, vget, vizeros, vload, vsplat,
                   vstore, vsum, vsum_bytes, vzeros)


@intrinsic
def _bf16_bits_to_float32(typingctx, u):
    """The float32 a bfloat16 (its 16 bits in a uint16, or an int16 work buffer) stands for: the
    bits shifted up 16, reinterpreted."""
    if not (isinstance(u, types.Integer) and u.bitwidth == 16):
        return None

    def codegen(context, builder, sig, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def _float32_bits(typingctx, f):
    """The 32 bits of a float32, as a uint32."""
    if f != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(f), codegen


@intrinsic
def _float32_from_bits(typingctx, u):
    """The float32 whose 32 bits an integer holds (its low 32 bits)."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)) if u.bitwidth > 32 else args[0],
                               ir.FloatType())

    return types.float32(u), codegen


def _is_int8(w):       # an int8 matrix, stored in excess 128 as uint8 (``weight_formats.to_stored_int8``)
    return isinstance(w.dtype, types.Integer) and not w.dtype.signed and w.dtype.bitwidth == 8


def _is_bf16(w):
    return isinstance(w.dtype, types.Integer) and not w.dtype.signed and w.dtype.bitwidth == 16


# int8 rows 8 at a time where a vector of dots is one register (AVX-512: 8 accumulators of 32); with
# two (AVX2: 16 registers) LLVM kept 4 of the 16 on the stack, so 4 at a time there
INT8_EIGHT_ROWS = byte_products() == "AVX-512"
BF16_PAIRS = bf16_pairs()   # bfloat16 matrices in pairs, a pair's second read as its whole word (vdot_bf16)
PARALLEL_MIN = 1 << 16  # weights in a model's largest product below which sampling runs one worker


@leaf_kernel
def _float_rows(w, x, out, begin, end, c0, c1):
    """out[begin:end] += w[begin:end, c0:c1] @ x[c0:c1].   w (R, K) float, x (K,), out (R,), one dtype;
    4 rows at a time (rows clamped at end - 1, as in the matmul tiles), LANES columns a ``vfma``
    into a vector per row, its lanes summed at the row's end (``vsum``), the rest one by one.
    (Explicit vectors, not LLVM's loop vectoriser: that one stops at 256-bit registers on
    AVX-512 CPUs, half the width; BENCHMARKS.md.)"""
    k_vec = c1 - (c1 - c0) % LANES
    last = end - 1
    for r in range(begin, end, 4):
        r1, r2, r3 = min(r + 1, last), min(r + 2, last), min(r + 3, last)
        w0, w1, w2, w3 = w[r], w[r1], w[r2], w[r3]
        a0 = a1 = a2 = a3 = vzeros(x)
        for k in range(c0, k_vec, LANES):
            xk = vload(x, k)
            a0 = vfma(vload(w0, k), xk, a0)
            a1 = vfma(vload(w1, k), xk, a1)
            a2 = vfma(vload(w2, k), xk, a2)
            a3 = vfma(vload(w3, k), xk, a3)
        d0, d1, d2, d3 = vsum(a0), vsum(a1), vsum(a2), vsum(a3)
        for k in range(k_vec, c1):
            d0 += w0[k] * x[k]
            d1 += w1[k] * x[k]
            d2 += w2[k] * x[k]
            d3 += w3[k] * x[k]
        o0, o1, o2, o3 = out[r] + d0, out[r1] + d1, out[r2] + d2, out[r3] + d3   # clamped rows repeat a row
        out[r], out[r1], out[r2], out[r3] = o0, o1, o2, o3


@leaf_kernel
def _int8_rows(q, scale, xq, step, out, begin, end, c0, c1):
    """out[begin:end] += (scale * step) * (q[begin:end, c0:c1] @ xq[c0:c1]), the dots in int32.
    q (R, K) uint8, each int8 weight in excess 128 (the byte q + 128: ``weight_formats.
    to_stored_int8``), scale (R,), xq (>= K,) int8 (x rounded by ``quantize_activations``, step its
    step), out (R,); 4 * LANES columns a ``vdot_u8s8`` (which multiplies the bytes q + 128 as they
    are: 128 * sum(xq) comes off each dot). Rows 4 at a time (clamped at end - 1), or 8 where a
    vector of dots is one register (INT8_EIGHT_ROWS); where the columns are whole vectors, four rows'
    sums are finished at once in vectors (``vadd_row_dots``), else one by one, with the columns after
    the last vector. (One row's sum at a time, 4 rows a group, made rows of 256 take 1.4x the time
    natively on Zen 4, 1.14x in its AVX2 build: BENCHMARKS.md.)"""
    k_vec = c1 - (c1 - c0) % (4 * LANES)
    sums = vizeros()
    for k in range(c0, k_vec, 4 * LANES):
        sums = vsum_bytes(sums, xq, k)
    bias = np.int32(128) * vsum(sums)
    s = out.dtype.type(step)
    whole = begin
    if INT8_EIGHT_ROWS and k_vec == c1:
        for r in range(begin, end - 7, 8):
            q0, q1, q2, q3, q4, q5, q6, q7 = q[r], q[r + 1], q[r + 2], q[r + 3], q[r + 4], q[r + 5], q[r + 6], q[r + 7]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vizeros()
            for k in range(c0, k_vec, 4 * LANES):
                a0, a1 = vdot_u8s8(a0, q0, k, xq, k), vdot_u8s8(a1, q1, k, xq, k)
                a2, a3 = vdot_u8s8(a2, q2, k, xq, k), vdot_u8s8(a3, q3, k, xq, k)
                a4, a5 = vdot_u8s8(a4, q4, k, xq, k), vdot_u8s8(a5, q5, k, xq, k)
                a6, a7 = vdot_u8s8(a6, q6, k, xq, k), vdot_u8s8(a7, q7, k, xq, k)
            vadd_row_dots(out, r, a0, a1, a2, a3, bias, scale, s)
            vadd_row_dots(out, r + 4, a4, a5, a6, a7, bias, scale, s)
            whole = r + 8
    last = end - 1
    for r in range(whole, end, 4):
        r1, r2, r3 = min(r + 1, last), min(r + 2, last), min(r + 3, last)
        q0, q1, q2, q3 = q[r], q[r1], q[r2], q[r3]
        a0 = a1 = a2 = a3 = vizeros()
        for k in range(c0, k_vec, 4 * LANES):
            a0 = vdot_u8s8(a0, q0, k, xq, k)
            a1 = vdot_u8s8(a1, q1, k, xq, k)
            a2 = vdot_u8s8(a2, q2, k, xq, k)
            a3 = vdot_u8s8(a3, q3, k, xq, k)
        if k_vec == c1 and r + 4 <= end:
            vadd_row_dots(out, r, a0, a1, a2, a3, bias, scale, s)
            continue
        d0, d1, d2, d3 = vsum(a0) - bias, vsum(a1) - bias, vsum(a2) - bias, vsum(a3) - bias
        for k in range(k_vec, c1):
            xk = np.int32(xq[k])
            d0 += (np.int32(q0[k]) - 128) * xk
            d1 += (np.int32(q1[k]) - 128) * xk
            d2 += (np.int32(q2[k]) - 128) * xk
            d3 += (np.int32(q3[k]) - 128) * xk
        # all four read before any is written: clamped rows repeat a row
        o0, o1, o2, o3 = (out[r] + scale[r] * s * d0, out[r1] + scale[r1] * s * d1,
                          out[r2] + scale[r2] * s * d2, out[r3] + scale[r3] * s * d3)
        out[r], out[r1], out[r2], out[r3] = o0, o1, o2, o3


def _stored_bf16(w, k):
    """The float32 weight w[k] of a bfloat16 row stands for: its bits shifted up 16, or where
    BF16_PAIRS and k is odd (a pair's second), the pair's 32-bit word (``weight_formats``)."""


@overload(_stored_bf16, inline="always")
def _stored_bf16_impl(w, k):
    if not BF16_PAIRS:
        return lambda w, k: _bf16_bits_to_float32(w[k])

    def paired(w, k):
        if k % 2 == 1:
            return _float32_from_bits((np.uint32(w[k]) << np.uint32(16)) | np.uint32(w[k - 1]))
        return _bf16_bits_to_float32(w[k])
    return paired


@leaf_kernel
def _bf16_rows(w, xb, out, begin, end, c0, c1):
    """out[begin:end] += w[begin:end, c0:c1] @ xb[c0:c1], both bfloat16: w (R, K) uint16 (in pairs
    where BF16_PAIRS), xb (>= K,) int16 (the vector rounded by ``round_to_bfloat16``), out (R,). The
    products are exact in float32 and summed there; 4 rows at a time, BF16_PER_DOT columns a
    ``vdot_bf16`` from the first even column (a pair's start), the columns before and after one by one."""
    first = min(c0 + c0 % 2, c1) if BF16_PAIRS else c0
    k_vec = c1 - (c1 - first) % BF16_PER_DOT
    last = end - 1
    zero = np.float32(0)
    for r in range(begin, end, 4):
        r1, r2, r3 = min(r + 1, last), min(r + 2, last), min(r + 3, last)
        w0, w1, w2, w3 = w[r], w[r1], w[r2], w[r3]
        a0 = a1 = a2 = a3 = vsplat(zero)
        for k in range(first, k_vec, BF16_PER_DOT):
            a0 = vdot_bf16(a0, w0, k, xb, k)
            a1 = vdot_bf16(a1, w1, k, xb, k)
            a2 = vdot_bf16(a2, w2, k, xb, k)
            a3 = vdot_bf16(a3, w3, k, xb, k)
        d0, d1, d2, d3 = vsum(a0), vsum(a1), vsum(a2), vsum(a3)
        for k in range(c0, first):                       # the column before the first pair (c0 odd)
            xk = _bf16_bits_to_float32(xb[k])
            d0, d1, d2, d3 = d0 + _stored_bf16(w0, k) * xk, d1 + _stored_bf16(w1, k) * xk, \
                d2 + _stored_bf16(w2, k) * xk, d3 + _stored_bf16(w3, k) * xk
        for k in range(k_vec, c1):                       # the columns after the last vector
            xk = _bf16_bits_to_float32(xb[k])
            d0, d1, d2, d3 = d0 + _stored_bf16(w0, k) * xk, d1 + _stored_bf16(w1, k) * xk, \
                d2 + _stored_bf16(w2, k) * xk, d3 + _stored_bf16(w3, k) * xk
        o0, o1, o2, o3 = out[r] + d0, out[r1] + d1, out[r2] + d2, out[r3] + d3   # clamped rows repeat a row
        out[r], out[r1], out[r2], out[r3] = o0, o1, o2, o3


@leaf_kernel
def _rounded_bfloat16(bits):
    """The top 16 bits of the bfloat16 nearest the float32 with these bits (ties to even), as int64."""
    return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16


@leaf_kernel
def round_to_bfloat16(x, xb):
    """xb[:K] = the bfloat16 nearest each x[k] (as float32 first; ties to even), its 16 bits in an
    int16: ``weight_formats.to_bfloat16``'s rule, bit for bit. x (K,) float, xb (>= K,) int16."""
    for k in range(x.shape[0]):
        xb[k] = np.int16(_rounded_bfloat16(np.int64(_float32_bits(np.float32(x[k])))))


@leaf_kernel
def _paired_bfloat16(bits, first):
    """The top half for a pair's second (the float32 ``bits``) over the first's 16 bits ``first``: of
    the two one step apart around it, the one whose word is nearer; non-finite: the plain rounding."""
    base = (bits & 0xFFFF0000) | (first & 0xFFFF)
    other = base + (-0x10000 if base > bits else 0x10000)
    exact = np.float64(_float32_from_bits(bits))
    distance_other = abs(np.float64(_float32_from_bits(other)) - exact)
    closer = distance_other < abs(np.float64(_float32_from_bits(base)) - exact)
    usable = (other >> 31 == bits >> 31) & ((other >> 23) & 0xFF != 0xFF)         # the same sign, finite
    paired = (other if usable & closer else base) >> 16
    return _rounded_bfloat16(bits) if (bits >> 23) & 0xFF == 0xFF else paired


@leaf_kernel
def round_to_bfloat16_pairs(a, stored):
    """stored = ``weight_formats.to_bfloat16_pairs(a)``, bit for bit: each row's even columns rounded
    to bfloat16, each odd one to the top half that makes its pair's 32-bit word the float32 nearest
    the weight. a (R, K) float (taken as float32 first), stored (R, K) int16."""
    K = a.shape[1]
    for r in range(a.shape[0]):
        row, out = a[r], stored[r]
        for m in range(K // 2):
            first = _rounded_bfloat16(np.int64(_float32_bits(np.float32(row[2 * m]))))
            second = _paired_bfloat16(np.int64(_float32_bits(np.float32(row[2 * m + 1]))), first)
            out[2 * m], out[2 * m + 1] = np.int16(first), np.int16(second)
        if K % 2 == 1:
            out[K - 1] = np.int16(_rounded_bfloat16(np.int64(_float32_bits(np.float32(row[K - 1])))))


@leaf_kernel
def round_to_stored_bfloat16(a, stored):
    """stored = ``weight_formats.to_stored_bfloat16(a)``: a matrix's rows rounded to bfloat16 in the
    layout this build's products read (``round_to_bfloat16_pairs`` where BF16_PAIRS, else
    ``round_to_bfloat16`` a row). a (R, K) float, stored (R, K) int16. (One kernel for both, so a
    first run's list of kernels to compile, ``precompile.py``, is the same on every CPU.)"""
    if BF16_PAIRS:
        round_to_bfloat16_pairs(a, stored)
    else:
        for r in range(a.shape[0]):
            round_to_bfloat16(a[r], stored[r])


@leaf_kernel
def round_to_int8_rows(a, q, scale):
    """q[r] = a[r] rounded to int8 with the scale scale[r] = max|a[r]| / 127: ``weight_formats.
    to_int8_rows``'s rule, bit for bit, for finite a, stored in excess 128 (``to_stored_int8``).
    a (R, K) float (taken as float32 first, as there), q (R, K) uint8, scale (R,) float32. Each
    float32 quotient (max / 127, a / scale) is made in float64 and rounded to float32: the kernels'
    fastmath may multiply by a reciprocal there, which moves the float64 result by ~2**-52 of
    itself, while a quotient of two float32s is either a float32 midpoint never or no nearer to one
    than 2**-48 of itself, so the rounding to float32 gives IEEE float32 division's result. (numpy
    took 6.4 ms for c's 3 M weights: abs, max, divide, rint, clip and a cast, each a pass.)"""
    low, high = np.float32(-127), np.float32(127)
    for r in range(a.shape[0]):
        row, out = a[r], q[r]
        largest = np.float32(_max(row, True, 0.0))    # rounding keeps the order: the largest float32
        s = np.float32(np.float64(largest) / 127.0)
        scale[r] = s
        divisor = np.float64(s) if s > 0 else 1.0       # an all-zero row stays zero
        for k in range(row.shape[0]):
            x = np.rint(np.float32(np.float64(np.float32(row[k])) / divisor))
            out[k] = np.uint8(np.int32(min(max(x, low), high)) + 128)


@leaf_kernel
def _max(x, absolute, start):
    """max(start, x[0], ..., x[K-1]) in x's dtype, of |x[k]| when ``absolute``; x (K,) float. LANES
    running maxima, then the tail: a scalar max waits for the one before it (it was three quarters
    of ``quantize_activations``' time; numpy's max took 1.65 us for 3,000 logits)."""
    K = x.shape[0]
    K_vec = K - K % LANES
    best = x.dtype.type(start)
    m = vsplat(best)
    for k in range(0, K_vec, LANES):
        v = vload(x, k)
        m = max(m, max(v, -v) if absolute else v)
    for lane in range(LANES):
        best = max(best, vget(m, lane))
    for k in range(K_vec, K):
        best = max(best, abs(x[k]) if absolute else x[k])
    return best


@leaf_kernel
def quantize_activations(x, xq):
    """xq[:K] = x rounded to 8-bit integers; returns the step (``weight_formats.py``'s rule).
    x (K,) float, xq (>= K,) int8. max|x| is taken LANES at a time (``_max``)."""
    K = x.shape[0]
    amax = np.float64(_max(x, True, 0.0))
    if amax == 0:
        xq[:K] = 0
        return 0.0
    levels = max(1, min(64, (2 ** 31 - 1) // (255 * K)))
    inv = levels / amax
    for k in range(K):
        xq[k] = np.int8(np.rint(np.float64(x[k]) * inv))
    return amax / levels


def _rounded_input(w, x, xq):
    """x rounded into xq for w's products: to 8-bit integers when w is int8 (returns the step),
    to bfloat16 when w is (returns 0.0); nothing for a float w (0.0)."""


@overload(_rounded_input, inline="always")
def _rounded_input_impl(w, x, xq):
    if _is_int8(w):
        return lambda w, x, xq: quantize_activations(x, xq.view(np.int8))
    if _is_bf16(w):
        def bf16(w, x, xq):
            round_to_bfloat16(x, xq)
            return 0.0
        return bf16
    return lambda w, x, xq: 0.0


def _rows(w, scale, x, xq, step, out, begin, end, c0, c1):
    """out[begin:end] += w[begin:end, c0:c1] @ x[c0:c1], for a matrix in any format (chosen when
    compiled): int8 from the rounded xq, step (``_int8_rows``), bfloat16 from the rounded xq
    (``_bf16_rows``), float from x (``_float_rows``)."""


@overload(_rows, inline="always")
def _rows_impl(w, scale, x, xq, step, out, begin, end, c0, c1):
    if _is_int8(w):
        return lambda w, scale, x, xq, step, out, begin, end, c0, c1: _int8_rows(w, scale, xq.view(np.int8), step,
                                                                                 out, begin, end, c0, c1)
    if _is_bf16(w):
        return lambda w, scale, x, xq, step, out, begin, end, c0, c1: _bf16_rows(w, xq, out, begin, end, c0, c1)
    return lambda w, scale, x, xq, step, out, begin, end, c0, c1: _float_rows(w, x, out, begin, end, c0, c1)


@leaf_kernel
def _layer_rows(w, scale, v, vq, step, out_x, out_h, split, Kx, begin, end):
    """Rows begin:end of a layer's product w @ v, v = [x; h] (K,), w (R, K): the rows before
    ``split`` whole into out_x; from ``split`` on in two halves, w[:, :Kx] @ x into out_x and
    w[:, Kx:] @ h into out_h (the GRU's n rows; LSTM and RNN pass split = R)."""
    K = w.shape[1]
    whole_end = min(end, split)
    if begin < whole_end:
        _rows(w, scale, v, vq, step, out_x, begin, whole_end, 0, K)
    halves_begin = max(begin, split)
    if halves_begin < end:
        _rows(w, scale, v, vq, step, out_x, halves_begin, end, 0, Kx)
        _rows(w, scale, v, vq, step, out_h, halves_begin, end, Kx, K)


WALK_BLOCK = 4 * LANES   # probabilities _draw_in_order sums at a time before it walks one by one


@leaf_kernel
def _draw_in_order(p, target):
    """``_sample_index``'s walk when nothing is cut: the first index v at which p[0] + ... + p[v]
    exceeds target (u times their sum), else the last. p (V,) probabilities, unnormalised. Whole
    blocks of WALK_BLOCK are summed in vectors and skipped while the sum stays at or below target;
    the block that passes it is walked one by one (a running sum one addition at a time waits on
    the one before: 3,000 probabilities took ~2 us that way)."""
    V = p.shape[0]
    running, start = 0.0, 0
    while start + WALK_BLOCK <= V:
        block = vload(p, start)
        for k in range(start + LANES, start + WALK_BLOCK, LANES):
            block = block + vload(p, k)
        total = running + vsum(block)
        if total > target:
            break
        running, start = total, start + WALK_BLOCK
    for v in range(start, V):
        running += p[v]
        if running > target:
            return v
    return V - 1


@leaf_kernel
def _first_max(x):
    """The index of x's first maximum (``np.argmax``): the maximum in vectors (``_max``), then the
    first index that holds it (np.argmax's own loop took 0.7 ns a number, 2.1 us for 3,000)."""
    best = _max(x, False, x[0])
    for v in range(x.shape[0]):
        if x[v] == best:
            return v
    return np.argmax(x)        # a NaN maximum, which equals nothing (with NaNs the two may differ)


@leaf_kernel
def _sort_by_decreasing(p, order, merged, m):
    """order[:m] sorted by decreasing p[order[q]], ties in their order in order[:m] (stable): a
    bottom-up merge sort (runs of 1, 2, 4, ... merged, the left run first on ties); p (V,), order,
    merged (>= m,) int64, merged a work buffer. Written out because Numba's own argsort took ~1.2 s
    to compile, a tenth of the first sample's wait (and allocates its result)."""
    src, dst, passes = order, merged, 0
    width = 1
    while width < m:
        for lo in range(0, m, 2 * width):
            mid, hi = min(lo + width, m), min(lo + 2 * width, m)
            i, j = lo, mid
            for k in range(lo, hi):
                if j >= hi or (i < mid and p[src[i]] >= p[src[j]]):
                    dst[k] = src[i]
                    i += 1
                else:
                    dst[k] = src[j]
                    j += 1
        src, dst = dst, src
        width *= 2
        passes += 1
    if passes % 2:          # the last pass wrote merged
        for k in range(m):
            order[k] = src[k]


@leaf_kernel
def _by_decreasing(p, order, merged):
    """order[:] = the indices of p (V,) by decreasing value, ties by index: ``np.argsort(-p,
    kind="stable")``; order, merged (V,) int64, merged a work buffer."""
    for k in range(p.shape[0]):
        order[k] = k
    _sort_by_decreasing(p, order, merged, p.shape[0])


@leaf_kernel
def _count_and_mass(p, t):
    """(how many, their sum) of the p[v] >= t; p (V,), t of p's dtype. Written without a branch
    (a count of bools, a sum of p times them) so that LLVM vectorises it: 0.22 us for 3,000
    numbers, 3.5 with an ``if``."""
    count, mass = 0, p.dtype.type(0)
    for v in range(p.shape[0]):
        at_least = p[v] >= t
        count += np.int64(at_least)
        mass += p[v] * at_least
    return count, mass


SLACK = 8          # candidates _head_threshold may leave beyond the fewest that hold the kept indices
BISECTIONS = 64    # at most: then the head may hold more (probabilities crowded near 0, denormals)


@leaf_kernel
def _head_threshold(p, top_k, top_p):
    """A threshold t (p's dtype): the indices with p[v] >= t are the head of the rank order
    (decreasing p, ties by index; every index tied at t is in), holding at least top_k indices
    (when top_k > 0) or a mass of at least top_p (when top_p < 1), whichever head is shorter, and
    at most SLACK more than the shortest such head (unless ties make that impossible, or BISECTIONS
    run out). Bisection between 0 and max(p), a ``_count_and_mass`` a step. p (V,) probabilities. The mass is asked
    1e-6 above top_p: the running sum in rank order, which decides, may differ from the vectorised
    one in its last bits (the caller checks it anyway)."""
    V = p.shape[0]
    want_count = top_k if top_k > 0 else V + 1
    want_mass = top_p * (1.0 + 1e-6) if top_p < 1 else 2.0
    lo, hi = p.dtype.type(0), _max(p, False, p[0])
    count, mass = _count_and_mass(p, hi)
    if count >= want_count or mass >= want_mass:
        return hi
    count_lo, count_hi = V, count
    for _ in range(BISECTIONS):
        if count_lo - count_hi <= SLACK:
            break
        mid = (lo + hi) * p.dtype.type(0.5)
        if not lo < mid < hi:
            break                              # ties: no threshold between lo and hi
        count, mass = _count_and_mass(p, mid)
        if count >= want_count or mass >= want_mass:
            lo, count_lo = mid, count
        else:
            hi, count_hi = mid, count
    return lo


@leaf_kernel
def _kept(p, order, m, keep, top_p):
    """(kept, sure): how many of the ranked indices order[:m] the rule keeps, at most ``keep`` (the
    top_k cut), then the shortest prefix of mass >= top_p when top_p < 1: the running sum in rank
    order. sure is False when order[:m] may be too short to tell (the cut lies beyond it)."""
    if top_p < 1:
        running = 0.0
        for q in range(min(keep, m)):
            running += p[order[q]]
            if running >= top_p:
                return q + 1, True
    return min(keep, m), m >= keep


@leaf_kernel
def _ranked_head(p, keep, top_p, order, merged):
    """How many indices the rule keeps, with order[:kept] those indices by decreasing p (ties by
    index): the indices at or above ``_head_threshold`` (a few dozen of 3,000 with a top_p of 0.95,
    say) gathered in index order and sorted, instead of all V (a full sort took 72 us a character
    for V = 3,000, 1.1 us for 65). All V are sorted only when that head proves too short."""
    V = p.shape[0]
    t = _head_threshold(p, keep if keep < V else 0, top_p)
    m = 0
    for v in range(V):
        if p[v] >= t:
            order[m] = v
            m += 1
    _sort_by_decreasing(p, order, merged, m)
    kept, sure = _kept(p, order, m, keep, top_p)
    if sure:
        return kept
    _by_decreasing(p, order, merged)
    return _kept(p, order, V, keep, top_p)[0]


@leaf_kernel
def _sample_index(logits, u, temperature, top_k, top_p, p, order, merged):
    """One index from logits (V,) by the rule of ``reference/sampling.py``; p (V,) float and order,
    merged (V,) int64 are work buffers."""
    V = logits.shape[0]
    if temperature <= 0:
        return _first_max(logits)
    scale = p.dtype.type(1.0 / temperature)         # in p's dtype: float32's exp is the fast one
    z_max = _max(logits, False, logits[0]) * scale
    total = p.dtype.type(0)
    for v in range(V):
        p[v] = exp(logits[v] * scale - z_max)
        total += p[v]
    keep = V if top_k <= 0 else min(top_k, V)
    if keep == V and top_p >= 1:
        return _draw_in_order(p, u * total)      # nothing is cut: the indices in order, no sort
    for v in range(V):
        p[v] /= total
    keep = _ranked_head(p, keep, top_p, order, merged)   # decreasing probability, ties by index
    kept_total = 0.0
    for q in range(keep):
        kept_total += p[order[q]]
    target = u * kept_total
    running = 0.0
    for q in range(keep):
        running += p[order[q]]
        if running > target:
            return order[q]
    return order[keep - 1]


# ----------------------------------------------------------------------------- the workers

LSTM, GRU, RNN = 0, 1, 2     # the cell a worker runs
FEED, HEAD, DRAW = 0, 1, 2   # the kinds of phase
LINE = 8                     # int64s a cache line: each counter of ``sync`` on a line of its own
DONE, CLAIMED = 0, LINE      # sync[DONE]: slots done; sync[CLAIMED + LINE*k]: phases slot k was claimed for;
                             # sync[CLAIMED + LINE*(workers + k)]: 1 once worker k has started
STEAL_AFTER = 1 << 12        # spins a worker waits for a present worker's slot before doing it itself


@leaf_kernel
def _fill(out, first, second, add, begin, end):
    """out[begin:end] = first[begin:end] (+ second[begin:end] when ``add``), LANES at a time."""
    j = begin
    while j + LANES <= end:
        vstore(out, j, vload(first, j) + vload(second, j) if add else vload(first, j))
        j += LANES
    for j in range(j, end):
        out[j] = first[j] + second[j] if add else first[j]


@leaf_kernel
def _block(slot, slots, size):
    """(begin, end) of slot's share of range(size) cut into ``slots`` blocks of whole SIMD vectors."""
    per = ((size + LANES - 1) // LANES + slots - 1) // slots * LANES
    begin = min(slot * per, size)
    return begin, min(begin + per, size)


# The unit math of units u0:u1 from their gate rows, one kernel a cell (each run compiles only its own):
# LANES units at a time on SIMD vectors, the rest one by one. gx, gh (G*H,); h_prev, h_new, c (H,).

@leaf_kernel
def _lstm_units(u0, u1, gx, gh, h_prev, h_new, c, relu):
    """``cells.py``'s ``_lstm_unit``: gx = i, f, g, o; c updated in place."""
    H = h_prev.shape[0]
    j = u0
    while j + LANES <= u1:
        _, _, _, _, cj, hj = _lstm_unit(vload(gx, j), vload(gx, H + j), vload(gx, 2 * H + j), vload(gx, 3 * H + j),
                                        vload(c, j))
        vstore(c, j, cj)
        vstore(h_new, j, hj)
        j += LANES
    for j in range(j, u1):
        _, _, _, _, c[j], h_new[j] = _lstm_unit(gx[j], gx[H + j], gx[2 * H + j], gx[3 * H + j], c[j])


@leaf_kernel
def _gru_units(u0, u1, gx, gh, h_prev, h_new, c, relu):
    """``cells.py``'s ``_gru_unit``: gx = r, z (whole products) and n's input part; gh = b_hr, b_hz and
    n's recurrent part."""
    H = h_prev.shape[0]
    one = h_prev.dtype.type(1)
    j = u0
    while j + LANES <= u1:
        _, _, _, hj = _gru_unit(vload(gx, j), vload(gx, H + j), vload(gh, j), vload(gh, H + j),
                                vload(gx, 2 * H + j), vload(gh, 2 * H + j), vload(h_prev, j), one)
        vstore(h_new, j, hj)
        j += LANES
    for j in range(j, u1):
        _, _, _, h_new[j] = _gru_unit(gx[j], gx[H + j], gh[j], gh[H + j], gx[2 * H + j], gh[2 * H + j], h_prev[j],
                                      one)


@leaf_kernel
def _rnn_units(u0, u1, gx, gh, h_prev, h_new, c, relu):
    """h = tanh(gx), or relu(gx) when ``relu``."""
    zero = h_prev.dtype.type(0)
    j = u0
    while j + LANES <= u1:
        vstore(h_new, j, max(vload(gx, j), zero) if relu else tanh(vload(gx, j)))
        j += LANES
    for j in range(j, u1):
        h_new[j] = max(gx[j], zero) if relu else tanh(gx[j])


def _units(cell, u0, u1, gx, gh, h_prev, h_new, c, relu):
    """The unit math of ``cell`` (LSTM, GRU, RNN) for units u0:u1: its ``_*_units`` kernel."""


@overload(_units, inline="always", prefer_literal=True)
def _units_impl(cell, u0, u1, gx, gh, h_prev, h_new, c, relu):
    if not isinstance(cell, types.IntegerLiteral):  # the entry points pass a constant: one cell compiled
        return None
    if cell.literal_value == LSTM:
        return lambda cell, u0, u1, gx, gh, h_prev, h_new, c, relu: _lstm_units(u0, u1, gx, gh, h_prev, h_new, c,
                                                                                relu)
    if cell.literal_value == GRU:
        return lambda cell, u0, u1, gx, gh, h_prev, h_new, c, relu: _gru_units(u0, u1, gx, gh, h_prev, h_new, c,
                                                                               relu)
    return lambda cell, u0, u1, gx, gh, h_prev, h_new, c, relu: _rnn_units(u0, u1, gx, gh, h_prev, h_new, c, relu)


@leaf_kernel
def _layer_slot(cell, relu, model, layer, index, u0, u1, h_in, h_out, c, gx, gh, v, vq):
    """Units u0:u1 of one layer for input ``index``: their G gate rows each (the bias, plus the table row
    x0[index] at layer 0, plus the product w @ [x; h_in[layer]], x = h_out[layer - 1]), then their unit
    math (``_units``) into h_out[layer] (and c[layer]). h_in, h_out (L, H): the state before and after
    this input; gx, gh (G*H,): the gate rows, shared by the workers (the GRU's n rows in halves: the input
    part in gx, the recurrent part in gh, whose r, z rows hold b_hh: ``_gru_unit``'s b_r, b_z); v, vq:
    this worker's work vector and its rounding (each worker rounds the vector itself)."""
    x0, w0, s0, w, s, b_ih, b_hh = model[:7]
    H = h_in.shape[1]
    G = gx.shape[0] // H
    if layer == 0:
        matrix, scales, Kx = w0, s0, 0
    else:
        matrix, scales, Kx = w[layer - 1], s[layer - 1], H
        _fill(v, h_out[layer - 1], h_out[layer - 1], False, 0, H)
    _fill(v[Kx:], h_in[layer], h_in[layer], False, 0, H)
    vector = v[:Kx + H]
    step = _rounded_input(matrix, vector, vq)
    for gate in range(G):
        begin, end = gate * H + u0, gate * H + u1
        _fill(gx, b_ih[layer], x0[index], layer == 0, begin, end)
        if cell == GRU:
            _fill(gh, b_hh[layer], b_hh[layer], False, begin, end)
        _layer_rows(matrix, scales, vector, vq, step, gx, gh, 2 * H if cell == GRU else G * H, Kx, begin, end)
    _units(cell, u0, u1, gx, gh, h_in[layer], h_out[layer], c[layer], relu)


@leaf_kernel
def _head_slots(model, workers):
    """How many workers share the head's product: all of them from PARALLEL_MIN weights on, else one."""
    return workers if model[7].size >= PARALLEL_MIN else 1


@leaf_kernel
def _slot(kind, slot, workers, layer, index, n, parity, cell, relu, model, state, draw, v, vq):
    """One worker's share of a phase. FEED: units ``_block(slot)`` of ``layer`` for ``index``, from state
    h2[parity] to h2[1 - parity]. HEAD: rows ``_block(slot)`` of the logits from the top layer's h (and
    the draw of out[n] too, by slot 0, when the head is not shared). DRAW: out[n], by slot 0."""
    h2, c, gx, gh, logits, p, order, merged = state
    if kind == FEED:
        u0, u1 = _block(slot, workers, h2.shape[2])
        if u0 < u1:
            _layer_slot(cell, relu, model, layer, index, u0, u1, h2[parity], h2[1 - parity], c, gx, gh, v, vq)
        return
    uniforms, temperature, top_k, top_p = draw[:4]
    head_slots = _head_slots(model, workers)
    if kind == HEAD and slot < head_slots:
        w_out, s_out, b_out = model[7:]
        h_top = h2[parity][-1]
        H = h_top.shape[0]
        r0, r1 = _block(slot, head_slots, logits.shape[0])
        _fill(logits, b_out, b_out, False, r0, r1)
        _fill(v, h_top, h_top, False, 0, H)
        step = _rounded_input(w_out, v[:H], vq)
        _rows(w_out, s_out, v[:H], vq, step, logits, r0, r1, 0, H)
    if slot == 0 and (kind == DRAW or head_slots == 1):
        # draw[4][n], not a name unpacked from draw: Numba 0.68 dropped the store to that as dead
        draw[4][n] = _sample_index(logits, uniforms[n], temperature, top_k, top_p, p, order, merged)


@leaf_kernel
def _phase(g, me, workers, sync, kind, layer, index, n, parity, cell, relu, model, state, draw, v, vq):
    """Phase g of the run, for worker ``me``: claim and do its own slot, then wait until every slot of the
    phase is done. While it waits it does any slot still unclaimed whose owner has not started yet
    (its ``arrived`` counter is 0), or that has waited STEAL_AFTER spins (an owner the OS put to sleep),
    so no worker ever waits for one that is not running: a claimed slot is being done by a running
    thread. (One call of ``_slot``: Numba's compile time grows with each.)"""
    arrived = CLAIMED + LINE * workers
    slot, spins = np.int64(me), 0
    mine = atomic_cas(sync, CLAIMED + LINE * me, g, g + 1)
    while True:
        if mine:
            _slot(kind, slot, workers, layer, index, n, parity, cell, relu, model, state, draw, v, vq)
            atomic_add(sync, DONE, 1)
            mine = False
        if atomic_load(sync, DONE) >= (g + 1) * workers:
            return
        spin_pause()
        spins += 1
        for k in range(workers):
            late = spins >= STEAL_AFTER or atomic_load(sync, arrived + LINE * k) == 0
            if late and atomic_load(sync, CLAIMED + LINE * k) == g and atomic_cas(sync, CLAIMED + LINE * k, g, g + 1):
                slot, mine = np.int64(k), True
                break


@leaf_kernel
def _worker(me, workers, sync, cell, relu, model, state, work, prime, draw):
    """Worker ``me`` of ``workers``: walks every phase of the run in order, doing its slots (``_phase``):
    each index of prime fed through the L layers (FEED), then for each character the head (HEAD), the
    draw when the head is shared (DRAW), and the feed of the drawn index (not after the last). Returns
    the parity of the state buffer h2 that holds the final h."""
    h2, out = state[0], draw[4]
    L = h2.shape[1]
    v, vq = work[0][me], work[1][me]
    atomic_add(sync, CLAIMED + LINE * workers + LINE * me, 1)       # arrived
    sample_phases = 1 if _head_slots(model, workers) == 1 else 2    # HEAD (with the draw), or HEAD, DRAW
    # g and parity int64 from the start, not constants (jit.py): _phase would compile twice
    g, parity, n, index = np.int64(0), np.int64(0), 0, 0        # index: set at each layer 0, before use
    P, N = prime.shape[0], out.shape[0]
    for step in range(P + N):
        sampling = step >= P
        n = step - P if sampling else 0
        heads = sample_phases if sampling else 0
        feeds = L if not sampling or step < P + N - 1 else 0
        for q in range(heads + feeds):
            layer = q - heads
            kind = HEAD + q if layer < 0 else FEED
            if layer == 0:
                index = out[n] if sampling else prime[step]
            _phase(g, me, workers, sync, kind, layer, index, n, parity, cell, relu, model, state, draw, v, vq)
            g += 1
        if feeds:
            parity = 1 - parity
    return parity


def _workers(w0, w, w_out) -> int:
    """One worker per thread (``numba.get_num_threads()``) when some product of the model has
    PARALLEL_MIN weights, else one. (Asked here, in Python: a kernel that asks is not cached.)"""
    largest = max(w0.size, w[0].size if len(w) else 0, w_out.size)
    return numba.get_num_threads() if largest >= PARALLEL_MIN else 1


@leaf_kernel
def _copy_state(out, h):
    """out[:] = h, (L, H) both (a loop of ``_fill``: Numba's slice assignment takes ~1 s to compile)."""
    for layer in range(h.shape[0]):
        _fill(out[layer], h[layer], h[layer], False, 0, h.shape[1])


@kernel
def _shared_state(model, h, c, workers):
    """(sync, state, work, parity) for a run of ``workers``: sync the counters of ``_phase`` (zeros);
    state = (h2, c, gx, gh, logits, p, order, merged): h2 (2, L, H) the state before and after an input
    (h2[0] = h), c (L, H) or (L, 0), the gate rows gx, gh (G*H,), the head's logits and probabilities
    (V,) and the draw's sort buffers (V,) int64; work = (v, vq): each worker's work vector v[k] = [x; h]
    (2H, h's dtype) and its rounding vq[k] (int16: bfloat16 bits; an int8 product reads it as bytes, a
    ``view``), rows padded to whole cache lines; parity (workers,) for what each ``_worker``
    returns. Everything a run allocates is allocated here: the workers are leaf kernels."""
    L, H = h.shape
    h2 = aligned_empty((2, L, H), h.dtype)
    _copy_state(h2[0], h)
    gates, V = model[1].shape[0], model[7].shape[0]
    state = (h2, c, aligned_empty((gates,), h.dtype), aligned_empty((gates,), h.dtype),
             aligned_empty((V,), h.dtype), aligned_empty((V,), h.dtype), np.empty(V, np.int64), np.empty(V, np.int64))
    width = (2 * H + 31) // 32 * 32     # a row of 32 numbers is whole cache lines in every dtype used
    work = (aligned_empty((workers, width), h.dtype), aligned_empty((workers, width), np.int16))
    sync = aligned_empty((LINE * (1 + 2 * workers),), np.int64)   # whole cache lines: shared with no other data
    for i in range(sync.shape[0]):
        sync[i] = 0
    return sync, state, work, np.zeros(workers, np.int64)


# One entry point a cell, each with its cell as a constant (``_units`` compiles that cell's math only;
# a cell passed from Python with ``numba.literally`` cost ~7 ms of dispatch a call). model = (x0, w0,
# s0, w, s, b_ih, b_hh, w_out, s_out, b_out); draw = (uniforms, temperature, top_k, top_p, out).
# ``np.int64(me)``: prange's index is an int64 where Numba types the kernel and a uint64 in the
# region's own function, and each would compile _worker and all below it (3 s more) by itself.

@parallel_kernel
def _lstm_run(model, h, c, prime, draw, workers):
    sync, state, work, parity = _shared_state(model, h, c, workers)
    for me in prange(workers):
        parity[me] = _worker(np.int64(me), workers, sync, LSTM, False, model, state, work, prime, draw)
    _copy_state(h, state[0][parity[0]])


@parallel_kernel
def _gru_run(model, h, prime, draw, workers):
    sync, state, work, parity = _shared_state(model, h, np.empty((h.shape[0], 0), h.dtype), workers)
    for me in prange(workers):
        parity[me] = _worker(np.int64(me), workers, sync, GRU, False, model, state, work, prime, draw)
    _copy_state(h, state[0][parity[0]])


@parallel_kernel
def _rnn_run(model, relu, h, prime, draw, workers):
    sync, state, work, parity = _shared_state(model, h, np.empty((h.shape[0], 0), h.dtype), workers)
    for me in prange(workers):
        parity[me] = _worker(np.int64(me), workers, sync, RNN, relu, model, state, work, prime, draw)
    _copy_state(h, state[0][parity[0]])


def lstm_generate(x0, w0, s0, w, s, b, w_out, s_out, b_out, h, c, prime, uniforms, temperature, top_k, top_p,
                  out):
    """Batch-1 LSTM sampling (see the module docstring). Fills out (N,) int64; updates h, c (L, H)."""
    _lstm_run((x0, w0, s0, w, s, b, b, w_out, s_out, b_out), h, c, prime, (uniforms, temperature, top_k, top_p, out),
              _workers(w0, w, w_out))


def gru_generate(x0, w0, s0, w, s, b_ih, b_hh, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k,
                 top_p, out):
    """Batch-1 GRU sampling (see the module docstring). Fills out (N,) int64; updates h (L, H)."""
    _gru_run((x0, w0, s0, w, s, b_ih, b_hh, w_out, s_out, b_out), h, prime, (uniforms, temperature, top_k, top_p, out),
             _workers(w0, w, w_out))


def rnn_generate(x0, w0, s0, w, s, b, relu, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p,
                 out):
    """Batch-1 RNN sampling (see the module docstring). Fills out (N,) int64; updates h (L, H)."""
    _rnn_run((x0, w0, s0, w, s, b, b, w_out, s_out, b_out), bool(relu), h, prime,
             (uniforms, temperature, top_k, top_p, out), _workers(w0, w, w_out))
