"""Batch-1 generation from a whole stacked, unidirectional character model (naive numpy; the spec):

    embedding (V, E) -> L recurrent layers (hidden H) -> linear head (V, H) -> sample.
Per-layer weights are stacked along a leading layer axis, because layer 0 reads the embedding
(width E) and the others read H:
    w_ih0 (G*H, E)        layer 0's input weights
    w_ih  (L-1, G*H, H)   the input weights of layers 1..L-1 (shape (0, G*H, H) when L == 1)
    w_hh  (L, G*H, H)
    b     (L, G*H)        LSTM and RNN: b_ih + b_hh;  GRU passes b_ih and b_hh separately
    w_out (V, H), b_out (V,)
Each of the four weight matrices (w_ih0, w_ih, w_hh, w_out) is followed by its row scales
(s_ih0 (G*H,), s_ih (L-1, G*H), s_hh (L, G*H), s_out (V,)). A matrix may be float (of h's dtype),
bfloat16 stored as uint16, or int8 with those per-row scales (``weight_formats.py``); float and
bfloat16 matrices take empty scales (shape (..., 0)). Each weight is the float value it stands for;
a product with an int8 matrix rounds its vector to 16-bit integers first (``weight_formats.times``).
h (L, H) (and c (L, H)) hold the initial state and are updated in place. The model first reads
prime (P,) (P >= 1, int64), then generates N = len(out) indices, one uniform from uniforms (N,)
per index. On return h (c) is the state after reading prime and out[:-1]: to continue, pass
out[-1:] as the next prime.

Each sampled index follows the rule of ``sample_index`` (``sampling.py``, where it is described).
"""
import numpy as np

from .cells import gru_cell_forward, lstm_cell_forward, rnn_cell_forward
from .sampling import sample_index
from .weight_formats import times


def _input_weights(layer, w_ih0, s_ih0, w_ih, s_ih):
    """A layer's input matrix and its row scales: layer 0 reads the embedding, the others h."""
    return (w_ih0, s_ih0) if layer == 0 else (w_ih[layer - 1], s_ih[layer - 1])


def _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out):
    """The loop shared by the three models: step(index) advances the state by one input."""
    for index in prime:
        step(index)
    for n in range(len(out)):
        logits = times(w_out, s_out, h[-1]) + b_out
        out[n] = sample_index(logits, uniforms[n], temperature, top_k, top_p)
        if n + 1 < len(out):
            step(out[n])


def lstm_generate(embedding, w_ih0, s_ih0, w_ih, s_ih, w_hh, s_hh, b, w_out, s_out, b_out, h, c, prime,
                  uniforms, temperature, top_k, top_p, out):
    """Batch-1 LSTM sampling (see the module docstring); fills out (N,) int64, updates h, c (L, H)."""
    def step(index):
        x = embedding[index]
        for layer in range(w_hh.shape[0]):
            gates = (times(*_input_weights(layer, w_ih0, s_ih0, w_ih, s_ih), x)
                     + times(w_hh[layer], s_hh[layer], h[layer]) + b[layer])
            acts = np.empty_like(gates)
            lstm_cell_forward(gates[None], c[layer][None], acts[None], c[layer][None], h[layer][None])
            x = h[layer]
    _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out)


def gru_generate(embedding, w_ih0, s_ih0, w_ih, s_ih, w_hh, s_hh, b_ih, b_hh, w_out, s_out, b_out, h, prime,
                 uniforms, temperature, top_k, top_p, out):
    """Batch-1 GRU sampling; b_ih, b_hh (L, 3H). Fills out (N,) int64, updates h (L, H)."""
    def step(index):
        x = embedding[index]
        for layer in range(w_hh.shape[0]):
            gi = times(*_input_weights(layer, w_ih0, s_ih0, w_ih, s_ih), x) + b_ih[layer]
            gh = times(w_hh[layer], s_hh[layer], h[layer]) + b_hh[layer]
            acts = np.empty_like(gi)
            gru_cell_forward(gi[None], gh[None], h[layer][None].copy(), acts[None], h[layer][None])
            x = h[layer]
    _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out)


def rnn_generate(embedding, w_ih0, s_ih0, w_ih, s_ih, w_hh, s_hh, b, relu, w_out, s_out, b_out, h, prime,
                 uniforms, temperature, top_k, top_p, out):
    """Batch-1 RNN sampling; b (L, H) = b_ih + b_hh. Fills out (N,) int64, updates h (L, H)."""
    def step(index):
        x = embedding[index]
        for layer in range(w_hh.shape[0]):
            pre = (times(*_input_weights(layer, w_ih0, s_ih0, w_ih, s_ih), x)
                   + times(w_hh[layer], s_hh[layer], h[layer]) + b[layer])
            rnn_cell_forward(pre[None], h[layer][None], relu)
            x = h[layer]
    _generate(step, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k, top_p, out)
