"""One recurrent time step, from pre-activations (Numba; same math as ``reference/cells.py``).

Each kernel is a ``prange`` over batch rows with a vectorisable loop over the hidden units.
float32 uses the fast sigmoid/tanh of ``activations.py``; float64 is exact. Shapes: batch ``B``,
hidden ``H``; gate order i, f, g, o (LSTM) and r, z, n (GRU), as in PyTorch.
"""
from ..jit import parallel_kernel, prange
from .activations import sigmoid, tanh


@parallel_kernel
def lstm_cell_forward(gates, c_prev, acts_out, c_out, h_out):
    """gates (B, 4H), c_prev (B, H) -> acts_out (B, 4H) = (i, f, g, o), c_out, h_out (B, H).

    c = f * c_prev + i * g;  h = o * tanh(c)."""
    B, H = c_prev.shape
    for b in prange(B):
        for j in range(H):
            i = sigmoid(gates[b, j])
            f = sigmoid(gates[b, H + j])
            g = tanh(gates[b, 2 * H + j])
            o = sigmoid(gates[b, 3 * H + j])
            c = f * c_prev[b, j] + i * g
            acts_out[b, j], acts_out[b, H + j], acts_out[b, 2 * H + j], acts_out[b, 3 * H + j] = i, f, g, o
            c_out[b, j] = c
            h_out[b, j] = o * tanh(c)


@parallel_kernel
def lstm_cell_backward(acts, c_prev, c, dh, dc, dgates_out, dc_prev_out):
    """acts (B, 4H); c_prev, c, dh, dc (B, H) -> dgates_out (B, 4H), dc_prev_out (B, H).

    dc_total = dc + dh * o * (1 - tanh(c)^2); the gate gradients are
    (dc_total * g, dc_total * c_prev, dc_total * i, dh * tanh(c)) times each activation's derivative."""
    B, H = c.shape
    one = c.dtype.type(1)
    for b in prange(B):
        for j in range(H):
            i, f, g, o = acts[b, j], acts[b, H + j], acts[b, 2 * H + j], acts[b, 3 * H + j]
            tanh_c = tanh(c[b, j])
            dc_total = dc[b, j] + dh[b, j] * o * (one - tanh_c * tanh_c)
            dgates_out[b, j] = dc_total * g * i * (one - i)
            dgates_out[b, H + j] = dc_total * c_prev[b, j] * f * (one - f)
            dgates_out[b, 2 * H + j] = dc_total * i * (one - g * g)
            dgates_out[b, 3 * H + j] = dh[b, j] * tanh_c * o * (one - o)
            dc_prev_out[b, j] = dc_total * f


@parallel_kernel
def gru_cell_forward(gi, gh, h_prev, acts_out, h_out):
    """gi, gh (B, 3H); h_prev (B, H) -> acts_out (B, 3H) = (r, z, n), h_out (B, H).

    r = sigmoid(gi_r + gh_r); z = sigmoid(gi_z + gh_z); n = tanh(gi_n + r * gh_n);
    h = (1 - z) * n + z * h_prev."""
    B, H = h_prev.shape
    one = h_prev.dtype.type(1)
    for b in prange(B):
        for j in range(H):
            r = sigmoid(gi[b, j] + gh[b, j])
            z = sigmoid(gi[b, H + j] + gh[b, H + j])
            n = tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
            acts_out[b, j], acts_out[b, H + j], acts_out[b, 2 * H + j] = r, z, n
            h_out[b, j] = (one - z) * n + z * h_prev[b, j]


@parallel_kernel
def gru_cell_backward(acts, gh, h_prev, dh, dgi_out, dgh_out, dh_prev_out):
    """acts (B, 3H); gh (B, 3H); h_prev, dh (B, H) -> dgi_out, dgh_out (B, 3H), dh_prev_out (B, H).

    dh_prev_out is only the direct path dh * z; the caller adds dgh @ W_hh."""
    B, H = h_prev.shape
    one = h_prev.dtype.type(1)
    for b in prange(B):
        for j in range(H):
            r, z, n = acts[b, j], acts[b, H + j], acts[b, 2 * H + j]
            dn_pre = dh[b, j] * (one - z) * (one - n * n)
            dr_pre = dn_pre * gh[b, 2 * H + j] * r * (one - r)
            dz_pre = dh[b, j] * (h_prev[b, j] - n) * z * (one - z)
            dgi_out[b, j], dgi_out[b, H + j], dgi_out[b, 2 * H + j] = dr_pre, dz_pre, dn_pre
            dgh_out[b, j], dgh_out[b, H + j], dgh_out[b, 2 * H + j] = dr_pre, dz_pre, dn_pre * r
            dh_prev_out[b, j] = dh[b, j] * z


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
