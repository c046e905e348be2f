"""What int8 sampling costs in bits/char, split into its two roundings.

    python -m tinyrnn.bench.int8_rounding RUN HELD_OUT.txt [--chars 30000]

``tinyrnn eval --weights int8`` scores the model with its matrices rounded to int8 (one scale per
row), through the batched kernels. Sampling with int8 weights also rounds the vector of every
product to 16-bit integers (``kernels/reference/weight_formats.py``). This reads the first
``--chars`` characters of a text one at a time, as sampling does, through the numpy reference
math, and prints bits/char three ways: float32, int8 weights, and int8 weights with the rounded
vectors (what ``tinyrnn sample --weights int8`` computes). Slow (numpy, a character at a time):
a few milliseconds a character for a 2x256 LSTM.
"""
import argparse
import math

import numpy as np

from ..checkpoint import load_model
from ..generate import MATRICES, generation_weights
from ..kernels.reference.cells import gru_cell_forward, lstm_cell_forward, rnn_cell_forward
from ..kernels.reference.weight_formats import no_scale, times, widen


def _weights(model, weights, round_vectors):
    """generation_weights; without round_vectors each matrix widened once to the values it stands
    for (float, empty scales), so that ``times`` multiplies in float and rounds no vector."""
    w = generation_weights(model, weights)
    if not round_vectors:
        for name in MATRICES:
            scale = "s" + name[1:]
            w[name] = widen(w[name], w[scale])
            w[scale] = no_scale(w[name])
    return w


def _layer(model, w, layer, x, h, c):
    """Advance one layer by one input x (H or E,); h, c: that layer's state (H,), updated in place."""
    w_in, s_in = (w["w_ih0"], w["s_ih0"]) if layer == 0 else (w["w_ih"][layer - 1], w["s_ih"][layer - 1])
    from_x, from_h = times(w_in, s_in, x), times(w["w_hh"][layer], w["s_hh"][layer], h)
    if model.cell == "gru":
        gi, gh = from_x + w["b_ih"][layer], from_h + w["b_hh"][layer]
        gru_cell_forward(gi[None], gh[None], h[None].copy(), np.empty_like(gi)[None], h[None])
    elif model.cell == "lstm":
        gates = from_x + from_h + w["b"][layer]
        lstm_cell_forward(gates[None], c[None], np.empty_like(gates)[None], c[None], h[None])
    else:
        rnn_cell_forward((from_x + from_h + w["b"][layer])[None], h[None], model.rnn.nonlinearity == "relu")


def bits_per_char(model, ids, weights, round_vectors):
    """Mean -log2 p(next character) over ids (N,), reading one character at a time."""
    w = _weights(model, weights, round_vectors)
    h = np.zeros((model.layers, model.hidden), w["b_out"].dtype)
    c = np.zeros_like(h)
    total = 0.0
    for t in range(len(ids) - 1):
        x = w["embedding"][ids[t]]
        for layer in range(model.layers):
            _layer(model, w, layer, x, h[layer], c[layer])
            x = h[layer]
        z = (times(w["w_out"], w["s_out"], h[-1]) + w["b_out"]).astype(np.float64)
        z -= z.max()
        total -= z[ids[t + 1]] - math.log(np.exp(z).sum())
    return total / (len(ids) - 1) / math.log(2)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinyrnn.bench.int8_rounding", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run directory or checkpoint of a unidirectional character model")
    p.add_argument("text", help="held-out UTF-8 text in the model's vocabulary")
    p.add_argument("--chars", type=int, default=30000, help="characters to read (default 30000)")
    args = p.parse_args(argv)
    model, vocab, _ = load_model(args.run)
    with open(args.text, encoding="utf-8") as f:
        ids = vocab.encode(f.read(args.chars))
    for label, weights, round_vectors in (("float32", "f32", False), ("int8 weights", "int8", False),
                                          ("int8 weights, vectors rounded to int16 (sampling)", "int8", True)):
        print(f"{label}: {bits_per_char(model, ids, weights, round_vectors):.5f} bits/char", flush=True)


if __name__ == "__main__":
    main()
