"""What sampling with compact weights costs in bits/char, split into its two roundings.

    python -m tinyrnn.bench.rounding RUN HELD_OUT.txt [--chars 30000] [--weights bf16,int8]

``tinyrnn eval --weights bf16|int8`` scores the model with its matrices rounded to that format,
through the batched kernels. Sampling also rounds the vector of every product: to bfloat16 for a
bfloat16 matrix, to 8-bit integers for an int8 one (``kernels/reference/weight_formats.py``).
This reads the first ``--chars`` characters of a text one at a time, as sampling does, through the
numpy reference math, and prints bits/char: float32, then for each format its weights alone and
its weights with the rounded vectors (what ``tinyrnn sample --weights FORMAT`` computes). Slow
(numpy, a character at a time): a few milliseconds a character for a 2x256 LSTM.
"""
import argparse
import math

import numpy as np

from ..checkpoint import load_model
from ..generate import MATRICES, generation_weights
from ..kernels.reference.generate import gru_layer, layer_inputs, lstm_layer, rnn_layer
from ..kernels.reference.weight_formats import no_scale, times, widen

VECTOR_ROUNDING = {"bf16": "bfloat16", "int8": "int8"}     # what a product rounds its vector to


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


def _advance(model, w, h, c, index):
    """Every layer advanced by one input index, by the reference generator's layer math; h, c (L, H)."""
    for layer in range(model.layers):
        matrix, scales, v, Kx, x_in = layer_inputs(w["x0"], w["w0"], w["s0"], w["w"], w["s"], h, layer, index)
        if model.cell == "gru":
            gru_layer(matrix, scales, v, Kx, w["b_ih"][layer] + x_in, w["b_hh"][layer], h[layer])
        elif model.cell == "lstm":
            lstm_layer(matrix, scales, v, w["b"][layer] + x_in, h[layer], c[layer])
        else:
            rnn_layer(matrix, scales, v, w["b"][layer] + x_in, model.rnn.nonlinearity == "relu", h[layer])


def bits_per_char(model, ids, weights, round_vectors):
    """Mean -log2 p(next character) over ids (N,), reading one character at a time."""
    w = _weights(model, weights, round_vectors)
    h = np.zeros((model.layers, model.hidden), w["b_out"].dtype)
    c = np.zeros_like(h)
    total = 0.0
    for t in range(len(ids) - 1):
        _advance(model, w, h, c, ids[t])
        z = (times(w["w_out"], w["s_out"], h[-1]) + w["b_out"]).astype(np.float64)
        z -= z.max()
        total -= z[ids[t + 1]] - math.log(np.exp(z).sum())
    return total / (len(ids) - 1) / math.log(2)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinyrnn.bench.rounding", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a run directory or checkpoint of a unidirectional character model")
    p.add_argument("text", help="held-out UTF-8 text in the model's vocabulary")
    p.add_argument("--chars", type=int, default=30000, help="characters to read (default 30000)")
    p.add_argument("--weights", default="bf16,int8", help="comma-separated formats (default bf16,int8)")
    args = p.parse_args(argv)
    formats = [f for f in args.weights.split(",") if f]
    if not formats or set(formats) - set(VECTOR_ROUNDING):
        p.error(f"--weights {args.weights!r}: use a comma-separated list of {', '.join(VECTOR_ROUNDING)}")
    model, vocab, _ = load_model(args.run)
    with open(args.text, encoding="utf-8") as f:
        ids = vocab.encode(f.read(args.chars))
    print(f"float32: {bits_per_char(model, ids, 'f32', False):.5f} bits/char", flush=True)
    for weights in formats:
        for label, round_vectors in ((f"{weights} weights", False),
                                     (f"{weights} weights, vectors rounded to {VECTOR_ROUNDING[weights]} (sampling)", True)):
            print(f"{label}: {bits_per_char(model, ids, weights, round_vectors):.5f} bits/char", flush=True)


if __name__ == "__main__":
    main()
