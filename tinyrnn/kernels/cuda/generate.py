"""Batch-1 generation from a whole character model on the GPU.

Arguments and the sampling rule as in ``reference/generate.py`` (the rule described in
``reference/sampling.py``): x0 (V, G*H) (layer 0's input products, a row per character), w0
(G*H, H) (layer 0's w_hh) and w (L-1, G*H, 2H) (each further layer's [w_ih | w_hh]), biases
(L, G*H), w_out (V, H), b_out (V,) and the state h (L, H) (c (L, H)) are device arrays; h and c are updated in place. prime, uniforms and out may be host or device
arrays. The matrices are float only: each one's row scales (s0, s, s_out, the compact formats'
argument) must be empty (``tinyrnn sample`` runs bfloat16 and int8 on the CPU).

Each step runs on the device, one launch per matmul and gate kernel, with the per-layer rows
addressed by row offsets and a layer's matrix read as its two column halves (views, nothing
copied): layer 0 copies the row ``index`` of x0, layer l > 0 multiplies the row l - 1 of h by
w[l-1][:, :H]; the recurrent half (w0, w[l-1][:, H:]) multiplies the layer's own row of h. (For
float weights the two products summed are the one product w @ [x; h] of the reference.) The logits
(V numbers) come back to the host, which samples with the reference's ``sample_index``: batch-1
sampling is latency-bound, and this keeps the GPU's samples identical to the reference's for
the same uniforms.
"""
import numpy as np
from numba import cuda

from ..reference.sampling import sample_index   # numpy only: the sampling rule, run on the host
from .cells import gru_cell_forward, lstm_cell_forward, rnn_cell_forward
from .device import is_device_array, to_host
from .elementwise import add_bias_forward
from .matmul import matmul_nt_rows


class _Generator:
    """The parts shared by the three models: buffers, the head, and the sampling loop."""

    def __init__(self, x0, w0, w, w_out, b_out, h, scales):
        if any(s.size for s in scales) or any(m.dtype.kind != "f" for m in (w0, w, w_out)):
            raise ValueError("the CUDA generator takes float weight matrices (empty row scales)")
        self.x0, self.w_out, self.b_out, self.h = x0, w_out, b_out, h
        self.L = h.shape[0]
        H = h.shape[1]
        layers = [w[l] for l in range(self.L - 1)]          # device views, made once per call
        self.w_ih = [None] + [m[:, :H] for m in layers]     # each further layer's input half ...
        self.w_hh = [w0] + [m[:, H:] for m in layers]       # ... and every layer's recurrent half
        self.h_rows = [h[l:l + 1] for l in range(self.L)]  # (1, H) views of each layer's state
        self.logits = cuda.device_array((1, w_out.shape[0]), dtype=w_out.dtype)

    def input_projection(self, index, layer, out, accumulate):
        """out (1, G*H) (+)= x @ W_ih^T: the row x0[index] at layer 0 (``accumulate`` must be False
        there), else x = h[layer - 1]."""
        if layer == 0:
            assert not accumulate
            out.copy_to_device(self.x0[int(index):int(index) + 1])
        else:
            matmul_nt_rows(self.h, layer - 1, self.w_ih[layer], out, 0, 1, accumulate)

    def run(self, step, prime, uniforms, temperature, top_k, top_p, out):
        uniforms = to_host(uniforms)
        samples = np.empty(out.shape[0], dtype=np.int64)
        for index in to_host(prime):
            step(index)
        for n in range(samples.shape[0]):
            matmul_nt_rows(self.h, self.L - 1, self.w_out, self.logits, 0, 1, False)
            add_bias_forward(self.logits, self.b_out)
            samples[n] = sample_index(self.logits.copy_to_host()[0], uniforms[n], temperature, top_k, top_p)
            if n + 1 < samples.shape[0]:
                step(samples[n])
        if is_device_array(out):
            out.copy_to_device(samples)
        else:
            out[...] = samples


def lstm_generate(x0, w0, s0, w, s, b, w_out, s_out, b_out, h, c, prime, uniforms, temperature, top_k,
                  top_p, out):
    """Batch-1 LSTM sampling; b (L, 4H) = b_ih + b_hh. Fills out (N,) int64, updates h, c (L, H)."""
    gen = _Generator(x0, w0, w, w_out, b_out, h, (s0, s, s_out))
    gates = cuda.device_array((1, w0.shape[0]), dtype=w0.dtype)
    acts = cuda.device_array((1, w0.shape[0]), dtype=w0.dtype)
    b_rows = [b[l] for l in range(gen.L)]
    c_rows = [c[l:l + 1] for l in range(gen.L)]

    def step(index):
        for layer in range(gen.L):
            gen.input_projection(index, layer, gates, False)
            matmul_nt_rows(h, layer, gen.w_hh[layer], gates, 0, 1, True)
            add_bias_forward(gates, b_rows[layer])
            lstm_cell_forward(gates, c_rows[layer], acts, c_rows[layer], gen.h_rows[layer])   # c, h in place

    gen.run(step, prime, uniforms, temperature, top_k, top_p, out)


def gru_generate(x0, w0, s0, w, s, b_ih, b_hh, w_out, s_out, b_out, h, prime, uniforms, temperature,
                 top_k, top_p, out):
    """Batch-1 GRU sampling; b_ih, b_hh (L, 3H). Fills out (N,) int64, updates h (L, H)."""
    gen = _Generator(x0, w0, w, w_out, b_out, h, (s0, s, s_out))
    gi = cuda.device_array((1, w0.shape[0]), dtype=w0.dtype)
    gh = cuda.device_array((1, w0.shape[0]), dtype=w0.dtype)
    acts = cuda.device_array((1, w0.shape[0]), dtype=w0.dtype)
    b_ih_rows = [b_ih[l] for l in range(gen.L)]
    b_hh_rows = [b_hh[l] for l in range(gen.L)]

    def step(index):
        for layer in range(gen.L):
            gen.input_projection(index, layer, gi, False)
            add_bias_forward(gi, b_ih_rows[layer])
            matmul_nt_rows(h, layer, gen.w_hh[layer], gh, 0, 1, False)
            add_bias_forward(gh, b_hh_rows[layer])
            h_row = gen.h_rows[layer]
            gru_cell_forward(gi, gh, h_row, acts, h_row)    # each thread reads its h element, then writes it

    gen.run(step, prime, uniforms, temperature, top_k, top_p, out)


def rnn_generate(x0, w0, s0, w, s, b, relu, w_out, s_out, b_out, h, prime, uniforms, temperature, top_k,
                 top_p, out):
    """Batch-1 RNN sampling; b (L, H) = b_ih + b_hh. Fills out (N,) int64, updates h (L, H)."""
    gen = _Generator(x0, w0, w, w_out, b_out, h, (s0, s, s_out))
    pre = cuda.device_array((1, w0.shape[0]), dtype=w0.dtype)
    b_rows = [b[l] for l in range(gen.L)]

    def step(index):
        for layer in range(gen.L):
            gen.input_projection(index, layer, pre, False)
            matmul_nt_rows(h, layer, gen.w_hh[layer], pre, 0, 1, True)
            add_bias_forward(pre, b_rows[layer])
            rnn_cell_forward(pre, gen.h_rows[layer], relu)

    gen.run(step, prime, uniforms, temperature, top_k, top_p, out)
