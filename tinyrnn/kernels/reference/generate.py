"""Batch-1 generation from a whole stacked, unidirectional character model (naive numpy; the spec):

    embedding (V, E) -> L recurrent layers (hidden H) -> linear head (V, H) -> sample.

A layer's gate pre-activations are one matrix-vector product, its input weights and its
recurrent weights side by side (as in most textbooks' LSTM):

    W = [w_ih | w_hh]  (G*H, 2H)     v = [x; h_prev]  (2H,)     gates = W @ v + b

for layers 1..L-1 (x: h of the layer below). Layer 0's input is one of V characters, so its input
half is read from a table made once per model, x0[v] = w_ih @ embedding[v]: per character the layer
multiplies only its recurrent half, gates = x0[index] + b + w_hh @ h_prev (at E = H, that skips
half of layer 0's weights: a quarter of those a 2-layer model reads per character). The GRU's n
rows are the exception: r multiplies only their recurrent half,

    n = tanh(W_n[:, :Kx] @ x + b_in + r * (W_n[:, Kx:] @ h + b_hn))

so those rows' two halves are summed apart (into gi and gh; the r and z rows' whole products go to
gi; layer 0's table row goes to gi, Kx = 0). The arrays:

    x0 (V, G*H)           layer 0's input products, one row per input index (float)
    w0 (G*H, H)           layer 0's w_hh
    w  (L-1, G*H, 2H)     layers 1..L-1, [w_ih | w_hh] (shape (0, G*H, 2H) when L == 1)
    b  (L, G*H)           LSTM and RNN: b_ih + b_hh;  GRU passes b_ih and b_hh separately
    w_out (V, H), b_out (V,)

Each of the three weight matrices (w0, w, w_out) is followed by its row scales (s0 (G*H,),
s (L-1, G*H), s_out (V,)). A matrix may be float (of h's dtype), bfloat16 stored as uint16, or
int8 stored in excess 128 as uint8, with those per-row scales (``weight_formats.py``: one scale a
row of each matrix as stored, so a row of [w_ih | w_hh] shares one); float and bfloat16 matrices
take empty scales (shape (..., 0)). The table x0 stays float. Each weight is the float value it
stands for; a product with a compact matrix rounds its whole vector v first, to bfloat16 for a
bfloat16 one, to 8-bit integers for an int8 one (``weight_formats.times``). h (L, H) (and c (L, H))
hold the initial state and are updated in place. The model first reads prime (P,) (P >= 1, int64),
then generates N = len(out) indices, one uniform from uniforms (N,) per index. On return h (c) is
the state after reading prime and out[:-1]: to continue, pass out[-1:] as the next prime.

Each sampled index follows the rule of ``sample_index`` (``sampling.py``, where it is described).
"""
import numpy as np

from .cells import gru_cell_forward, lstm_cell_forward, rnn_cell_forward
from .sampling import sample_index
from .weight_formats import times


def layer_inputs(x0, w0, s0, w, s, h, layer, index):
    """(the layer's matrix, its row scales, v, Kx = len(x), the input product it starts from):
    layer 0 multiplies v = h[0] (Kx = 0) and starts from its table row x0[index]; a layer l > 0
    multiplies v = [h[l-1]; h[l]] (h[l-1] already advanced by this input) and starts from 0."""
    if layer == 0:
        return w0, s0, h[0], 0, x0[index]
    return w[layer - 1], s[layer - 1], np.concatenate([h[layer - 1], h[layer]]), h.shape[1], 0


def lstm_layer(matrix, scales, v, b, h, c):
    """One LSTM layer advanced by one input: gates = matrix @ v + b; h, c (H,) updated in place."""
    gates = times(matrix, scales, v) + b
    lstm_cell_forward(gates[None], c[None], np.empty_like(gates)[None], c[None], h[None])


def gru_layer(matrix, scales, v, Kx, b_ih, b_hh, h):
    """One GRU layer advanced by one input; h (H,) updated in place. The r and z rows' whole
    products go to gi; the n rows' input half to gi, their recurrent half (which r multiplies) to gh."""
    H = h.shape[0]
    rz, n = slice(0, 2 * H), slice(2 * H, 3 * H)
    s_rz, s_n = (scales[rz], scales[n]) if scales.size else (scales, scales)
    gi, gh = b_ih.copy(), b_hh.copy()
    gi[rz] += times(matrix[rz], s_rz, v)
    gi[n] += times(matrix[n], s_n, v, slice(0, Kx))
    gh[n] += times(matrix[n], s_n, v, slice(Kx, None))
    gru_cell_forward(gi[None], gh[None], h[None].copy(), np.empty_like(gi)[None], h[None])


def rnn_layer(matrix, scales, v, b, relu, h):
    """One RNN layer advanced by one input: h = act(matrix @ v + b), in place."""
    rnn_cell_forward((times(matrix, scales, v) + b)[None], h[None], relu)


def _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out):
    """The loop shared by the three models: step(index) advances the state by one input."""
    for index in prime:
        step(index)
    for n in range(len(out)):
        logits = times(w_out, s_out, h[-1]) + b_out
        out[n] = sample_index(logits, uniforms[n], temperature, top_k, top_p)
        if n + 1 < len(out):
            step(out[n])


def lstm_generate(x0, w0, s0, w, s, b, w_out, s_out, b_out, h, c, prime, uniforms, temperature, top_k,
                  top_p, out):
    """Batch-1 LSTM sampling (see the module docstring); fills out (N,) int64, updates h, c (L, H)."""
    def step(index):
        for layer in range(h.shape[0]):
            matrix, scales, v, _, x_in = layer_inputs(x0, w0, s0, w, s, h, layer, index)
            lstm_layer(matrix, scales, v, b[layer] + x_in, h[layer], c[layer])
    _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out)


def gru_generate(x0, w0, s0, w, s, b_ih, b_hh, w_out, s_out, b_out, h, prime, uniforms, temperature,
                 top_k, top_p, out):
    """Batch-1 GRU sampling; b_ih, b_hh (L, 3H). Fills out (N,) int64, updates h (L, H)."""
    def step(index):
        for layer in range(h.shape[0]):
            matrix, scales, v, Kx, x_in = layer_inputs(x0, w0, s0, w, s, h, layer, index)
            gru_layer(matrix, scales, v, Kx, b_ih[layer] + x_in, b_hh[layer], h[layer])
    _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out)


def rnn_generate(x0, w0, s0, w, s, b, relu, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k,
                 top_p, out):
    """Batch-1 RNN sampling; b (L, H) = b_ih + b_hh. Fills out (N,) int64, updates h (L, H)."""
    def step(index):
        for layer in range(h.shape[0]):
            matrix, scales, v, _, x_in = layer_inputs(x0, w0, s0, w, s, h, layer, index)
            rnn_layer(matrix, scales, v, b[layer] + x_in, relu, h[layer])
    _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out)
