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

Per layer and character, the gates start from the bias (plus the table row x0[index] at layer 0,
``_layer_inputs``), x and h are copied side by side into a work vector v (``_gates``; layer 0's x
is empty), then one product w @ v runs (the GRU's n rows in two halves, ``_layer_rows``). One
product of K = 2H columns instead of two of H: int8 rows run faster over a longer K (one 1,024 x 512
product takes about 0.8x the time of two 1,024 x 256 ones, BENCHMARKS.md), and the work vector is
rounded for int8 once.

Threads: a layer's product is shared between the threads by blocks of ``BLOCK_ROWS`` gate rows
(``_gates_in_blocks``, one parallel region per layer and character; it and the kernels that
lead to it are compiled in the process, not cached on their own: ``jit.py`` says why); the head's
product is cut the same way when it is as large (a vocabulary of thousands: Chinese text); the unit
math (on SIMD vectors, 16 units a call, as in ``sequence.py``) and the draw stay on one thread.
At batch 1 a product reads every weight once, so one core is held by its cache's bandwidth
(~22 GFLOP/s here); two cores read twice as much (measured: 1,024 x 512 weights 44 -> 25 us).
Products under ``PARALLEL_MIN`` weights (small models) stay on one thread, where a parallel
region (~2 us) would cost more than it saves.

Each weight matrix (w0, w, w_out) is followed by its row scales (s0, s, s_out). A matrix may be
float, bfloat16 stored as uint16 (half the bytes a character reads), or int8 with a float32 scale
per row (a quarter); float and bfloat16 matrices take empty scales (shape (..., 0)). The formats
are described in ``reference/weight_formats.py``. Float products (``_float_rows``) are plain
dot products. The compact formats round their vector first, into a work buffer: bfloat16 products
(``_bf16_rows``) to bfloat16 (``round_to_bfloat16``), then read weights and vector as pairs of
bfloat16s in 32-bit words, 32 products a ``vdot_bf16`` on AVX-512, 16 on AVX2 (``BF16_PER_DOT``;
one ``vdpbf16ps`` where the CPU has AVX-512 BF16, 0.6-0.9x the time of the alternative; elsewhere a
shift or a mask makes each half a float32: no widening shuffle; 0.68-0.80x the time of widening
each weight; BENCHMARKS.md);
int8 products (``_int8_rows``) to 8-bit integers (``quantize_activations``) and take integer dot
products, 64 weights a ``vdot_u8s8`` (on x86, per 32: ``vpxor``, ``vpmaddubsw``, ``vpmaddwd``;
against two widenings, two ``vpmaddwd`` and two additions with a 16-bit vector, which this
replaced; BENCHMARKS.md). Numba compiles one version per weight type (``_rows`` chooses when
compiling).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..jit import inner_kernel, inner_parallel_kernel, kernel, prange
from .activations import exp, tanh
from .aligned import aligned_empty
from .cells import _gru_unit, _lstm_unit
from .simd import (BF16_PER_DOT, LANES, vdot_bf16, vdot_u8s8, vget, vizeros, vload, vsplat, vstore, vsum,
                   vsum_bytes)


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


def _is_int8(w):
    return isinstance(w.dtype, types.Integer) and w.dtype.signed and w.dtype.bitwidth == 8


def _is_bf16(w):
    return isinstance(w.dtype, types.Integer) and not w.dtype.signed and w.dtype.bitwidth == 16


BLOCK_ROWS = 64         # gate rows per parallel work item (a multiple of 4)
PARALLEL_MIN = 1 << 16  # weights in a layer's two products below which they run on one thread


@kernel
def _float_rows(w, x, out, begin, end, c0, c1):
    """out[begin:end] += w[begin:end, c0:c1] @ x[c0:c1].   w (R, K) float, x (K,), out (R,);
    4 rows at a time (rows clamped at end - 1, as in the matmul tiles)."""
    last = end - 1
    xs = x[c0:c1]          # indexed from 0: an index known >= 0 lets LLVM vectorise (no wraparound test)
    for r in range(begin, end, 4):
        r1, r2, r3 = min(r + 1, last), min(r + 2, last), min(r + 3, last)
        w0, w1, w2, w3 = w[r][c0:c1], w[r1][c0:c1], w[r2][c0:c1], w[r3][c0:c1]
        s0, s1, s2, s3 = out[r], out[r1], out[r2], out[r3]
        for k in range(c1 - c0):
            s0 += w0[k] * xs[k]
            s1 += w1[k] * xs[k]
            s2 += w2[k] * xs[k]
            s3 += w3[k] * xs[k]
        out[r], out[r1], out[r2], out[r3] = s0, s1, s2, s3


@kernel
def _int8_rows(q, scale, xq, step, out, begin, end, c0, c1):
    """out[begin:end] += (scale * step) * (q[begin:end, c0:c1] @ xq[c0:c1]), the dots in int32.
    q (R, K) int8, scale (R,), xq (>= K,) int8 (x rounded by ``quantize_activations``, step its
    step), out (R,); 4 rows at a time, 4 * LANES columns a ``vdot_u8s8`` (which multiplies q + 128:
    128 * sum(xq) comes off each dot), the rest one by one."""
    k_vec = c1 - (c1 - c0) % (4 * LANES)
    sums = vizeros()
    for k in range(c0, k_vec, 4 * LANES):
        sums = vsum_bytes(sums, xq, k)
    bias = np.int32(128) * vsum(sums)
    last = end - 1
    for r in range(begin, end, 4):
        r1, r2, r3 = min(r + 1, last), min(r + 2, last), min(r + 3, last)
        q0, q1, q2, q3 = q[r], q[r1], q[r2], q[r3]
        a0 = a1 = a2 = a3 = vizeros()
        for k in range(c0, k_vec, 4 * LANES):
            a0 = vdot_u8s8(a0, q0, k, xq, k)
            a1 = vdot_u8s8(a1, q1, k, xq, k)
            a2 = vdot_u8s8(a2, q2, k, xq, k)
            a3 = vdot_u8s8(a3, q3, k, xq, k)
        d0, d1, d2, d3 = vsum(a0) - bias, vsum(a1) - bias, vsum(a2) - bias, vsum(a3) - bias
        for k in range(k_vec, c1):
            xk = np.int32(xq[k])
            d0 += np.int32(q0[k]) * xk
            d1 += np.int32(q1[k]) * xk
            d2 += np.int32(q2[k]) * xk
            d3 += np.int32(q3[k]) * xk
        s = out.dtype.type(step)     # all four read before any is written: clamped rows repeat a row
        o0, o1, o2, o3 = (out[r] + scale[r] * s * d0, out[r1] + scale[r1] * s * d1,
                          out[r2] + scale[r2] * s * d2, out[r3] + scale[r3] * s * d3)
        out[r], out[r1], out[r2], out[r3] = o0, o1, o2, o3


@kernel
def _bf16_rows(w, xb, out, begin, end, c0, c1):
    """out[begin:end] += w[begin:end, c0:c1] @ xb[c0:c1], both bfloat16: w (R, K) uint16, xb (>= K,)
    int16 (the vector rounded by ``round_to_bfloat16``), out (R,). The products are exact in float32
    and summed there; 4 rows at a time, BF16_PER_DOT columns a ``vdot_bf16``, the rest one by one."""
    k_vec = c1 - (c1 - c0) % BF16_PER_DOT
    last = end - 1
    zero = np.float32(0)
    for r in range(begin, end, 4):
        r1, r2, r3 = min(r + 1, last), min(r + 2, last), min(r + 3, last)
        w0, w1, w2, w3 = w[r], w[r1], w[r2], w[r3]
        a0 = a1 = a2 = a3 = vsplat(zero)
        for k in range(c0, k_vec, BF16_PER_DOT):
            a0 = vdot_bf16(a0, w0, k, xb, k)
            a1 = vdot_bf16(a1, w1, k, xb, k)
            a2 = vdot_bf16(a2, w2, k, xb, k)
            a3 = vdot_bf16(a3, w3, k, xb, k)
        d0, d1, d2, d3 = vsum(a0), vsum(a1), vsum(a2), vsum(a3)
        for k in range(k_vec, c1):
            xk = _bf16_bits_to_float32(xb[k])
            d0 += _bf16_bits_to_float32(w0[k]) * xk
            d1 += _bf16_bits_to_float32(w1[k]) * xk
            d2 += _bf16_bits_to_float32(w2[k]) * xk
            d3 += _bf16_bits_to_float32(w3[k]) * xk
        o0, o1, o2, o3 = out[r] + d0, out[r1] + d1, out[r2] + d2, out[r3] + d3   # clamped rows repeat a row
        out[r], out[r1], out[r2], out[r3] = o0, o1, o2, o3


@kernel
def round_to_bfloat16(x, xb):
    """xb[:K] = the bfloat16 nearest each x[k] (as float32 first; ties to even), its 16 bits in an
    int16: ``weight_formats.to_bfloat16``'s rule, bit for bit. x (K,) float, xb (>= K,) int16."""
    for k in range(x.shape[0]):
        bits = np.uint64(_float32_bits(np.float32(x[k])))
        xb[k] = np.int16((bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16))


@kernel
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


@kernel
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
        return lambda w, x, xq: quantize_activations(x, _as_bytes(xq))
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
        return lambda w, scale, x, xq, step, out, begin, end, c0, c1: _int8_rows(w, scale, _as_bytes(xq), step,
                                                                                 out, begin, end, c0, c1)
    if _is_bf16(w):
        return lambda w, scale, x, xq, step, out, begin, end, c0, c1: _bf16_rows(w, xq, out, begin, end, c0, c1)
    return lambda w, scale, x, xq, step, out, begin, end, c0, c1: _float_rows(w, x, out, begin, end, c0, c1)


@kernel
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


@inner_kernel
def _gates(w, scale, x, h, v, vq, out_x, out_h, split):
    """out_x (and out_h) += a layer's product w @ [x; h] (``_layer_rows``), w (R, len(x) + len(h)):
    x and h are copied side by side into the work vector v, rounded into vq for an int8 w (v, vq:
    work buffers of at least that length). On this thread when w holds fewer than PARALLEL_MIN
    weights, else shared between the threads (``_gates_in_blocks``)."""
    Kx = x.shape[0]
    K = Kx + h.shape[0]
    v[:Kx] = x
    v[Kx:K] = h
    v_layer = v[:K]
    step = _rounded_input(w, v_layer, vq)
    R = w.shape[0]
    if R * K < PARALLEL_MIN:
        _layer_rows(w, scale, v_layer, vq, step, out_x, out_h, split, Kx, 0, R)
    else:
        _gates_in_blocks(w, scale, v_layer, vq, step, out_x, out_h, split, Kx)


@inner_parallel_kernel
def _gates_in_blocks(w, scale, v, vq, step, out_x, out_h, split, Kx):
    """``_gates``' product with the rows cut into blocks of about BLOCK_ROWS, one parallel region."""
    R = w.shape[0]
    n_blocks = (R + BLOCK_ROWS - 1) // BLOCK_ROWS
    rows = (R + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        r0 = block * rows
        _layer_rows(w, scale, v, vq, step, out_x, out_h, split, Kx, r0, min(r0 + rows, R))


@kernel
def _draw_in_order(p, u):
    """``_sample_index``'s walk when nothing is cut: the first index v at which p[0] + ... + p[v]
    exceeds u * sum(p) (the walk over ``order`` below with order = 0, 1, ..., V-1, without reading
    the indices: 3,000 characters 3.1 -> 1.5 us). p (V,) probabilities."""
    total = 0.0
    for v in range(p.shape[0]):
        total += p[v]
    target = u * total
    running = 0.0
    for v in range(p.shape[0]):
        running += p[v]
        if running > target:
            return v
    return p.shape[0] - 1


@kernel
def _sample_index(logits, u, temperature, top_k, top_p, p):
    """One index from logits (V,) by the rule of ``reference/sampling.py``; p (V,) is a work buffer."""
    V = logits.shape[0]
    if temperature <= 0:
        return np.argmax(logits)
    for v in range(V):
        p[v] = logits[v] / temperature
    z_max = _max(p, False, p[0])
    total = 0.0
    for v in range(V):
        p[v] = exp(p[v] - z_max)
        total += p[v]
    for v in range(V):
        p[v] /= total
    keep = V if top_k <= 0 else min(top_k, V)
    if keep == V and top_p >= 1:
        return _draw_in_order(p, u)              # nothing is cut: the indices in order, no sort
    order = np.argsort(-p, kind="mergesort")     # decreasing probability, ties by index (stable)
    if top_p < 1:
        running = 0.0
        for q in range(keep):
            running += p[order[q]]
            if running >= top_p:
                keep = q + 1
                break
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


@inner_kernel
def _head_sample(w_out, s_out, b_out, h_top, v, vq, u, temperature, top_k, top_p, logits, p):
    """The next index: logits = b_out + w_out @ h_top (a product like a layer's, ``_gates``: shared
    between the threads for a large vocabulary), then ``_sample_index``'s draw; logits, p (V,): work."""
    logits[:] = b_out
    _gates(w_out, s_out, h_top[:0], h_top, v, vq, logits, logits, logits.shape[0])
    return _sample_index(logits, u, temperature, top_k, top_p, p)


@kernel
def _work_buffers(h):
    """A layer's work vector v = [x; h] (2H, h's dtype) and its rounding (also the head's): int16
    (bfloat16 bits; an int8 product reads it as bytes, ``_as_bytes``)."""
    return aligned_empty((2 * h.shape[1],), h.dtype), aligned_empty((2 * h.shape[1],), np.int16)


@kernel
def _as_bytes(xq):
    """The int16 rounding buffer xq as int8 (twice as many), for a vector rounded to bytes."""
    return xq.view(np.int8)


@kernel
def _layer_inputs(x0, w0, s0, w, s, b, h, layer, index, gates):
    """gates[:] = the layer's bias b[layer], plus its table row x0[index] at layer 0; returns (the
    layer's matrix, its row scales, x): layer 0's w0, s0 and an empty x (its input product is the
    table row), else w[layer - 1], s[layer - 1] and h of the layer below."""
    if layer == 0:
        for j in range(gates.shape[0]):
            gates[j] = b[0, j] + x0[index, j]
        return w0, s0, h[0, :0]
    gates[:] = b[layer]
    return w[layer - 1], s[layer - 1], h[layer - 1]


@inner_kernel
def _lstm_step(x0, w0, s0, w, s, b, h, c, index, gates, v, vq):
    """Feed one input index through every layer; h, c (L, H) updated in place."""
    L, H = h.shape
    for layer in range(L):
        matrix, scales, x = _layer_inputs(x0, w0, s0, w, s, b, h, layer, index, gates)
        _gates(matrix, scales, x, h[layer], v, vq, gates, gates, 4 * H)
        hl, cl = h[layer], c[layer]
        for j in range(0, H - H % LANES, LANES):         # 16 units at a time (SIMD vectors)
            _, _, _, _, cj, hj = _lstm_unit(vload(gates, j), vload(gates, H + j), vload(gates, 2 * H + j),
                                            vload(gates, 3 * H + j), vload(cl, j))
            vstore(cl, j, cj)
            vstore(hl, j, hj)
        for j in range(H - H % LANES, H):                # the rest, one at a time
            _, _, _, _, cl[j], hl[j] = _lstm_unit(gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j], cl[j])


@kernel
def lstm_generate(x0, w0, s0, w, s, b, w_out, s_out, b_out, h, c, prime, uniforms, temperature, top_k,
                  top_p, out):
    """Batch-1 LSTM sampling (see the module docstring). Fills out (N,) int64; updates h, c (L, H)."""
    gates = aligned_empty((w0.shape[0],), h.dtype)
    logits = aligned_empty((w_out.shape[0],), h.dtype)
    p = aligned_empty((w_out.shape[0],), h.dtype)
    v, vq = _work_buffers(h)
    for index in prime:
        _lstm_step(x0, w0, s0, w, s, b, h, c, index, gates, v, vq)
    for n in range(out.shape[0]):
        out[n] = _head_sample(w_out, s_out, b_out, h[-1], v, vq, uniforms[n], temperature, top_k, top_p, logits, p)
        if n + 1 < out.shape[0]:
            _lstm_step(x0, w0, s0, w, s, b, h, c, out[n], gates, v, vq)


@inner_kernel
def _gru_step(x0, w0, s0, w, s, b_ih, b_hh, h, index, gi, gh, v, vq):
    L, H = h.shape
    one = h.dtype.type(1)
    for layer in range(L):
        matrix, scales, x = _layer_inputs(x0, w0, s0, w, s, b_ih, h, layer, index, gi)
        gh[:] = b_hh[layer]   # the r, z rows of gh keep b_hh (their products go to gi): the b_r, b_z of _gru_unit
        _gates(matrix, scales, x, h[layer], v, vq, gi, gh, 2 * H)
        hl = h[layer]
        for j in range(0, H - H % LANES, LANES):         # 16 units at a time (SIMD vectors)
            _, _, _, hj = _gru_unit(vload(gi, j), vload(gi, H + j), vload(gh, j), vload(gh, H + j),
                                    vload(gi, 2 * H + j), vload(gh, 2 * H + j), vload(hl, j), one)
            vstore(hl, j, hj)
        for j in range(H - H % LANES, H):                # the rest, one at a time
            _, _, _, hl[j] = _gru_unit(gi[j], gi[H + j], gh[j], gh[H + j], gi[2 * H + j], gh[2 * H + j], hl[j], one)


@kernel
def gru_generate(x0, w0, s0, w, s, b_ih, b_hh, w_out, s_out, b_out, h, prime, uniforms, temperature,
                 top_k, top_p, out):
    """Batch-1 GRU sampling (see the module docstring). Fills out (N,) int64; updates h (L, H)."""
    gi = aligned_empty((w0.shape[0],), h.dtype)
    gh = aligned_empty((w0.shape[0],), h.dtype)
    logits = aligned_empty((w_out.shape[0],), h.dtype)
    p = aligned_empty((w_out.shape[0],), h.dtype)
    v, vq = _work_buffers(h)
    for index in prime:
        _gru_step(x0, w0, s0, w, s, b_ih, b_hh, h, index, gi, gh, v, vq)
    for n in range(out.shape[0]):
        out[n] = _head_sample(w_out, s_out, b_out, h[-1], v, vq, uniforms[n], temperature, top_k, top_p, logits, p)
        if n + 1 < out.shape[0]:
            _gru_step(x0, w0, s0, w, s, b_ih, b_hh, h, out[n], gi, gh, v, vq)


@inner_kernel
def _rnn_step(x0, w0, s0, w, s, b, relu, h, index, pre, v, vq):
    L, H = h.shape
    zero = h.dtype.type(0)
    for layer in range(L):
        matrix, scales, x = _layer_inputs(x0, w0, s0, w, s, b, h, layer, index, pre)
        _gates(matrix, scales, x, h[layer], v, vq, pre, pre, H)
        for j in range(H):
            h[layer, j] = max(pre[j], zero) if relu else tanh(pre[j])


@kernel
def rnn_generate(x0, w0, s0, w, s, b, relu, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k,
                 top_p, out):
    """Batch-1 RNN sampling (see the module docstring). Fills out (N,) int64; updates h (L, H)."""
    pre = aligned_empty((w0.shape[0],), h.dtype)
    logits = aligned_empty((w_out.shape[0],), h.dtype)
    p = aligned_empty((w_out.shape[0],), h.dtype)
    v, vq = _work_buffers(h)
    for index in prime:
        _rnn_step(x0, w0, s0, w, s, b, relu, h, index, pre, v, vq)
    for n in range(out.shape[0]):
        out[n] = _head_sample(w_out, s_out, b_out, h[-1], v, vq, uniforms[n], temperature, top_k, top_p, logits, p)
        if n + 1 < out.shape[0]:
            _rnn_step(x0, w0, s0, w, s, b, relu, h, out[n], pre, v, vq)
