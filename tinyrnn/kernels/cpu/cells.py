"""One recurrent time step, from pre-activations (Numba; same math as ``reference/cells.py``).

The math of one unit is written once on the CPU, here: ``_lstm_unit`` / ``_gru_unit`` and their
``_backward``. They take scalars or SIMD vectors (``simd.py``: 16 units per call), and the
per-step kernels below, the sequence kernels (``sequence.py``) and the generation kernels
(``generate.py``) all call them. (Called on scalars in a loop they were not vectorised by LLVM:
the LSTM step at B = 32, H = 256 took 190 us on one core, instead of 20 with vectors.)

Each per-step kernel is a ``prange`` over batch rows; in a row, 16 units at a time on SIMD vectors
(``vload`` / ``vstore`` of a row, so arrays are C-contiguous), the last ``H % 16`` as scalars.
float32 uses the fast sigmoid/tanh of ``activations.py``; float64 is exact. Shapes: batch ``B``,
hidden ``H``; gate order i, f, g, o (LSTM) and r, z, n (GRU), as in PyTorch.
"""
from ..jit import kernel, parallel_kernel, prange
from .activations import sigmoid, tanh
from .simd import LANES, vload, vstore


# ---------------------------------------------------------------------------- one unit (LSTM)

@kernel
def _lstm_unit(i, f, g, o, c_prev):
    """One LSTM unit, or 16 of them at once when the arguments are SIMD vectors:
    pre-activations i, f, g, o and c_prev -> activations i, f, g, o and c, h.

        i, f, o = sigmoid(.);  g = tanh(.);  c = f * c_prev + i * g;  h = o * tanh(c)"""
    i, f, g, o = sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    c = f * c_prev + i * g
    return i, f, g, o, c, o * tanh(c)


@kernel
def _lstm_unit_backward(i, f, g, o, c, c_prev, dh, dc, one):
    """The gradients of one unit (or 16: SIMD vectors) at one step. i, f, g, o: activations;
    dh: dLoss/dh of this step (all paths); dc: dLoss/dc from the step after (not through h)
    -> di, df, dg, do (w.r.t. the pre-activations) and dc_prev. ``one``: 1 of the dtype.

        dc_s = dc + dh * o * (1 - tanh(c)^2);  do = dh * tanh(c) * o(1-o);
        di = dc_s * g * i(1-i);  df = dc_s * c_prev * f(1-f);  dg = dc_s * i * (1-g^2);
        dc_prev = dc_s * f"""
    tanh_c = tanh(c)
    do = dh * tanh_c * o * (one - o)
    dc_s = dc + dh * o * (one - tanh_c * tanh_c)
    di = dc_s * g * i * (one - i)
    df = dc_s * c_prev * f * (one - f)
    dg = dc_s * i * (one - g * g)
    return di, df, dg, do, dc_s * f

@parallel_kernel
def lstm_cell_forward(gates, c_prev, acts_out, c_out, h_out):
    """gates (B, 4H), c_prev (B, H) -> acts_out (B, 4H) = (i, f, g, o), c_out, h_out (B, H).

    c = f * c_prev + i * g;  h = o * tanh(c)  (``_lstm_unit``)."""
    B, H = c_prev.shape
    v1 = H - H % LANES
    for b in prange(B):
        x, a, cp, cn, hn = gates[b], acts_out[b], c_prev[b], c_out[b], h_out[b]
        for j in range(0, v1, LANES):               # 16 units at a time (SIMD vectors)
            i, f, g, o, cj, hj = _lstm_unit(vload(x, j), vload(x, H + j), vload(x, 2 * H + j),
                                            vload(x, 3 * H + j), vload(cp, j))
            vstore(a, j, i)
            vstore(a, H + j, f)
            vstore(a, 2 * H + j, g)
            vstore(a, 3 * H + j, o)
            vstore(cn, j, cj)
            vstore(hn, j, hj)
        for j in range(v1, H):                      # the rest, one at a time
            a[j], a[H + j], a[2 * H + j], a[3 * H + j], cn[j], hn[j] = _lstm_unit(
                x[j], x[H + j], x[2 * H + j], x[3 * H + j], cp[j])


@parallel_kernel
def lstm_cell_backward(acts, c_prev, c, dh, dc, dgates_out, dc_prev_out):
    """acts (B, 4H); c_prev, c, dh, dc (B, H) -> dgates_out (B, 4H), dc_prev_out (B, H).

    dc_total = dc + dh * o * (1 - tanh(c)^2); the gate gradients are
    (dc_total * g, dc_total * c_prev, dc_total * i, dh * tanh(c)) times each activation's derivative
    (``_lstm_unit_backward``)."""
    B, H = c.shape
    one = c.dtype.type(1)
    v1 = H - H % LANES
    for b in prange(B):
        a, d, cb, cp, dhb, dcb, dcp = acts[b], dgates_out[b], c[b], c_prev[b], dh[b], dc[b], dc_prev_out[b]
        for j in range(0, v1, LANES):               # 16 units at a time (SIMD vectors)
            di, df, dg, do, dc_prev = _lstm_unit_backward(
                vload(a, j), vload(a, H + j), vload(a, 2 * H + j), vload(a, 3 * H + j),
                vload(cb, j), vload(cp, j), vload(dhb, j), vload(dcb, j), one)
            vstore(d, j, di)
            vstore(d, H + j, df)
            vstore(d, 2 * H + j, dg)
            vstore(d, 3 * H + j, do)
            vstore(dcp, j, dc_prev)
        for j in range(v1, H):                      # the rest, one at a time
            d[j], d[H + j], d[2 * H + j], d[3 * H + j], dcp[j] = _lstm_unit_backward(
                a[j], a[H + j], a[2 * H + j], a[3 * H + j], cb[j], cp[j], dhb[j], dcb[j], one)


# ----------------------------------------------------------------------------- one unit (GRU)

@kernel
def _gru_unit(r, z, b_r, b_z, gi_n, gh_n, h_prev, one):
    """One GRU unit, or 16 at once (SIMD vectors). r, z: pre-activations without b_hr, b_hz;
    gh_n = h_prev @ W_hn.T + b_hn -> activations r, z, n and h.

        r, z = sigmoid(. + b_h);  n = tanh(gi_n + r * gh_n);  h = (1 - z) * n + z * h_prev"""
    r, z = sigmoid(r + b_r), sigmoid(z + b_z)
    n = tanh(gi_n + r * gh_n)
    return r, z, n, (one - z) * n + z * h_prev


@kernel
def _gru_unit_backward(r, z, n, gh_n, h_prev, dh, one):
    """The gradients of one unit (or 16: SIMD vectors) at one step; dh: dLoss/dh, all paths
    -> dr, dz, dn (for gi; gh gets dr, dz, dn * r) and dh_prev's direct part dh * z.

        dn = dh (1-z)(1-n^2);  dr = dn * gh_n * r(1-r);  dz = dh (h_prev - n) z(1-z)"""
    dn = dh * (one - z) * (one - n * n)
    dr = dn * gh_n * r * (one - r)
    dz = dh * (h_prev - n) * z * (one - z)
    return dr, dz, dn, dh * z

@parallel_kernel
def gru_cell_forward(gi, gh, h_prev, acts_out, h_out):
    """gi, gh (B, 3H); h_prev (B, H) -> acts_out (B, 3H) = (r, z, n), h_out (B, H).

    r = sigmoid(gi_r + gh_r); z = sigmoid(gi_z + gh_z); n = tanh(gi_n + r * gh_n);
    h = (1 - z) * n + z * h_prev  (``_gru_unit``, with gh_r, gh_z as its b_r, b_z)."""
    B, H = h_prev.shape
    one = h_prev.dtype.type(1)
    v1 = H - H % LANES
    for b in prange(B):
        x, y, a, hp, hn = gi[b], gh[b], acts_out[b], h_prev[b], h_out[b]
        for j in range(0, v1, LANES):               # 16 units at a time (SIMD vectors)
            r, z, n, hj = _gru_unit(vload(x, j), vload(x, H + j), vload(y, j), vload(y, H + j),
                                    vload(x, 2 * H + j), vload(y, 2 * H + j), vload(hp, j), one)
            vstore(a, j, r)
            vstore(a, H + j, z)
            vstore(a, 2 * H + j, n)
            vstore(hn, j, hj)
        for j in range(v1, H):                      # the rest, one at a time
            a[j], a[H + j], a[2 * H + j], hn[j] = _gru_unit(
                x[j], x[H + j], y[j], y[H + j], x[2 * H + j], y[2 * H + j], hp[j], one)


@parallel_kernel
def gru_cell_backward(acts, gh, h_prev, dh, dgi_out, dgh_out, dh_prev_out):
    """acts (B, 3H); gh (B, 3H); h_prev, dh (B, H) -> dgi_out, dgh_out (B, 3H), dh_prev_out (B, H).

    dgi = (dr, dz, dn), dgh = (dr, dz, dn * r) (``_gru_unit_backward``); dh_prev_out is only the
    direct path dh * z: the caller adds dgh @ W_hh."""
    B, H = h_prev.shape
    one = h_prev.dtype.type(1)
    v1 = H - H % LANES
    for b in prange(B):
        a, y, hp, dhb = acts[b], gh[b], h_prev[b], dh[b]
        di, dg, dhp = dgi_out[b], dgh_out[b], dh_prev_out[b]
        for j in range(0, v1, LANES):               # 16 units at a time (SIMD vectors)
            r = vload(a, j)
            dr, dz, dn, dh_direct = _gru_unit_backward(
                r, vload(a, H + j), vload(a, 2 * H + j), vload(y, 2 * H + j), vload(hp, j), vload(dhb, j), one)
            vstore(di, j, dr)
            vstore(di, H + j, dz)
            vstore(di, 2 * H + j, dn)
            vstore(dg, j, dr)
            vstore(dg, H + j, dz)
            vstore(dg, 2 * H + j, dn * r)
            vstore(dhp, j, dh_direct)
        for j in range(v1, H):                      # the rest, one at a time
            dr, dz, dn, dhp[j] = _gru_unit_backward(a[j], a[H + j], a[2 * H + j], y[2 * H + j], hp[j], dhb[j], one)
            di[j], di[H + j], di[2 * H + j] = dr, dz, dn
            dg[j], dg[H + j], dg[2 * H + j] = dr, dz, dn * a[j]


# ----------------------------------------------------------------------------------------- RNN

@parallel_kernel
def rnn_cell_forward(pre, h_out, relu):
    """pre (B, H) -> h_out (B, H) = relu(pre) if relu else tanh(pre)."""
    B, H = pre.shape
    zero = pre.dtype.type(0)
    for b in prange(B):
        for j in range(H):
            h_out[b, j] = max(pre[b, j], zero) if relu else tanh(pre[b, j])


@parallel_kernel
def rnn_cell_backward(h, dh, dpre_out, relu):
    """h, dh (B, H) -> dpre_out (B, H) = dh * (h > 0) if relu else dh * (1 - h^2)."""
    B, H = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for b in prange(B):
        for j in range(H):
            if relu:
                dpre_out[b, j] = dh[b, j] if h[b, j] > zero else zero
            else:
                dpre_out[b, j] = dh[b, j] * (one - h[b, j] * h[b, j])
