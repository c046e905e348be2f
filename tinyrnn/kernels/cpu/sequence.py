"""A whole recurrent layer (one direction) with the time loop inside Numba.

Same names, arguments and math as ``reference/sequence.py`` (read that first: it is the spec).
Shapes: ``T`` steps, batch ``B``, hidden ``H``, ``G`` gates (LSTM 4, GRU 3, RNN 1);
``xproj (T, B, G*H)``, ``w_hh (G*H, H)`` (PyTorch's layout), ``hs (T+1, B, H)``.

How it is fast
--------------
The hidden units are split into chunks of ``CHUNK`` (64) contiguous units, the parallel work items
(``prange``). Every step is ONE parallel region, because the thread that owns units ``u0 .. u1``
needs, within a step, nothing computed by another thread:

* Forward: it computes only *its* gate columns of the recurrent matmul,
  ``acts[:, g*H + j] = xproj + h_{t-1} @ W_hh[g*H + j].T`` for every gate ``g`` (the
  pre-activations, written straight into ``acts_out``), then the gate math in place and ``c_t``,
  ``h_t`` of its units. No two threads write the same element.
* Backward: the region of step ``t`` first computes ``dh = dgates_t @ W_hh`` (the gradient w.r.t.
  ``h_{t-1}``) for its units, then the gate gradients of step ``t-1`` for the same units, which
  need only that ``dh`` and ``dc`` of those units. So the elementwise part of step ``t-1`` is fused
  into the matmul region of step ``t``: ``T + 1`` regions in all instead of ``2T``.

The recurrent matmul is a register-tiled dot-product form (``_matmul_nt``: 4 batch rows x 4 weight
rows = 16 running sums, the ``k`` loop vectorised; ``fastmath`` lets LLVM reassociate the sums),
over ``W_hh`` in PyTorch's layout for the forward (each output row contiguous along ``k``) and over
``W_hh.T`` (copied once per call) for the backward. It runs one ``UNITS``-wide block of weight rows
at a time so they stay in L1 while all batch rows pass over them; at these shapes it reaches
130-170 GFLOP/s on one core, as fast as OpenBLAS or faster.

The gate math runs in loops over *views* indexed from 0 (``i = acts[b, u0:u1]``;
``for j in range(u1 - u0)``), which LLVM vectorises. Indexing ``acts[b, 2*H + j]`` instead keeps
the loop scalar and 10x slower (Numba wraps negative indices around, and LLVM cannot prove
``2*H + j >= 0``); slicing inline rather than in a helper function avoids reference-count calls.

Nothing is allocated inside the time loops; float32 uses the fast sigmoid/tanh (``activations.py``),
float64 exact math.

Batch-1 generation
------------------
``lstm_generate``, ``gru_generate``, ``rnn_generate`` sample from a stacked unidirectional
character model (embedding -> L layers -> linear head) with no Python per character::

    lstm_generate(embedding[V,E], w_ih0[4H,E], w_ih[L-1,4H,H], w_hh[L,4H,H], b[L,4H],
                  w_out[V,H], b_out[V], h[L,H], c[L,H], prime[P], uniforms[N],
                  temperature, top_k, top_p, out[N])
    gru_generate(embedding, w_ih0[3H,E], w_ih[L-1,3H,H], w_hh[L,3H,H], b_ih[L,3H], b_hh[L,3H],
                 w_out, b_out, h[L,H], prime, uniforms, temperature, top_k, top_p, out)
    rnn_generate(embedding, w_ih0[H,E], w_ih[L-1,H,H], w_hh[L,H,H], b[L,H], relu,
                 w_out, b_out, h[L,H], prime, uniforms, temperature, top_k, top_p, out)

Per-layer weights are stacked on a leading layer axis (layer 0's input weights ``w_ih0`` apart,
since they read the embedding; ``w_ih`` has shape ``(0, G*H, H)`` for one layer). LSTM/RNN take
``b = b_ih + b_hh``. ``h`` (``c``) hold the initial state and are updated in place. The model reads
``prime`` (P >= 1 indices), then writes ``N = len(out)`` sampled indices, one uniform of ``uniforms``
each; on return the state is the one after reading ``prime`` and ``out[:-1]`` (to continue, pass
``out[-1:]`` as the next prime). Sampling rule (``sample_index`` in the reference):
temperature <= 0 is argmax; otherwise softmax(z / temperature), top-k, then top-p (nucleus) over
the indices sorted by decreasing probability, and the first kept index whose running probability
sum exceeds ``u * (kept sum)``. Single-threaded: at batch 1 a matrix-vector product is too small
to share between threads.
"""
import numpy as np

from ..jit import kernel, parallel_kernel, prange
from .activations import sigmoid, tanh

UNITS = 8       # weight rows per matmul block: 8 beat 16 by 20% for the backward at H=512 (K = 2048)
CHUNK = 64      # hidden units per parallel work item: a multiple of UNITS, and 256 bytes of float32
                # (two threads never write the same cache line); H = 128 gives 2 items, one per thread


@kernel
def _matmul_nt(a, w, w_row0, n, init, out, out_col0):
    """out[:, out_col0 + i] = init[:, out_col0 + i] + a @ w[w_row0 + i]  for 0 <= i < n.
    a (M, K), w (., K), init and out (M, .); init may be out itself (accumulate).

    Register tile: 4 rows of ``a`` x 4 rows of ``w`` = 16 running sums, the k loop vectorised
    (``fastmath`` lets LLVM reassociate the sums). At the edges the row indices are clamped
    (``min``), so a tile may compute an element twice; all 16 sums are loaded before any is
    stored, so a duplicate stores the same value.
    """
    M, K = a.shape
    for m in range(0, M, 4):
        m0, m1, m2, m3 = m, min(m + 1, M - 1), min(m + 2, M - 1), min(m + 3, M - 1)
        for i in range(0, n, 4):
            i1, i2, i3 = min(i + 1, n - 1), min(i + 2, n - 1), min(i + 3, n - 1)
            r0, r1, r2, r3 = w_row0 + i, w_row0 + i1, w_row0 + i2, w_row0 + i3
            c0, c1, c2, c3 = out_col0 + i, out_col0 + i1, out_col0 + i2, out_col0 + i3
            s00, s01, s02, s03 = init[m0, c0], init[m0, c1], init[m0, c2], init[m0, c3]
            s10, s11, s12, s13 = init[m1, c0], init[m1, c1], init[m1, c2], init[m1, c3]
            s20, s21, s22, s23 = init[m2, c0], init[m2, c1], init[m2, c2], init[m2, c3]
            s30, s31, s32, s33 = init[m3, c0], init[m3, c1], init[m3, c2], init[m3, c3]
            for k in range(K):
                x0, x1, x2, x3 = a[m0, k], a[m1, k], a[m2, k], a[m3, k]
                y0, y1, y2, y3 = w[r0, k], w[r1, k], w[r2, k], w[r3, k]
                s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3  # noqa: E702
                s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3  # noqa: E702
                s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3  # noqa: E702
                s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3  # noqa: E702
            out[m0, c0], out[m0, c1], out[m0, c2], out[m0, c3] = s00, s01, s02, s03
            out[m1, c0], out[m1, c1], out[m1, c2], out[m1, c3] = s10, s11, s12, s13
            out[m2, c0], out[m2, c1], out[m2, c2], out[m2, c3] = s20, s21, s22, s23
            out[m3, c0], out[m3, c1], out[m3, c2], out[m3, c3] = s30, s31, s32, s33


@kernel
def _gates_matmul(h, w, H, u0, u1, gate0, gate1, init, out):
    """out[:, g*H + j] = init[:, g*H + j] + h @ w[g*H + j]  for gates gate0 <= g < gate1, units
    u0 <= j < u1; one UNITS-wide block at a time, so its weight rows stay in L1 while every row of
    ``h`` passes over them."""
    for g in range(gate0, gate1):
        for j0 in range(u0, u1, UNITS):
            _matmul_nt(h, w, g * H + j0, min(UNITS, u1 - j0), init, out, g * H + j0)


@kernel
def _transpose(w):
    """A C-contiguous copy of w.T, (R, C) -> (C, R), in 16 x 16 tiles (4x faster than
    ``np.ascontiguousarray(w.T)`` at (2048, 512), whose column reads miss the cache)."""
    R, C = w.shape
    out = np.empty((C, R), w.dtype)
    for r0 in range(0, R, 16):
        for c0 in range(0, C, 16):
            for c in range(c0, min(c0 + 16, C)):
                for r in range(r0, min(r0 + 16, R)):
                    out[c, r] = w[r, c]
    return out


# ---------------------------------------------------------------------------------------- LSTM

@parallel_kernel
def lstm_sequence_forward(xproj, w_hh, h0, c0, hs_out, cs_out, acts_out):
    """xproj (T, B, 4H), w_hh (4H, H), h0, c0 (B, H) -> hs_out, cs_out (T+1, B, H), acts_out (T, B, 4H)."""
    T = xproj.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    cs_out[0, :, :] = c0
    n_chunks = (H + CHUNK - 1) // CHUNK
    for t in range(T):
        h_prev, c_prev, acts, h, c = hs_out[t], cs_out[t], acts_out[t], hs_out[t + 1], cs_out[t + 1]
        for part in prange(n_chunks):
            u0, u1 = part * CHUNK, min(part * CHUNK + CHUNK, H)
            # acts[:, gate*H + j] = xproj + h_prev @ W_hh[gate*H + j].T: the pre-activations, for now
            _gates_matmul(h_prev, w_hh, H, u0, u1, 0, 4, xproj[t], acts)
            # i, f, g, o = sigmoid, sigmoid, tanh, sigmoid (in place);  c = f * c_prev + i * g;  h = o * tanh(c)
            n = u1 - u0
            for b in range(B):
                a = acts[b]
                i, f, g, o = a[u0:u1], a[H + u0:H + u1], a[2 * H + u0:2 * H + u1], a[3 * H + u0:3 * H + u1]
                cp, cn, hn = c_prev[b, u0:u1], c[b, u0:u1], h[b, u0:u1]
                for j in range(n):
                    i[j] = sigmoid(i[j])
                for j in range(n):
                    f[j] = sigmoid(f[j])
                for j in range(n):
                    g[j] = tanh(g[j])
                for j in range(n):
                    o[j] = sigmoid(o[j])
                for j in range(n):
                    cn[j] = f[j] * cp[j] + i[j] * g[j]
                for j in range(n):
                    hn[j] = o[j] * tanh(cn[j])


@parallel_kernel
def lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, dgates_out, dh0_out, dc0_out):
    """w_hh (4H, H); hs, cs (T+1, B, H); acts (T, B, 4H); dhs (T, B, H); dh_n, dc_n (B, H)
    -> dgates_out (T, B, 4H), dh0_out, dc0_out (B, H).

    dh0_out and dc0_out serve as the running dh, dc (gradients w.r.t. the state after step t)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    one = dh_n.dtype.type(1)
    w_hh_t = _transpose(w_hh)      # (H, 4H): row j = the weights that h_j feeds
    zeros = np.zeros((B, H), dh_n.dtype)
    dh, dc = dh0_out, dc0_out
    dh[:, :] = dh_n
    dc[:, :] = dc_n
    n_chunks = (H + CHUNK - 1) // CHUNK
    for t in range(T, -1, -1):
        # one parallel region per step: dh w.r.t. h_t, then the gate gradients of step t-1
        for part in prange(n_chunks):
            u0, u1 = part * CHUNK, min(part * CHUNK + CHUNK, H)
            if t < T:       # dh = dgates_t @ W_hh for this chunk's units (dh_n before the first step)
                for j0 in range(u0, u1, UNITS):
                    _matmul_nt(dgates_out[t], w_hh_t, j0, min(UNITS, u1 - j0), zeros, dh, j0)
            if t > 0:       # gate gradients of step s = t-1 for the same units: they need only their dh, dc
                s, n = t - 1, u1 - u0
                # dh_s = dh + dhs;  dc_s = dc + dh_s * o * (1 - tanh(c)^2);  do = dh_s * tanh(c) * o(1-o);
                # di = dc_s * g * i(1-i);  df = dc_s * c_prev * f(1-f);  dg = dc_s * i * (1-g^2);
                # dc_{s-1} = dc_s * f.
                for b in range(B):
                    a, d = acts[s, b], dgates_out[s, b]
                    i, f, g, o = a[u0:u1], a[H + u0:H + u1], a[2 * H + u0:2 * H + u1], a[3 * H + u0:3 * H + u1]
                    di, df, dg, do = d[u0:u1], d[H + u0:H + u1], d[2 * H + u0:2 * H + u1], d[3 * H + u0:3 * H + u1]
                    dh_s, dc_s, dh_out = dh[b, u0:u1], dc[b, u0:u1], dhs[s, b, u0:u1]
                    c, c_prev = cs[s + 1, b, u0:u1], cs[s, b, u0:u1]
                    for j in range(n):
                        dh_s[j] += dh_out[j]
                    for j in range(n):
                        tanh_c = tanh(c[j])
                        do[j] = dh_s[j] * tanh_c * o[j] * (one - o[j])
                        dc_s[j] += dh_s[j] * o[j] * (one - tanh_c * tanh_c)
                    for j in range(n):
                        di[j] = dc_s[j] * g[j] * i[j] * (one - i[j])
                        df[j] = dc_s[j] * c_prev[j] * f[j] * (one - f[j])
                        dg[j] = dc_s[j] * i[j] * (one - g[j] * g[j])
                        dc_s[j] *= f[j]


# ----------------------------------------------------------------------------------------- GRU

@parallel_kernel
def gru_sequence_forward(xproj, w_hh, b_hh, h0, hs_out, acts_out, ghn_out):
    """xproj (T, B, 3H) (with b_ih), w_hh (3H, H), b_hh (3H,), h0 (B, H)
    -> hs_out (T+1, B, H), acts_out (T, B, 3H) = (r, z, n), ghn_out (T, B, H) = h_t @ W_hn.T + b_hn."""
    T = xproj.shape[0]
    B, H = h0.shape
    one = h0.dtype.type(1)
    hs_out[0, :, :] = h0
    n_chunks = (H + CHUNK - 1) // CHUNK
    for t in range(T):
        x, h_prev, h, acts, ghn = xproj[t], hs_out[t], hs_out[t + 1], acts_out[t], ghn_out[t]
        for part in prange(n_chunks):
            u0, u1 = part * CHUNK, min(part * CHUNK + CHUNK, H)
            # acts[:, r and z] = gi_{r,z} + h_prev @ W_h{r,z}.T (b_h{r,z} added below);
            # ghn = b_hn + h_prev @ W_hn.T
            _gates_matmul(h_prev, w_hh, H, u0, u1, 0, 2, x, acts)
            for b in range(B):
                ghn[b, u0:u1] = b_hh[2 * H + u0:2 * H + u1]
            for j0 in range(u0, u1, UNITS):
                _matmul_nt(h_prev, w_hh, 2 * H + j0, min(UNITS, u1 - j0), ghn, ghn, j0)
            # r, z = sigmoid(pre + b_h);  n = tanh(gi_n + r * ghn);  h = (1 - z) * n + z * h_prev
            m = u1 - u0
            b_r, b_z = b_hh[u0:u1], b_hh[H + u0:H + u1]
            for b in range(B):
                a = acts[b]
                r, z, n = a[u0:u1], a[H + u0:H + u1], a[2 * H + u0:2 * H + u1]
                gi_n, gh_n, hp, hn = x[b, 2 * H + u0:2 * H + u1], ghn[b, u0:u1], h_prev[b, u0:u1], h[b, u0:u1]
                for j in range(m):
                    r[j] = sigmoid(r[j] + b_r[j])
                for j in range(m):
                    z[j] = sigmoid(z[j] + b_z[j])
                for j in range(m):
                    n[j] = tanh(gi_n[j] + r[j] * gh_n[j])
                for j in range(m):
                    hn[j] = (one - z[j]) * n[j] + z[j] * hp[j]


@parallel_kernel
def gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, dgi_out, dgh_out, dh0_out):
    """w_hh (3H, H); hs (T+1, B, H); acts (T, B, 3H); ghn, dhs (T, B, H); dh_n (B, H)
    -> dgi_out, dgh_out (T, B, 3H), dh0_out (B, H) (also the running dh)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    one = dh_n.dtype.type(1)
    w_hh_t = _transpose(w_hh)      # (H, 3H)
    dh = dh0_out
    dh[:, :] = dh_n
    n_chunks = (H + CHUNK - 1) // CHUNK
    for t in range(T, -1, -1):
        for part in prange(n_chunks):
            u0, u1 = part * CHUNK, min(part * CHUNK + CHUNK, H)
            if t < T:       # dh (= the direct path dh_t * z, left below) += dgh_t @ W_hh
                for j0 in range(u0, u1, UNITS):
                    _matmul_nt(dgh_out[t], w_hh_t, j0, min(UNITS, u1 - j0), dh, dh, j0)
            if t > 0:       # gate gradients of step s = t-1 for this chunk's units
                s, m = t - 1, u1 - u0
                # dh_s = dh + dhs;  dn = dh_s (1-z)(1-n^2);  dr = dn * ghn * r(1-r);
                # dz = dh_s (h_prev - n) z(1-z);  dgi = (dr, dz, dn), dgh = (dr, dz, dn * r);  dh = dh_s * z
                for b in range(B):
                    a, di, dg = acts[s, b], dgi_out[s, b], dgh_out[s, b]
                    r, z, n = a[u0:u1], a[H + u0:H + u1], a[2 * H + u0:2 * H + u1]
                    dgi_r, dgi_z, dgi_n = di[u0:u1], di[H + u0:H + u1], di[2 * H + u0:2 * H + u1]
                    dgh_r, dgh_z, dgh_n = dg[u0:u1], dg[H + u0:H + u1], dg[2 * H + u0:2 * H + u1]
                    gh_n, h_prev, dh_out, dh_s = ghn[s, b, u0:u1], hs[s, b, u0:u1], dhs[s, b, u0:u1], dh[b, u0:u1]
                    for j in range(m):
                        dh_s[j] += dh_out[j]
                    for j in range(m):
                        dn = dh_s[j] * (one - z[j]) * (one - n[j] * n[j])
                        dr = dn * gh_n[j] * r[j] * (one - r[j])
                        dz = dh_s[j] * (h_prev[j] - n[j]) * z[j] * (one - z[j])
                        dgi_r[j], dgi_z[j], dgi_n[j] = dr, dz, dn
                        dgh_r[j], dgh_z[j], dgh_n[j] = dr, dz, dn * r[j]
                        dh_s[j] *= z[j]


# ----------------------------------------------------------------------------------------- RNN

@parallel_kernel
def rnn_sequence_forward(xproj, w_hh, h0, hs_out, relu):
    """xproj (T, B, H), w_hh (H, H), h0 (B, H) -> hs_out (T+1, B, H); h = tanh or relu of the pre-activation."""
    T = xproj.shape[0]
    B, H = h0.shape
    zero = h0.dtype.type(0)
    hs_out[0, :, :] = h0
    n_chunks = (H + CHUNK - 1) // CHUNK
    for t in range(T):
        h_prev, h = hs_out[t], hs_out[t + 1]
        for part in prange(n_chunks):
            u0, u1 = part * CHUNK, min(part * CHUNK + CHUNK, H)
            _gates_matmul(h_prev, w_hh, H, u0, u1, 0, 1, xproj[t], h)   # h = the pre-activation, for now
            for b in range(B):
                hn = h[b, u0:u1]
                if relu:
                    for j in range(u1 - u0):
                        hn[j] = max(hn[j], zero)
                else:
                    for j in range(u1 - u0):
                        hn[j] = tanh(hn[j])


@parallel_kernel
def rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, dpre_out, dh0_out):
    """w_hh (H, H); hs (T+1, B, H); dhs (T, B, H); dh_n (B, H) -> dpre_out (T, B, H), dh0_out (B, H)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    zero, one = dh_n.dtype.type(0), dh_n.dtype.type(1)
    w_hh_t = _transpose(w_hh)
    zeros = np.zeros((B, H), dh_n.dtype)
    dh = dh0_out
    dh[:, :] = dh_n
    n_chunks = (H + CHUNK - 1) // CHUNK
    for t in range(T, -1, -1):
        for part in prange(n_chunks):
            u0, u1 = part * CHUNK, min(part * CHUNK + CHUNK, H)
            if t < T:       # dh = dpre_t @ W_hh
                for j0 in range(u0, u1, UNITS):
                    _matmul_nt(dpre_out[t], w_hh_t, j0, min(UNITS, u1 - j0), zeros, dh, j0)
            if t > 0:       # dpre_s = (dh + dhs) * (1 - h^2), or masked by h > 0 for relu; s = t-1
                s, n = t - 1, u1 - u0
                for b in range(B):
                    h, dh_s, dh_out, dpre = hs[s + 1, b, u0:u1], dh[b, u0:u1], dhs[s, b, u0:u1], dpre_out[s, b, u0:u1]
                    for j in range(n):
                        dh_s[j] += dh_out[j]
                    if relu:
                        for j in range(n):
                            dpre[j] = dh_s[j] if h[j] > zero else zero
                    else:
                        for j in range(n):
                            dpre[j] = dh_s[j] * (one - h[j] * h[j])


# ---------------------------------------------------------------------------------- generation

@kernel
def _matvec_acc(w, x, out):
    """out += w @ x.   w (R, K), x (K,), out (R,); 4 rows at a time (clamped like _matmul_nt_acc)."""
    R, K = w.shape
    for r in range(0, R, 4):
        r1, r2, r3 = min(r + 1, R - 1), min(r + 2, R - 1), min(r + 3, R - 1)
        w0, w1, w2, w3 = w[r], w[r1], w[r2], w[r3]
        s0, s1, s2, s3 = out[r], out[r1], out[r2], out[r3]
        for k in range(K):
            s0 += w0[k] * x[k]
            s1 += w1[k] * x[k]
            s2 += w2[k] * x[k]
            s3 += w3[k] * x[k]
        out[r], out[r1], out[r2], out[r3] = s0, s1, s2, s3


@kernel
def _sample_index(logits, u, temperature, top_k, top_p, p):
    """One index from logits (V,) by the rule in the module docstring; p (V,) is a work buffer."""
    V = logits.shape[0]
    if temperature <= 0:
        return np.argmax(logits)
    for v in range(V):
        p[v] = logits[v] / temperature
    z_max = p.max()
    total = 0.0
    for v in range(V):
        p[v] = np.exp(p[v] - z_max)
        total += p[v]
    for v in range(V):
        p[v] /= total
    order = np.argsort(-p, kind="mergesort")     # decreasing probability, ties by index (stable)
    keep = V if top_k <= 0 else min(top_k, V)
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


@kernel
def _head_sample(w_out, b_out, h_top, u, temperature, top_k, top_p, logits, p):
    logits[:] = b_out
    _matvec_acc(w_out, h_top, logits)
    return _sample_index(logits, u, temperature, top_k, top_p, p)


@kernel
def _lstm_step(embedding, w_ih0, w_ih, w_hh, b, h, c, index, gates):
    """Feed one input index through every layer; h, c (L, H) updated in place."""
    L, _, H = w_hh.shape
    for layer in range(L):
        gates[:] = b[layer]
        if layer == 0:
            _matvec_acc(w_ih0, embedding[index], gates)
        else:
            _matvec_acc(w_ih[layer - 1], h[layer - 1], gates)
        _matvec_acc(w_hh[layer], h[layer], gates)
        for j in range(H):
            i = sigmoid(gates[j])
            f = sigmoid(gates[H + j])
            g = tanh(gates[2 * H + j])
            o = sigmoid(gates[3 * H + j])
            c[layer, j] = f * c[layer, j] + i * g
            h[layer, j] = o * tanh(c[layer, j])


@kernel
def lstm_generate(embedding, w_ih0, w_ih, w_hh, b, w_out, b_out, h, c, prime, uniforms,
                  temperature, top_k, top_p, out):
    """Batch-1 LSTM sampling (see the module docstring). Fills out (N,) int64; updates h, c (L, H)."""
    gates = np.empty(w_hh.shape[1], h.dtype)
    logits = np.empty(w_out.shape[0], h.dtype)
    p = np.empty(w_out.shape[0], h.dtype)
    for index in prime:
        _lstm_step(embedding, w_ih0, w_ih, w_hh, b, h, c, index, gates)
    for n in range(out.shape[0]):
        out[n] = _head_sample(w_out, b_out, h[-1], uniforms[n], temperature, top_k, top_p, logits, p)
        if n + 1 < out.shape[0]:
            _lstm_step(embedding, w_ih0, w_ih, w_hh, b, h, c, out[n], gates)


@kernel
def _gru_step(embedding, w_ih0, w_ih, w_hh, b_ih, b_hh, h, index, gi, gh):
    L, _, H = w_hh.shape
    one = h.dtype.type(1)
    for layer in range(L):
        gi[:] = b_ih[layer]
        if layer == 0:
            _matvec_acc(w_ih0, embedding[index], gi)
        else:
            _matvec_acc(w_ih[layer - 1], h[layer - 1], gi)
        gh[:] = b_hh[layer]
        _matvec_acc(w_hh[layer], h[layer], gh)
        for j in range(H):
            r = sigmoid(gi[j] + gh[j])
            z = sigmoid(gi[H + j] + gh[H + j])
            n = tanh(gi[2 * H + j] + r * gh[2 * H + j])
            h[layer, j] = (one - z) * n + z * h[layer, j]


@kernel
def gru_generate(embedding, w_ih0, w_ih, w_hh, b_ih, b_hh, w_out, b_out, h, prime, uniforms,
                 temperature, top_k, top_p, out):
    """Batch-1 GRU sampling (see the module docstring). Fills out (N,) int64; updates h (L, H)."""
    gi = np.empty(w_hh.shape[1], h.dtype)
    gh = np.empty(w_hh.shape[1], h.dtype)
    logits = np.empty(w_out.shape[0], h.dtype)
    p = np.empty(w_out.shape[0], h.dtype)
    for index in prime:
        _gru_step(embedding, w_ih0, w_ih, w_hh, b_ih, b_hh, h, index, gi, gh)
    for n in range(out.shape[0]):
        out[n] = _head_sample(w_out, b_out, h[-1], uniforms[n], temperature, top_k, top_p, logits, p)
        if n + 1 < out.shape[0]:
            _gru_step(embedding, w_ih0, w_ih, w_hh, b_ih, b_hh, h, out[n], gi, gh)


@kernel
def _rnn_step(embedding, w_ih0, w_ih, w_hh, b, relu, h, index, pre):
    L, _, H = w_hh.shape
    zero = h.dtype.type(0)
    for layer in range(L):
        pre[:] = b[layer]
        if layer == 0:
            _matvec_acc(w_ih0, embedding[index], pre)
        else:
            _matvec_acc(w_ih[layer - 1], h[layer - 1], pre)
        _matvec_acc(w_hh[layer], h[layer], pre)
        for j in range(H):
            h[layer, j] = max(pre[j], zero) if relu else tanh(pre[j])


@kernel
def rnn_generate(embedding, w_ih0, w_ih, w_hh, b, relu, w_out, b_out, h, prime, uniforms,
                 temperature, top_k, top_p, out):
    """Batch-1 RNN sampling (see the module docstring). Fills out (N,) int64; updates h (L, H)."""
    pre = np.empty(w_hh.shape[1], h.dtype)
    logits = np.empty(w_out.shape[0], h.dtype)
    p = np.empty(w_out.shape[0], h.dtype)
    for index in prime:
        _rnn_step(embedding, w_ih0, w_ih, w_hh, b, relu, h, index, pre)
    for n in range(out.shape[0]):
        out[n] = _head_sample(w_out, b_out, h[-1], uniforms[n], temperature, top_k, top_p, logits, p)
        if n + 1 < out.shape[0]:
            _rnn_step(embedding, w_ih0, w_ih, w_hh, b, relu, h, out[n], pre)
