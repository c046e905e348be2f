"""A whole recurrent layer (one direction), the time loop inside the kernel (naive numpy; the spec).

Shapes: ``T`` steps, batch ``B``, hidden ``H``, ``G`` gates (LSTM 4, GRU 3, RNN 1).

* ``xproj: (N, G*H)`` the input projection ``x @ W_ih.T`` plus biases, computed by the caller
  with one big matmul: for LSTM and RNN both biases (``b_ih + b_hh``); for GRU only ``b_ih``,
  because ``b_hh`` sits inside ``r * (h @ W_hn.T + b_hn)`` and is passed separately. Its rows
  are *packed*, as PyTorch's ``PackedSequence.data``: step ``t``'s ``batch_sizes[t]`` active rows,
  then step ``t+1``'s (``_packed_starts``); without padding that is ``(T, B, G*H)`` reshaped to
  ``(T*B, G*H)``, and with padding the padded positions take no room and no copy.
* ``w_hh: (G*H, H)`` in PyTorch's layout.
* ``acts_out: (T, B, G*H)`` (LSTM and GRU) may be ``xproj``'s own memory, reshaped, when no step
  has padding: every kernel (reference and CPU; not CUDA's) reads each number of ``xproj``
  before it writes the number of ``acts_out`` in its place. The layers write the gates over
  their input that way on the CPU (``ops/recurrent.py``, ``_gates_buffer``).
* ``hs_out: (T+1, B, H)``: ``hs_out[0] = h0``, ``hs_out[t+1]`` the state after step ``t``
  (so the layer's output is ``hs_out[1:]`` and ``h_n = hs_out[T]``); the same for ``cs_out``.
* The backward takes ``dhs: (T, B, H)``, the gradient w.r.t. ``hs[1:]``, and ``dh_n`` (``dc_n``)
  for the final state, runs BPTT, and writes the gradients w.r.t. the gate pre-activations of every
  step plus the initial state(s). The caller finishes with single matmuls:
  ``dW_hh = dgates^T @ hs[:-1]``, ``dW_ih = dgates^T @ x``, ``dx = dgates @ W_ih`` (dgates as (T*B, G*H)).
  For GRU ``dgi`` is the gradient w.r.t. ``gi = x @ W_ih.T + b_ih`` and ``dgh`` w.r.t.
  ``gh = h @ W_hh.T + b_hh`` (so ``dW_hh = dgh^T @ hs[:-1]``, ``db_hh = dgh.sum``).

Variable lengths (a sorted, padded batch): ``batch_sizes: (T,)`` int64, non-increasing; at step
``t`` only the rows ``b < batch_sizes[t]`` are active (``batch_sizes = full(T, B)`` without lengths).
An inactive row keeps its state (``hs[t+1, b] = hs[t, b]``, ``cs`` too, so ``hs[T]``, ``cs[T]``
hold each row's final state) and gets ``acts = 0`` (``ghn = 0``); in the backward it gets
``dgates = 0`` and its running ``dh``, ``dc`` pass through unchanged (``dhs`` is not added: the
outputs at padded positions are not used). The recurrent matmul runs on the active rows only.

Batch-1 generation of a whole character model (``*_generate``) is in ``generate.py``.
"""
import numpy as np

from .cells import (
    gru_cell_backward, gru_cell_forward, lstm_cell_backward, lstm_cell_forward,
    rnn_cell_backward, rnn_cell_forward,
)


def _packed_starts(batch_sizes):
    """starts (T+1,): step t's rows of a packed array are starts[t] .. starts[t+1]-1."""
    return np.concatenate([[0], np.cumsum(batch_sizes)]).astype(np.int64)


def pack_steps(x, batch_sizes):
    """x (T, B, ...) -> (N, ...): step t's first batch_sizes[t] rows, then step t+1's (the layout of
    ``xproj``; N = sum(batch_sizes))."""
    return np.concatenate([x[t, :n] for t, n in enumerate(batch_sizes)])


def _carry(n, arrays, t):
    """Inactive rows (b >= n) of step t keep their state: a[t+1, n:] = a[t, n:]."""
    for a in arrays:
        a[t + 1, n:] = a[t, n:]


# ---------------------------------------------------------------------------------------- LSTM

def lstm_sequence_forward(xproj, w_hh, h0, c0, batch_sizes, hs_out, cs_out, acts_out):
    """xproj: (N, 4H) packed; w_hh: (4H, H); h0, c0: (B, H); batch_sizes: (T,).
    Writes hs_out, cs_out (T+1, B, H) and acts_out (T, B, 4H) (activated gates i, f, g, o)."""
    hs_out[0], cs_out[0] = h0, c0
    starts = _packed_starts(batch_sizes)
    for t in range(len(batch_sizes)):
        n = batch_sizes[t]
        gates = xproj[starts[t]:starts[t + 1]] + hs_out[t, :n] @ w_hh.T
        lstm_cell_forward(gates, cs_out[t, :n], acts_out[t, :n], cs_out[t + 1, :n], hs_out[t + 1, :n])
        acts_out[t, n:] = 0
        _carry(n, (hs_out, cs_out), t)


def lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, batch_sizes, dgates_out, dh0_out, dc0_out):
    """Forward tensors hs, cs (T+1, B, H), acts (T, B, 4H); dhs (T, B, H); dh_n, dc_n (B, H); batch_sizes (T,).
    Writes dgates_out (T, B, 4H) and dh0_out, dc0_out (B, H)."""
    dh, dc = dh_n.copy(), dc_n.copy()          # gradient flowing into the state after step t
    for t in reversed(range(dhs.shape[0])):
        n = batch_sizes[t]
        dc_prev = np.empty_like(dc[:n])
        lstm_cell_backward(acts[t, :n], cs[t, :n], cs[t + 1, :n], dh[:n] + dhs[t, :n], dc[:n],
                           dgates_out[t, :n], dc_prev)
        dgates_out[t, n:] = 0
        dh[:n], dc[:n] = dgates_out[t, :n] @ w_hh, dc_prev
    dh0_out[...], dc0_out[...] = dh, dc


# ----------------------------------------------------------------------------------------- GRU

def gru_sequence_forward(xproj, w_hh, b_hh, h0, batch_sizes, hs_out, acts_out, ghn_out):
    """xproj: (N, 3H) packed (with b_ih only); w_hh: (3H, H); b_hh: (3H,); h0: (B, H); batch_sizes: (T,).
    Writes hs_out (T+1, B, H), acts_out (T, B, 3H) (r, z, n) and
    ghn_out (T, B, H) = h_t @ W_hn.T + b_hn (the hidden part of n, needed by the backward)."""
    H = h0.shape[1]
    hs_out[0] = h0
    starts = _packed_starts(batch_sizes)
    for t in range(len(batch_sizes)):
        n = batch_sizes[t]
        gh = hs_out[t, :n] @ w_hh.T + b_hh
        gru_cell_forward(xproj[starts[t]:starts[t + 1]], gh, hs_out[t, :n], acts_out[t, :n], hs_out[t + 1, :n])
        ghn_out[t, :n] = gh[:, 2 * H:]
        acts_out[t, n:], ghn_out[t, n:] = 0, 0
        _carry(n, (hs_out,), t)


def gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, batch_sizes, dgi_out, dgh_out, dh0_out):
    """Forward tensors hs (T+1, B, H), acts (T, B, 3H), ghn (T, B, H); dhs (T, B, H); dh_n (B, H);
    batch_sizes (T,). Writes dgi_out, dgh_out (T, B, 3H) and dh0_out (B, H)."""
    H = dh_n.shape[1]
    dh = dh_n.copy()
    for t in reversed(range(dhs.shape[0])):
        n = batch_sizes[t]
        gh = np.zeros((n, 3 * H), dh_n.dtype)  # the backward reads only its n part
        gh[:, 2 * H:] = ghn[t, :n]
        dh_direct = np.empty_like(dh[:n])
        gru_cell_backward(acts[t, :n], gh, hs[t, :n], dh[:n] + dhs[t, :n], dgi_out[t, :n], dgh_out[t, :n], dh_direct)
        dgi_out[t, n:], dgh_out[t, n:] = 0, 0
        dh[:n] = dh_direct + dgh_out[t, :n] @ w_hh
    dh0_out[...] = dh


# ----------------------------------------------------------------------------- layer-normalised GRU
# The GRU with its recurrent projection layer-normalised at every step (``tinyrnn.nn.cells`` has the
# equations): gh = LN(h @ W_hh.T) * ln_weight + ln_bias, the normalisation over all 3H numbers of a
# row, and ln_bias in the place of b_hh. (The input side, LN(x @ W_ih.T) * gain + shift, needs no
# recurrence: the caller computes it for all steps at once and passes it as xproj.)

def _normalised(raw, eps):
    """raw (n, 3H) -> (xhat, rstd): each row to mean 0, variance 1 (``norm.py``)."""
    mean = raw.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((raw - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    return (raw - mean) * rstd, rstd[:, 0]


def layer_norm_gru_sequence_forward(xproj, w_hh, ln_weight, ln_bias, eps, h0, batch_sizes, hs_out, acts_out,
                                    xhat_out, rstd_out):
    """xproj: (N, 3H) packed (the normalised input side); w_hh: (3H, H); ln_weight, ln_bias: (3H,)
    the recurrent side's gain and shift; h0: (B, H); batch_sizes: (T,). Writes hs_out (T+1, B, H),
    acts_out (T, B, 3H) = (r, z, n), and what the backward needs of the normalisation: xhat_out
    (T, B, 3H) = the normalised h_t @ W_hh.T, rstd_out (T, B) = 1 / its row's std (0 when inactive)."""
    hs_out[0] = h0
    starts = _packed_starts(batch_sizes)
    for t in range(len(batch_sizes)):
        n = batch_sizes[t]
        xhat, rstd = _normalised(hs_out[t, :n] @ w_hh.T, eps)
        gru_cell_forward(xproj[starts[t]:starts[t + 1]], xhat * ln_weight + ln_bias, hs_out[t, :n],
                         acts_out[t, :n], hs_out[t + 1, :n])
        xhat_out[t, :n], rstd_out[t, :n] = xhat, rstd
        acts_out[t, n:], xhat_out[t, n:], rstd_out[t, n:] = 0, 0, 0
        _carry(n, (hs_out,), t)


def layer_norm_gru_sequence_backward(w_hh, ln_weight, ln_bias, hs, acts, xhat, rstd, dhs, dh_n, batch_sizes,
                                     dgi_out, dgh_out, draw_out, dh0_out):
    """Forward tensors hs (T+1, B, H), acts, xhat (T, B, 3H), rstd (T, B); dhs (T, B, H); dh_n (B, H);
    batch_sizes (T,). Writes dgi_out (T, B, 3H) w.r.t. xproj, dgh_out w.r.t. the normalised gh (so
    d ln_weight = sum of dgh * xhat, d ln_bias = sum of dgh), draw_out w.r.t. h_t @ W_hh.T before
    the normalisation (so dW_hh = draw^T @ hs[:-1]), and dh0_out (B, H)."""
    dh = dh_n.copy()
    for t in reversed(range(dhs.shape[0])):
        n = batch_sizes[t]
        dh_direct = np.empty_like(dh[:n])
        gru_cell_backward(acts[t, :n], xhat[t, :n] * ln_weight + ln_bias, hs[t, :n], dh[:n] + dhs[t, :n],
                          dgi_out[t, :n], dgh_out[t, :n], dh_direct)
        g, x = dgh_out[t, :n] * ln_weight, xhat[t, :n]       # the layer norm's backward (``norm.py``)
        draw_out[t, :n] = rstd[t, :n, None] * (g - g.mean(axis=1, keepdims=True)
                                               - x * (g * x).mean(axis=1, keepdims=True))
        dgi_out[t, n:], dgh_out[t, n:], draw_out[t, n:] = 0, 0, 0
        dh[:n] = dh_direct + draw_out[t, :n] @ w_hh
    dh0_out[...] = dh


# ----------------------------------------------------------------------------------------- RNN

def rnn_sequence_forward(xproj, w_hh, h0, batch_sizes, hs_out, relu):
    """xproj: (N, H) packed; w_hh: (H, H); h0: (B, H); batch_sizes: (T,). Writes hs_out (T+1, B, H)."""
    hs_out[0] = h0
    starts = _packed_starts(batch_sizes)
    for t in range(len(batch_sizes)):
        n = batch_sizes[t]
        rnn_cell_forward(xproj[starts[t]:starts[t + 1]] + hs_out[t, :n] @ w_hh.T, hs_out[t + 1, :n], relu)
        _carry(n, (hs_out,), t)


def rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, batch_sizes, dpre_out, dh0_out):
    """hs (T+1, B, H); dhs (T, B, H); dh_n (B, H); batch_sizes (T,).
    Writes dpre_out (T, B, H) and dh0_out (B, H)."""
    dh = dh_n.copy()
    for t in reversed(range(dhs.shape[0])):
        n = batch_sizes[t]
        rnn_cell_backward(hs[t + 1, :n], dh[:n] + dhs[t, :n], dpre_out[t, :n], relu)
        dpre_out[t, n:] = 0
        dh[:n] = dpre_out[t, :n] @ w_hh
    dh0_out[...] = dh
