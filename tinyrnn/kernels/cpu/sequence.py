"""A whole recurrent layer (one direction) with the time loop inside Numba.

Same names, arguments and math as ``reference/sequence.py`` (read that first: it is the spec).
Shapes: ``T`` steps, batch ``B``, hidden ``H``, ``G`` gates (LSTM 4, GRU 3, RNN 1);
``xproj (T, B, G*H)``, ``w_hh (G*H, H)`` (PyTorch's layout), ``hs (T+1, B, H)``.

How it is fast
--------------
Forward, per time step, ONE parallel region over blocks of ``UNITS`` hidden units. The thread that
owns units ``j0 .. j0+nj`` computes only *their* gate rows of the recurrent matmul,
``h_{t-1} @ W_hh[rows].T`` (rows ``gate*H + j`` for every gate), adds ``xproj``, applies the gate
math and writes ``c_t``, ``h_t`` for those units. Matmul and gates are fused; the matmul is split
over output columns, so no two threads write the same element. The activated gates are stored in
``acts_out``; the pre-activations go to a work buffer allocated once per call.

``W_hh`` in PyTorch's layout has each output row contiguous along ``k``, so the matmul is a
register-tiled dot-product form (``_matmul_nt_acc``: 4 batch rows x 4 weight rows = 16 running
sums, the ``k`` loop vectorised; ``fastmath`` lets LLVM reassociate the sums).

Backward, per step, two parallel regions over unit blocks: (1) elementwise, gate gradients of step
``t`` from ``dh``/``dc``; (2) ``dh_{t-1} = dgates_t @ W_hh`` for the block's units, which is a
dot-product form again over ``W_hh.T`` (copied to ``(H, G*H)`` once per call).

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

UNITS = 16      # hidden units per parallel block (a multiple of the 4-row tile)


@kernel
def _matmul_nt_acc(a, w, w_row0, n, out, out_col0):
    """out[:, out_col0 + i] += a @ w[w_row0 + i]  for 0 <= i < n.     a (M, K), w (., K), out (M, .)

    Register tile: 4 rows of ``a`` x 4 rows of ``w`` = 16 running sums, the k loop vectorised.
    At the edges the row indices are clamped (``min``), so a tile may compute an element twice;
    all 16 sums are loaded from ``out`` before any is stored, so a duplicate stores the same value.
    """
    M, K = a.shape
    for m in range(0, M, 4):
        a0, a1, a2, a3 = a[m], a[min(m + 1, M - 1)], a[min(m + 2, M - 1)], a[min(m + 3, M - 1)]
        o0, o1, o2, o3 = out[m], out[min(m + 1, M - 1)], out[min(m + 2, M - 1)], out[min(m + 3, M - 1)]
        for i in range(0, n, 4):
            i1, i2, i3 = min(i + 1, n - 1), min(i + 2, n - 1), min(i + 3, n - 1)
            w0, w1, w2, w3 = w[w_row0 + i], w[w_row0 + i1], w[w_row0 + i2], w[w_row0 + i3]
            c0, c1, c2, c3 = out_col0 + i, out_col0 + i1, out_col0 + i2, out_col0 + i3
            s00, s01, s02, s03 = o0[c0], o0[c1], o0[c2], o0[c3]
            s10, s11, s12, s13 = o1[c0], o1[c1], o1[c2], o1[c3]
            s20, s21, s22, s23 = o2[c0], o2[c1], o2[c2], o2[c3]
            s30, s31, s32, s33 = o3[c0], o3[c1], o3[c2], o3[c3]
            for k in range(K):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1, y2, y3 = w0[k], w1[k], w2[k], w3[k]
                s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3  # noqa: E702
                s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3  # noqa: E702
                s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3  # noqa: E702
                s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3  # noqa: E702
            o0[c0], o0[c1], o0[c2], o0[c3] = s00, s01, s02, s03
            o1[c0], o1[c1], o1[c2], o1[c3] = s10, s11, s12, s13
            o2[c0], o2[c1], o2[c2], o2[c3] = s20, s21, s22, s23
            o3[c0], o3[c1], o3[c2], o3[c3] = s30, s31, s32, s33


# ---------------------------------------------------------------------------------------- LSTM

@parallel_kernel
def lstm_sequence_forward(xproj, w_hh, h0, c0, hs_out, cs_out, acts_out):
    """xproj (T, B, 4H), w_hh (4H, H), h0, c0 (B, H) -> hs_out, cs_out (T+1, B, H), acts_out (T, B, 4H)."""
    T = xproj.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    cs_out[0, :, :] = c0
    pre = np.empty((B, 4 * H), xproj.dtype)      # gate pre-activations of the current step
    for t in range(T):
        x, h_prev, c_prev = xproj[t], hs_out[t], cs_out[t]
        acts, h, c = acts_out[t], hs_out[t + 1], cs_out[t + 1]
        for block in prange((H + UNITS - 1) // UNITS):
            j0 = block * UNITS
            nj = min(UNITS, H - j0)
            # pre[:, rows] = xproj + h_prev @ W_hh[rows].T, rows = gate*H + j0 .. + nj, for each gate
            for b in range(B):
                for gate in range(4):
                    for j in range(gate * H + j0, gate * H + j0 + nj):
                        pre[b, j] = x[b, j]
            for gate in range(4):
                _matmul_nt_acc(h_prev, w_hh, gate * H + j0, nj, pre, gate * H + j0)
            # i, f, g, o = sigmoid, sigmoid, tanh, sigmoid;  c = f * c_prev + i * g;  h = o * tanh(c).
            # Short loops over one or two arrays each: LLVM vectorises those, while one loop over
            # all the arrays needs too many run-time aliasing checks and stays scalar.
            for b in range(B):
                p, a, cp, cn, hn = pre[b], acts[b], c_prev[b], c[b], h[b]
                for j in range(j0, j0 + nj):
                    a[j] = sigmoid(p[j])
                for j in range(H + j0, H + j0 + nj):
                    a[j] = sigmoid(p[j])
                for j in range(2 * H + j0, 2 * H + j0 + nj):
                    a[j] = tanh(p[j])
                for j in range(3 * H + j0, 3 * H + j0 + nj):
                    a[j] = sigmoid(p[j])
                for j in range(j0, j0 + nj):
                    cn[j] = a[H + j] * cp[j] + a[j] * a[2 * H + j]
                for j in range(j0, j0 + nj):
                    hn[j] = a[3 * H + j] * tanh(cn[j])


@parallel_kernel
def lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, dgates_out, dh0_out, dc0_out):
    """w_hh (4H, H); hs, cs (T+1, B, H); acts (T, B, 4H); dhs (T, B, H); dh_n, dc_n (B, H)
    -> dgates_out (T, B, 4H), dh0_out, dc0_out (B, H).

    dh0_out and dc0_out serve as the running dh, dc (gradients w.r.t. the state after step t)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    one = dh_n.dtype.type(1)
    w_hh_t = np.ascontiguousarray(w_hh.T)      # (H, 4H): row j = the weights that h_j feeds
    dh, dc = dh0_out, dc0_out
    dh[:, :] = dh_n
    dc[:, :] = dc_n
    n_blocks = (H + UNITS - 1) // UNITS
    for t in range(T - 1, -1, -1):
        a, dgates, dh_out, c_prev, c = acts[t], dgates_out[t], dhs[t], cs[t], cs[t + 1]
        # (1) gate gradients of step t for this block's units
        for block in prange(n_blocks):
            j0 = block * UNITS
            for b in range(B):
                for j in range(j0, min(j0 + UNITS, H)):
                    i, f, g, o = a[b, j], a[b, H + j], a[b, 2 * H + j], a[b, 3 * H + j]
                    tanh_c = tanh(c[b, j])
                    dh_t = dh[b, j] + dh_out[b, j]
                    dc_t = dc[b, j] + dh_t * o * (one - tanh_c * tanh_c)
                    dgates[b, j] = dc_t * g * i * (one - i)
                    dgates[b, H + j] = dc_t * c_prev[b, j] * f * (one - f)
                    dgates[b, 2 * H + j] = dc_t * i * (one - g * g)
                    dgates[b, 3 * H + j] = dh_t * tanh_c * o * (one - o)
                    dc[b, j] = dc_t * f
                    dh[b, j] = 0
        # (2) dh_{t-1} = dgates_t @ W_hh, for this block's units
        for block in prange(n_blocks):
            j0 = block * UNITS
            _matmul_nt_acc(dgates, w_hh_t, j0, min(UNITS, H - j0), dh, j0)


# ----------------------------------------------------------------------------------------- GRU

@parallel_kernel
def gru_sequence_forward(xproj, w_hh, b_hh, h0, hs_out, acts_out, ghn_out):
    """xproj (T, B, 3H) (with b_ih), w_hh (3H, H), b_hh (3H,), h0 (B, H)
    -> hs_out (T+1, B, H), acts_out (T, B, 3H) = (r, z, n), ghn_out (T, B, H) = h_t @ W_hn.T + b_hn."""
    T = xproj.shape[0]
    B, H = h0.shape
    one = h0.dtype.type(1)
    hs_out[0, :, :] = h0
    pre = np.empty((B, 2 * H), xproj.dtype)      # r, z pre-activations of the current step
    for t in range(T):
        x, h_prev, h, acts, ghn = xproj[t], hs_out[t], hs_out[t + 1], acts_out[t], ghn_out[t]
        for block in prange((H + UNITS - 1) // UNITS):
            j0 = block * UNITS
            nj = min(UNITS, H - j0)
            # pre = gi_{r,z} + b_h{r,z} + h_prev @ W_h{r,z}.T;  ghn = b_hn + h_prev @ W_hn.T
            for b in range(B):
                for j in range(j0, j0 + nj):
                    pre[b, j] = x[b, j] + b_hh[j]
                    pre[b, H + j] = x[b, H + j] + b_hh[H + j]
                    ghn[b, j] = b_hh[2 * H + j]
            _matmul_nt_acc(h_prev, w_hh, j0, nj, pre, j0)
            _matmul_nt_acc(h_prev, w_hh, H + j0, nj, pre, H + j0)
            _matmul_nt_acc(h_prev, w_hh, 2 * H + j0, nj, ghn, j0)
            # r, z = sigmoid(pre);  n = tanh(gi_n + r * ghn);  h = (1 - z) * n + z * h_prev
            # (short loops over few arrays vectorise: see lstm_sequence_forward)
            for b in range(B):
                p, a, xb, gb, hp, hn = pre[b], acts[b], x[b], ghn[b], h_prev[b], h[b]
                for j in range(j0, j0 + nj):
                    a[j] = sigmoid(p[j])
                for j in range(H + j0, H + j0 + nj):
                    a[j] = sigmoid(p[j])
                for j in range(j0, j0 + nj):
                    a[2 * H + j] = tanh(xb[2 * H + j] + a[j] * gb[j])
                for j in range(j0, j0 + nj):
                    hn[j] = (one - a[H + j]) * a[2 * H + j] + a[H + j] * hp[j]


@parallel_kernel
def gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, dgi_out, dgh_out, dh0_out):
    """w_hh (3H, H); hs (T+1, B, H); acts (T, B, 3H); ghn, dhs (T, B, H); dh_n (B, H)
    -> dgi_out, dgh_out (T, B, 3H), dh0_out (B, H) (also the running dh)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    one = dh_n.dtype.type(1)
    w_hh_t = np.ascontiguousarray(w_hh.T)      # (H, 3H)
    dh = dh0_out
    dh[:, :] = dh_n
    n_blocks = (H + UNITS - 1) // UNITS
    for t in range(T - 1, -1, -1):
        a, gh_n, h_prev, dh_out, dgi, dgh = acts[t], ghn[t], hs[t], dhs[t], dgi_out[t], dgh_out[t]
        # (1) gate gradients of step t; dh keeps only the direct path dh * z
        for block in prange(n_blocks):
            j0 = block * UNITS
            for b in range(B):
                for j in range(j0, min(j0 + UNITS, H)):
                    r, z, n = a[b, j], a[b, H + j], a[b, 2 * H + j]
                    dh_t = dh[b, j] + dh_out[b, j]
                    dn_pre = dh_t * (one - z) * (one - n * n)
                    dr_pre = dn_pre * gh_n[b, j] * r * (one - r)
                    dz_pre = dh_t * (h_prev[b, j] - n) * z * (one - z)
                    dgi[b, j], dgi[b, H + j], dgi[b, 2 * H + j] = dr_pre, dz_pre, dn_pre
                    dgh[b, j], dgh[b, H + j], dgh[b, 2 * H + j] = dr_pre, dz_pre, dn_pre * r
                    dh[b, j] = dh_t * z
        # (2) dh_{t-1} += dgh_t @ W_hh
        for block in prange(n_blocks):
            j0 = block * UNITS
            _matmul_nt_acc(dgh, w_hh_t, j0, min(UNITS, H - j0), dh, j0)


# ----------------------------------------------------------------------------------------- RNN

@parallel_kernel
def rnn_sequence_forward(xproj, w_hh, h0, hs_out, relu):
    """xproj (T, B, H), w_hh (H, H), h0 (B, H) -> hs_out (T+1, B, H); h = tanh or relu of the pre-activation."""
    T = xproj.shape[0]
    B, H = h0.shape
    zero = h0.dtype.type(0)
    hs_out[0, :, :] = h0
    pre = np.empty((B, H), xproj.dtype)
    for t in range(T):
        x, h_prev, h = xproj[t], hs_out[t], hs_out[t + 1]
        for block in prange((H + UNITS - 1) // UNITS):
            j0 = block * UNITS
            nj = min(UNITS, H - j0)
            for b in range(B):
                for j in range(j0, j0 + nj):
                    pre[b, j] = x[b, j]
            _matmul_nt_acc(h_prev, w_hh, j0, nj, pre, j0)
            for b in range(B):
                p, hn = pre[b], h[b]
                if relu:
                    for j in range(j0, j0 + nj):
                        hn[j] = max(p[j], zero)
                else:
                    for j in range(j0, j0 + nj):
                        hn[j] = tanh(p[j])


@parallel_kernel
def rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, dpre_out, dh0_out):
    """w_hh (H, H); hs (T+1, B, H); dhs (T, B, H); dh_n (B, H) -> dpre_out (T, B, H), dh0_out (B, H)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    zero, one = dh_n.dtype.type(0), dh_n.dtype.type(1)
    w_hh_t = np.ascontiguousarray(w_hh.T)
    dh = dh0_out
    dh[:, :] = dh_n
    n_blocks = (H + UNITS - 1) // UNITS
    for t in range(T - 1, -1, -1):
        h, dh_out, dpre = hs[t + 1], dhs[t], dpre_out[t]
        for block in prange(n_blocks):
            j0 = block * UNITS
            for b in range(B):
                for j in range(j0, min(j0 + UNITS, H)):
                    dh_t = dh[b, j] + dh_out[b, j]
                    if relu:
                        dpre[b, j] = dh_t if h[b, j] > zero else zero
                    else:
                        dpre[b, j] = dh_t * (one - h[b, j] * h[b, j])
                    dh[b, j] = 0
        for block in prange(n_blocks):
            j0 = block * UNITS
            _matmul_nt_acc(dpre, w_hh_t, j0, min(UNITS, H - j0), dh, j0)


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
