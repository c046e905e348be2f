"""One recurrent time step, from pre-activations (naive numpy; the spec).

Gate order and formulas are PyTorch's. ``B`` is the batch, ``H`` the hidden size.
Outputs are written into the ``*_out`` arrays.

LSTM (gates i, f, g, o; ``gates = x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh``)::

    i = sigmoid(gates_i)   f = sigmoid(gates_f)   g = tanh(gates_g)   o = sigmoid(gates_o)
    c = f * c_prev + i * g
    h = o * tanh(c)

GRU (gates r, z, n; ``gi = x @ W_ih.T + b_ih``, ``gh = h_prev @ W_hh.T + b_hh``)::

    r = sigmoid(gi_r + gh_r)   z = sigmoid(gi_z + gh_z)   n = tanh(gi_n + r * gh_n)
    h = (1 - z) * n + z * h_prev

RNN (``pre = x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh``)::

    h = tanh(pre)   or   h = relu(pre)

``acts_out`` keeps the activated gates (i, f, g, o or r, z, n): all the backward needs.
"""
import numpy as np


def sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def lstm_cell_forward(gates, c_prev, acts_out, c_out, h_out):
    """gates: (B, 4H) pre-activations; c_prev: (B, H). Writes acts_out (B, 4H), c_out, h_out (B, H)."""
    i, f, g, o = np.split(gates, 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    acts_out[...] = np.concatenate([i, f, g, o], axis=1)
    c = f * c_prev + i * g
    c_out[...] = c
    h_out[...] = o * np.tanh(c)


def lstm_cell_backward(acts, c_prev, c, dh, dc, dgates_out, dc_prev_out):
    """acts: (B, 4H) from the forward; c_prev, c: (B, H) cell states before and after the step;
    dh, dc: (B, H) gradients w.r.t. h and c. Writes dgates_out (B, 4H) (w.r.t. the pre-activations)
    and dc_prev_out (B, H)."""
    i, f, g, o = np.split(acts, 4, axis=1)
    tanh_c = np.tanh(c)
    do = dh * tanh_c
    dc_total = dc + dh * o * (1 - tanh_c**2)     # c feeds h = o * tanh(c) and the next step
    di, df, dg = dc_total * g, dc_total * c_prev, dc_total * i
    dc_prev_out[...] = dc_total * f
    dgates_out[...] = np.concatenate(
        [di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=1)


def gru_cell_forward(gi, gh, h_prev, acts_out, h_out):
    """gi, gh: (B, 3H) input and hidden projections (with their biases); h_prev: (B, H).
    Writes acts_out (B, 3H) = (r, z, n) and h_out (B, H)."""
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)
    gh_r, gh_z, gh_n = np.split(gh, 3, axis=1)
    r = sigmoid(gi_r + gh_r)
    z = sigmoid(gi_z + gh_z)
    n = np.tanh(gi_n + r * gh_n)
    acts_out[...] = np.concatenate([r, z, n], axis=1)
    h_out[...] = (1 - z) * n + z * h_prev


def gru_cell_backward(acts, gh, h_prev, dh, dgi_out, dgh_out, dh_prev_out):
    """acts: (B, 3H) = (r, z, n); gh: (B, 3H) hidden projection; h_prev, dh: (B, H).
    Writes dgi_out, dgh_out (B, 3H) (gradients w.r.t. gi and gh) and dh_prev_out (B, H),
    which is only the direct path ``dh * z``: the caller adds ``dgh @ W_hh``."""
    r, z, n = np.split(acts, 3, axis=1)
    gh_n = gh[:, 2 * (gh.shape[1] // 3):]
    dn_pre = dh * (1 - z) * (1 - n**2)           # d/d(gi_n + r * gh_n)
    dr_pre = dn_pre * gh_n * r * (1 - r)
    dz_pre = dh * (h_prev - n) * z * (1 - z)
    dgi_out[...] = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    dgh_out[...] = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    dh_prev_out[...] = dh * z


def rnn_cell_forward(pre, h_out, relu):
    """pre: (B, H) pre-activation. Writes h_out (B, H) = tanh(pre), or relu(pre) if relu."""
    h_out[...] = np.maximum(pre, 0) if relu else np.tanh(pre)


def rnn_cell_backward(h, dh, dpre_out, relu):
    """h: (B, H) the forward output; dh: (B, H). Writes dpre_out (B, H) = dh * activation'(pre)."""
    dpre_out[...] = dh * (h > 0) if relu else dh * (1 - h**2)
