"""Kernels: plain functions over arrays, apart from the Python-level API.

Three modules share every function name and argument order:

* ``tinyrnn.kernels.reference`` - naive numpy. The *spec*: short, obviously right, slow.
* ``tinyrnn.kernels.cpu``       - Numba ``@njit`` kernels (``prange`` multithreaded).
* ``tinyrnn.kernels.cuda``      - ``numba.cuda`` kernels (arrays are device arrays).

Conventions (all three modules):

* Outputs are passed in, preallocated by the caller (``out``, ``*_out``); kernels
  allocate nothing inside their time loops. ``accumulate=True`` means ``out += ...``.
* float32 and float64 both work; every array of one call has the same float dtype.
  Integer index arrays are int64.
* Names are ``<thing>_forward`` / ``<thing>_backward``.

The kernels (shapes in brackets):

matmul.py
    matmul_nn(a[M,K], b[K,N], out[M,N], accumulate)       out (+)= a @ b
    matmul_nt(a[M,K], b[N,K], out[M,N], accumulate)       out (+)= a @ b.T
    matmul_tn(a[K,M], b[K,N], out[M,N], accumulate)       out (+)= a.T @ b

loss.py
    softmax_xent_forward(logits[N,V], targets[N], ignore_index, probs_out[N,V], losses_out[N])
        probs = softmax(logits) per row; losses[n] = -log probs[n, targets[n]] (0 where ignored)
    softmax_xent_backward(probs[N,V], targets[N], ignore_index, scale, dlogits_out[N,V])
        dlogits = scale * (probs - onehot(targets)); rows with target == ignore_index get 0
    log_softmax_forward(x[N,V], out[N,V])
    log_softmax_backward(out[N,V], dout[N,V], dx_out[N,V])   dx = dout - exp(out) * sum(dout)

norm.py
    layer_norm_forward(x[N,D], weight[D], bias[D], eps, out[N,D], mean_out[N], rstd_out[N])
        out = (x - mean) * rstd * weight + bias per row, rstd = 1 / sqrt(var + eps); weight, bias may be
        empty (0,): no gain, no shift
    layer_norm_backward(x, weight, mean[N], rstd[N], dout[N,D], dx_out[N,D], dweight_out[D], dbias_out[D])
        dweight, dbias overwritten (or empty: not computed)
    layer_norm_params_backward(x, mean, rstd, dout, dweight_out, dbias_out)   those two alone

embedding.py
    embedding_forward(weight[V,E], idx[N], out[N,E])          out[n] = weight[idx[n]]
    embedding_backward(idx[N], dout[N,E], dweight[V,E])       dweight[idx[n]] += dout[n]  (repeats add up)

elementwise.py
    add_bias_forward(x[N,M], bias[M])                          x += bias (in place, per row)
    bias_backward(dout[N,M], dbias[M], accumulate)             dbias (+)= dout.sum(0)
    sum_of_squares(x[P]) -> float                              sum(x**2), accumulated in float64
    scale_inplace(x[P], s)                                     x *= s
    fused optimizer steps, in place on the flat arrays of one parameter (all [P]; ``grad`` is only
    read; a buffer the options do not use may be empty); formulas as in torch.optim, see the module:
    sgd_update(param, grad, buf, lr, momentum, nesterov, weight_decay)
    adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled)
        step counts this parameter's updates, this one included; decoupled=True is AdamW
    adagrad_update(param, grad, sum_sq, lr, eps, weight_decay)
    rmsprop_update(param, grad, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum, centered)

cells.py   - one time step, from pre-activations (gate order as in PyTorch)
    lstm_cell_forward(gates[B,4H], c_prev[B,H], acts_out[B,4H], c_out[B,H], h_out[B,H])
    lstm_cell_backward(acts[B,4H], c_prev[B,H], c[B,H], dh[B,H], dc[B,H], dgates_out[B,4H], dc_prev_out[B,H])
    gru_cell_forward(gi[B,3H], gh[B,3H], h_prev[B,H], acts_out[B,3H], h_out[B,H])
    gru_cell_backward(acts[B,3H], gh[B,3H], h_prev[B,H], dh[B,H], dgi_out[B,3H], dgh_out[B,3H], dh_prev_out[B,H])
    rnn_cell_forward(pre[B,H], h_out[B,H], relu)
    rnn_cell_backward(h[B,H], dh[B,H], dpre_out[B,H], relu)

sequence.py - a whole layer, one direction; the time loop runs inside the kernel. batch_sizes[T] (int64,
    non-increasing; full(T, B) without lengths): at step t only rows b < batch_sizes[t] are active, the others
    keep their state (so hs[T], cs[T] hold each row's final state) and get zero gates and gate gradients
    (on CUDA, batch_sizes is a host array: the time loop runs on the host); xproj is packed, as PyTorch's
    PackedSequence.data: step t's batch_sizes[t] active rows, then step t+1's (N = sum(batch_sizes); (T*B, G*H)
    without padding)
    lstm_sequence_forward(xproj[N,4H], w_hh[4H,H], h0[B,H], c0[B,H], batch_sizes[T], hs_out[T+1,B,H], cs_out[T+1,B,H], acts_out[T,B,4H])
    lstm_sequence_backward(w_hh, hs, cs, acts, dhs[T,B,H], dh_n[B,H], dc_n[B,H], batch_sizes[T], dgates_out[T,B,4H], dh0_out[B,H], dc0_out[B,H])
    gru_sequence_forward(xproj[N,3H], w_hh[3H,H], b_hh[3H], h0[B,H], batch_sizes[T], hs_out[T+1,B,H], acts_out[T,B,3H], ghn_out[T,B,H])
    gru_sequence_backward(w_hh, hs, acts, ghn, dhs[T,B,H], dh_n[B,H], batch_sizes[T], dgi_out[T,B,3H], dgh_out[T,B,3H], dh0_out[B,H])
    layer_norm_gru_sequence_forward(xproj[N,3H], w_hh[3H,H], ln_weight[3H], ln_bias[3H], eps, h0[B,H], batch_sizes[T],
                                    hs_out[T+1,B,H], acts_out[T,B,3H], xhat_out[T,B,3H], rstd_out[T,B])
        the GRU with gh = layer_norm(h @ w_hh.T) * ln_weight + ln_bias; xproj already normalised by the caller
    layer_norm_gru_sequence_backward(w_hh, ln_weight, ln_bias, hs, acts, xhat, rstd, dhs[T,B,H], dh_n[B,H],
                                     batch_sizes[T], dgi_out[T,B,3H], dgh_out[T,B,3H], draw_out[T,B,3H], dh0_out[B,H])
        dgh w.r.t. the normalised gh, draw w.r.t. h @ w_hh.T before it
    rnn_sequence_forward(xproj[N,H], w_hh[H,H], h0[B,H], batch_sizes[T], hs_out[T+1,B,H], relu)
    rnn_sequence_backward(w_hh, hs, dhs[T,B,H], dh_n[B,H], relu, batch_sizes[T], dpre_out[T,B,H], dh0_out[B,H])

generate.py - batch-1 sampling from a stacked char model, embedding -> L layers -> head (no Python per char);
    layer 0's input products as a table x0 (a row per character: x0[v] = w_ih @ embedding[v]) and its
    w_hh (w0); each further layer's [w_ih | w_hh] as one matrix (gates = w @ [x; h] + b), stacked on a
    leading layer axis (w); b = b_ih + b_hh (LSTM, RNN); h, c updated in place;
    reads prime[P] (P >= 1), fills out[N] (int64), one uniform per sampled index; the sampling rule
    (temperature <= 0 is argmax, top-k, top-p) is ``sample_index`` in ``reference/sampling.py``:
    each matrix is followed by its row scales (empty for float and bfloat16 matrices, one float32 per
    row for int8, stored as uint8 in excess 128; the formats: ``reference/weight_formats.py``):
    lstm_generate(x0[V,4H], w0[4H,H], s0[4H], w[L-1,4H,2H], s[L-1,4H], b[L,4H],
                  w_out[V,H], s_out[V], b_out[V],
                  h[L,H], c[L,H], prime[P], uniforms[N], temperature, top_k, top_p, out[N])
    gru_generate(x0[V,3H], w0[3H,H], s0, w[L-1,3H,2H], s, b_ih[L,3H], b_hh[L,3H],
                 w_out, s_out, b_out, h[L,H], prime, uniforms, temperature, top_k, top_p, out)
    rnn_generate(x0[V,H], w0[H,H], s0, w[L-1,H,2H], s, b[L,H], relu,
                 w_out, s_out, b_out, h[L,H], prime, uniforms, temperature, top_k, top_p, out)

See each module for the exact math.
"""

import importlib

SUBMODULES = ("matmul", "loss", "norm", "embedding", "elementwise", "cells", "sequence", "generate")


def lazy_lookup(package: str, namespace: dict):
    """A module ``__getattr__`` for the three kernel packages: find a kernel name in the submodules
    on first use (importing only then, so ``import tinyrnn`` compiles and imports nothing)."""

    def __getattr__(name):
        for sub in SUBMODULES:
            try:
                module = importlib.import_module(f"{package}.{sub}")
            except ModuleNotFoundError as e:
                if e.name == f"{package}.{sub}":
                    continue
                raise
            if hasattr(module, name):
                namespace[name] = value = getattr(module, name)
                return value
        raise AttributeError(f"module {package!r} has no kernel {name!r}")

    return __getattr__
