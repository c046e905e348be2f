"""One recurrent time step on the GPU, from pre-activations: one thread per (b, j).

Gate order and formulas are PyTorch's (see ``tinyrnn.kernels.reference.cells``)::

    LSTM  i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
          c = f * c_prev + i * g            h = o * tanh(c)
    GRU   r = sigmoid(gi_r + gh_r)  z = sigmoid(gi_z + gh_z)  n = tanh(gi_n + r * gh_n)
          h = (1 - z) * n + z * h_prev
    RNN   h = tanh(pre)  or  relu(pre)

Thread (b, j) reads the G gate pre-activations of unit j (columns j, H + j, 2H + j, ...) and
writes unit j's outputs, so no two threads write the same element. The math of one unit lives
in the ``*_point_*`` device functions below, shared with the sequence kernels (sequence.py),
which run the same step inside their time loop.

Constants are made in the arrays' dtype (``one = x.dtype.type(1.0)``): a bare ``1.0`` is a
float64 and would turn float32 gate math into float64 math. exp and tanh are the exact
libdevice functions in both dtypes.
"""
import math

from numba import cuda

from .device import blocks_for, device_function, jit, threads_for


# --------------------------------------------------------------------------------------------
# The math of one unit (device functions)
# --------------------------------------------------------------------------------------------
@device_function
def sigmoid(x, one):
    return one / (one + math.exp(-x))


@device_function
def lstm_point_forward(a_i, a_f, a_g, a_o, c_prev, one):
    """Pre-activations of unit j and its c_prev -> (i, f, g, o, c, h)."""
    i = sigmoid(a_i, one)
    f = sigmoid(a_f, one)
    g = math.tanh(a_g)
    o = sigmoid(a_o, one)
    c = f * c_prev + i * g
    h = o * math.tanh(c)
    return i, f, g, o, c, h


@device_function
def lstm_point_backward(i, f, g, o, c_prev, c, dh, dc, one):
    """Activated gates, the cell states around the step, dL/dh and dL/dc of its outputs ->
    (d a_i, d a_f, d a_g, d a_o, dc_prev)."""
    tanh_c = math.tanh(c)
    dc_total = dc + dh * o * (one - tanh_c * tanh_c)   # c feeds h = o * tanh(c) and the next step
    return (dc_total * g * i * (one - i),
            dc_total * c_prev * f * (one - f),
            dc_total * i * (one - g * g),
            dh * tanh_c * o * (one - o),
            dc_total * f)


@device_function
def gru_point_forward(gi_r, gi_z, gi_n, gh_r, gh_z, gh_n, h_prev, one):
    """Input and hidden projections of unit j and its h_prev -> (r, z, n, h)."""
    r = sigmoid(gi_r + gh_r, one)
    z = sigmoid(gi_z + gh_z, one)
    n = math.tanh(gi_n + r * gh_n)
    h = (one - z) * n + z * h_prev
    return r, z, n, h


@device_function
def gru_point_backward(r, z, n, gh_n, h_prev, dh, one):
    """-> (d gi_r = d gh_r, d gi_z = d gh_z, d gi_n, d gh_n, dh_prev through the direct path z * h_prev)."""
    dn_pre = dh * (one - z) * (one - n * n)       # d/d(gi_n + r * gh_n)
    dr_pre = dn_pre * gh_n * r * (one - r)
    dz_pre = dh * (h_prev - n) * z * (one - z)
    return dr_pre, dz_pre, dn_pre, dn_pre * r, dh * z


@device_function
def rnn_point_forward(pre, relu, zero):
    if relu:
        return pre if pre > zero else zero
    return math.tanh(pre)


@device_function
def rnn_point_backward(h, dh, relu, zero, one):
    """dL/dpre from the forward output h: relu' = [h > 0], tanh' = 1 - h^2."""
    if relu:
        return dh if h > zero else zero
    return dh * (one - h * h)


# --------------------------------------------------------------------------------------------
# Kernels: thread idx -> (b, j) = divmod(idx, H)
# --------------------------------------------------------------------------------------------
@jit
def _lstm_cell_forward_kernel(gates, c_prev, acts, c_out, h_out):
    idx = cuda.grid(1)
    B, H = c_prev.shape
    if idx < B * H:
        b, j = idx // H, idx % H
        i, f, g, o, c, h = lstm_point_forward(gates[b, j], gates[b, H + j], gates[b, 2 * H + j],
                                              gates[b, 3 * H + j], c_prev[b, j], gates.dtype.type(1.0))
        acts[b, j], acts[b, H + j], acts[b, 2 * H + j], acts[b, 3 * H + j] = i, f, g, o
        c_out[b, j] = c
        h_out[b, j] = h


@jit
def _lstm_cell_backward_kernel(acts, c_prev, c, dh, dc, dgates, dc_prev):
    idx = cuda.grid(1)
    B, H = c_prev.shape
    if idx < B * H:
        b, j = idx // H, idx % H
        d_i, d_f, d_g, d_o, d_c = lstm_point_backward(
            acts[b, j], acts[b, H + j], acts[b, 2 * H + j], acts[b, 3 * H + j],
            c_prev[b, j], c[b, j], dh[b, j], dc[b, j], acts.dtype.type(1.0))
        dgates[b, j], dgates[b, H + j], dgates[b, 2 * H + j], dgates[b, 3 * H + j] = d_i, d_f, d_g, d_o
        dc_prev[b, j] = d_c


@jit
def _gru_cell_forward_kernel(gi, gh, h_prev, acts, h_out):
    idx = cuda.grid(1)
    B, H = h_prev.shape
    if idx < B * H:
        b, j = idx // H, idx % H
        r, z, n, h = gru_point_forward(gi[b, j], gi[b, H + j], gi[b, 2 * H + j],
                                       gh[b, j], gh[b, H + j], gh[b, 2 * H + j], h_prev[b, j], gi.dtype.type(1.0))
        acts[b, j], acts[b, H + j], acts[b, 2 * H + j] = r, z, n
        h_out[b, j] = h


@jit
def _gru_cell_backward_kernel(acts, gh, h_prev, dh, dgi, dgh, dh_prev):
    idx = cuda.grid(1)
    B, H = h_prev.shape
    if idx < B * H:
        b, j = idx // H, idx % H
        d_r, d_z, dgi_n, dgh_n, d_h = gru_point_backward(
            acts[b, j], acts[b, H + j], acts[b, 2 * H + j], gh[b, 2 * H + j], h_prev[b, j], dh[b, j],
            acts.dtype.type(1.0))
        dgi[b, j], dgi[b, H + j], dgi[b, 2 * H + j] = d_r, d_z, dgi_n
        dgh[b, j], dgh[b, H + j], dgh[b, 2 * H + j] = d_r, d_z, dgh_n
        dh_prev[b, j] = d_h


@jit
def _rnn_cell_forward_kernel(pre, h_out, relu):
    idx = cuda.grid(1)
    B, H = pre.shape
    if idx < B * H:
        b, j = idx // H, idx % H
        h_out[b, j] = rnn_point_forward(pre[b, j], relu, pre.dtype.type(0.0))


@jit
def _rnn_cell_backward_kernel(h, dh, dpre, relu):
    idx = cuda.grid(1)
    B, H = h.shape
    if idx < B * H:
        b, j = idx // H, idx % H
        dpre[b, j] = rnn_point_backward(h[b, j], dh[b, j], relu, h.dtype.type(0.0), h.dtype.type(1.0))


# --------------------------------------------------------------------------------------------
# Host side: the spec's functions
# --------------------------------------------------------------------------------------------
def _units(a):
    """(blocks, threads) for one thread per element of the (B, H) array ``a``."""
    n = a.shape[0] * a.shape[1]
    return blocks_for(n), threads_for(n)


def lstm_cell_forward(gates, c_prev, acts_out, c_out, h_out):
    """gates: (B, 4H) pre-activations; c_prev: (B, H). Writes acts_out (B, 4H) = (i, f, g, o),
    c_out and h_out (B, H)."""
    if c_prev.size:
        _lstm_cell_forward_kernel[_units(c_prev)](gates, c_prev, acts_out, c_out, h_out)


def lstm_cell_backward(acts, c_prev, c, dh, dc, dgates_out, dc_prev_out):
    """acts: (B, 4H); c_prev, c, dh, dc: (B, H). Writes dgates_out (B, 4H) and dc_prev_out (B, H)."""
    if c_prev.size:
        _lstm_cell_backward_kernel[_units(c_prev)](acts, c_prev, c, dh, dc, dgates_out, dc_prev_out)


def gru_cell_forward(gi, gh, h_prev, acts_out, h_out):
    """gi, gh: (B, 3H) projections (with biases); h_prev: (B, H). Writes acts_out (B, 3H) = (r, z, n)
    and h_out (B, H)."""
    if h_prev.size:
        _gru_cell_forward_kernel[_units(h_prev)](gi, gh, h_prev, acts_out, h_out)


def gru_cell_backward(acts, gh, h_prev, dh, dgi_out, dgh_out, dh_prev_out):
    """acts, gh: (B, 3H); h_prev, dh: (B, H). Writes dgi_out, dgh_out (B, 3H) and dh_prev_out (B, H)
    (only the direct path dh * z; the caller adds dgh @ W_hh)."""
    if h_prev.size:
        _gru_cell_backward_kernel[_units(h_prev)](acts, gh, h_prev, dh, dgi_out, dgh_out, dh_prev_out)


def rnn_cell_forward(pre, h_out, relu):
    """pre: (B, H). Writes h_out (B, H) = tanh(pre), or relu(pre) if relu."""
    if pre.size:
        _rnn_cell_forward_kernel[_units(pre)](pre, h_out, bool(relu))


def rnn_cell_backward(h, dh, dpre_out, relu):
    """h, dh: (B, H). Writes dpre_out (B, H) = dh * activation'(pre), from the output h."""
    if h.size:
        _rnn_cell_backward_kernel[_units(h)](h, dh, dpre_out, bool(relu))
