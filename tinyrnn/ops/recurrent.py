"""The recurrent cells as taped ops: one fused step, and a whole layer over T steps.

The equations of each cell, written once, and the composed form built from primitives, are in
``tinyrnn.nn.cells``; the ops here compute the same functions, fast:

* ``*_step_fused``: the two projections, then ONE op whose forward and backward are the
  Numba gate kernels ``*_cell_forward`` / ``*_cell_backward`` (tinyrnn/kernels/*/cells.py).
* ``*_sequence``: a whole layer in one direction over T steps, ONE op on the tape. The input
  projection for all steps is one matmul; the time loop (h @ W_hh^T plus the gate kernel) and
  backpropagation through time run inside Numba (``*_sequence_forward/backward``); the weight
  gradients are single matmuls over all steps after the backward sweep:
        dW_ih = dgates^T @ x,   dW_hh = dgates^T @ h_{t-1},   dx = dgates @ W_ih.

Shapes: x: (B, I) one step, or (T, B, I) a sequence; h, c: (B, H); G gates per cell (RNN 1,
GRU 3, LSTM 4); weights in PyTorch's layout: w_ih: (G*H, I), w_hh: (G*H, H), b_ih, b_hh: (G*H,).

They run on the CPU or the GPU, wherever their inputs are: ``K`` is the kernel module and ``A``
the array helpers of that device (``tinyrnn.backend``), so the same lines allocate, reverse time
(``x[::-1]`` made contiguous) and pack outputs on both.
"""
from __future__ import annotations

import numpy as np

from ..backend import arrays, kernels
from ..tensor import record
from .primitives import linear, same_device

def _data(A, t):
    return None if t is None else A.contiguous(t.data)


def _bias_sum(A, b_ih, b_hh):
    """b_ih + b_hh (the LSTM and RNN gates see only the sum), or None without biases."""
    if b_ih is None:
        return None
    return A.add(_data(A, b_ih), _data(A, b_hh))


def _time_order(A, x, reverse):
    """x (T, ...) as a contiguous array, in reading order (time reversed if ``reverse``)."""
    return A.contiguous(x[::-1] if reverse else x)


def _project(K, A, x2, w_ih, bias):
    """x2 @ w_ih.T (+ bias) for all rows at once: (N, I) -> (N, G*H)."""
    out = A.empty((x2.shape[0], w_ih.shape[0]), dtype=x2.dtype)
    K.matmul_nt(x2, w_ih, out, False)
    if bias is not None:
        K.add_bias_forward(out, bias)
    return out


class InputProjection:
    """pre = x @ W_ih^T + bias for all T*B steps of a sequence at once (in reading order), and its backward.

    x: (T, B, I). When x is an embedding lookup, x = E[idx], over a vocabulary smaller than T*B,
    the product is taken over the table instead of the rows - the same numbers for V rows of work
    instead of T*B (a character model has V = 65 and T*B = 2048):
        pre     = (E @ W_ih^T + bias)[idx]
        dTable  = scatter-add of dpre's rows by idx          (V, G*H)
        dW_ih   = dTable^T @ E,   dE = dTable @ W_ih,   dbias = dTable summed over rows
    ``source`` is the tensor the input gradient goes to: x itself, or the table E.
    """

    def __init__(self, K, A, x, w_ih, bias, reverse):
        T, B, I = x.shape
        self.K, self.A, self.w, self.reverse, self.shape = K, A, A.contiguous(w_ih.data), reverse, x.shape
        lookup = x._lookup
        if lookup is not None and lookup[0].shape[0] < T * B:
            table, idx = lookup
            self.source, self.rows = table, A.contiguous(table.data)                     # E: (V, I)
            self.idx = np.ascontiguousarray(idx[::-1] if reverse else idx).reshape(T * B)
            projected_table = _project(K, A, self.rows, self.w, bias)                     # (V, G*H)
            self.out = A.empty((T * B, self.w.shape[0]), dtype=self.rows.dtype)
            K.embedding_forward(projected_table, self.idx, self.out)
        else:
            self.source, self.idx = x, None
            self.rows = _time_order(A, x.data, reverse).reshape(T * B, I)
            self.out = _project(K, A, self.rows, self.w, bias)                            # (T*B, G*H)

    def backward(self, dpre, needs_w: bool, needs_bias: bool):
        """dpre: (T*B, G*H) -> (d source, dW_ih, dbias), each None where not needed."""
        K, A = self.K, self.A
        if self.idx is not None:
            dtable = A.zeros((self.rows.shape[0], dpre.shape[1]), dtype=dpre.dtype)
            K.embedding_backward(self.idx, dpre, dtable)
            dpre = dtable
        dsource, dw, db = _input_grads(K, A, dpre, self.rows, self.w, (self.source.requires_grad, needs_w, needs_bias))
        if dsource is not None and self.idx is None:
            dsource = dsource.reshape(self.shape)
            dsource = dsource[::-1] if self.reverse else dsource
        return dsource, dw, db


def _input_grads(K, A, dpre2, x2, w_ih, needs):
    """Gradients of the input projection pre = x @ w_ih.T + b, from dpre2: (N, G*H).

    Returns dx (N, I), dw_ih (G*H, I), db (G*H,), each None where not needed.
    """
    dx = dw = db = None
    if needs[0]:
        dx = A.empty_like(x2)
        K.matmul_nn(dpre2, w_ih, dx, False)
    if needs[1]:
        dw = A.empty_like(w_ih)
        K.matmul_tn(dpre2, x2, dw, False)
    if needs[2]:
        db = A.empty(w_ih.shape[0], dtype=w_ih.dtype)
        K.bias_backward(dpre2, db, False)
    return dx, dw, db


# ---- RNN ------------------------------------------------------------------------------------
def rnn_step_fused(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One RNN step, the activation one op. x: (B, I), h: (B, H) -> h': (B, H)."""
    pre = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)
    relu = nonlinearity == "relu"
    device = pre.device
    K, A = kernels(device), arrays(device)
    pre_data = A.contiguous(pre.data)
    h_new = A.empty_like(pre_data)
    K.rnn_cell_forward(pre_data, h_new, relu)

    def backward(g):
        dpre = A.empty_like(h_new)
        K.rnn_cell_backward(h_new, A.contiguous(g), dpre, relu)
        return (dpre,)

    return record(h_new, (pre,), backward, "rnn_cell")


def rnn_sequence(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", reverse=False):
    """A whole RNN layer, one direction. x: (T, B, I), h0: (B, H) -> outputs (T, B, H) (time order).

    reverse=True reads the sequence from the last step to the first; outputs are still
    returned aligned with the input's time steps. h_n is outputs[-1] (reverse: outputs[0]).
    """
    T, B, I = x.shape
    H = w_hh.shape[1]
    relu = nonlinearity == "relu"
    device = same_device("rnn_sequence", x, h0, w_ih, w_hh, b_ih, b_hh)
    K, A = kernels(device), arrays(device)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    proj = InputProjection(K, A, x, w_ih, _bias_sum(A, b_ih, b_hh), reverse)
    xproj = proj.out.reshape(T, B, H)
    hs = A.empty((T + 1, B, H), dtype=dtype)
    K.rnn_sequence_forward(xproj, w_h, _data(A, h0), hs, relu)
    out = A.contiguous(hs[1:][::-1]) if reverse else hs[1:]

    def backward(g):
        dhs = _time_order(A, g, reverse)
        dpre = A.empty((T, B, H), dtype=dtype)
        dh0 = A.empty((B, H), dtype=dtype)
        K.rnn_sequence_backward(w_h, hs, dhs, A.zeros((B, H), dtype), relu, dpre, dh0)
        dpre2 = dpre.reshape(T * B, H)
        dx, dw_ih, db = proj.backward(dpre2, w_ih.requires_grad, b_ih is not None)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(dpre2, hs[:T].reshape(T * B, H), dw_hh, False)
        return (dx, dh0, dw_ih, dw_hh) + ((db, db) if b_ih is not None else ())

    parents = (proj.source, h0, w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())
    return record(out, parents, backward, "rnn_sequence")


# ---- LSTM -----------------------------------------------------------------------------------
def lstm_step_fused(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step, the gate math one op. x: (B, I), h, c: (B, H) -> (h', c'), each (B, H)."""
    gates = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)
    device = same_device("lstm_cell", gates, c)
    K, A = kernels(device), arrays(device)
    gates_data, c_prev = A.contiguous(gates.data), _data(A, c)
    B, H = c_prev.shape
    acts = A.empty_like(gates_data)
    hc = A.empty((2, B, H), dtype=c_prev.dtype)  # both outputs in one array: [h', c']
    K.lstm_cell_forward(gates_data, c_prev, acts, hc[1], hc[0])

    def backward(g):
        dgates = A.empty_like(acts)
        dc_prev = A.empty_like(c_prev)
        K.lstm_cell_backward(acts, c_prev, hc[1], A.contiguous(g[0]), A.contiguous(g[1]), dgates, dc_prev)
        return dgates, dc_prev

    both = record(hc, (gates, c), backward, "lstm_cell")
    return both[0], both[1]


def lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """A whole LSTM layer, one direction. x: (T, B, I), h0, c0: (B, H).

    Returns ``packed``: (T + 1, B, H) where packed[:T] are the outputs h_1..h_T (in input time
    order) and packed[T] is the final cell state c_n; h_n is the output of the last step read.
    One op, so the tape holds one node per layer and direction, whatever T is.
    """
    T, B, I = x.shape
    H = w_hh.shape[1]
    device = same_device("lstm_sequence", x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    K, A = kernels(device), arrays(device)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    proj = InputProjection(K, A, x, w_ih, _bias_sum(A, b_ih, b_hh), reverse)
    xproj = proj.out.reshape(T, B, 4 * H)
    hs = A.empty((T + 1, B, H), dtype=dtype)
    cs = A.empty((T + 1, B, H), dtype=dtype)
    acts = A.empty((T, B, 4 * H), dtype=dtype)
    K.lstm_sequence_forward(xproj, w_h, _data(A, h0), _data(A, c0), hs, cs, acts)
    packed = A.empty((T + 1, B, H), dtype=dtype)
    A.copyto(packed[:T], hs[1:][::-1] if reverse else hs[1:])
    A.copyto(packed[T], cs[T])

    def backward(g):
        dhs = _time_order(A, g[:T], reverse)
        dc_n = A.contiguous(g[T])
        dgates = A.empty((T, B, 4 * H), dtype=dtype)
        dh0 = A.empty((B, H), dtype=dtype)
        dc0 = A.empty((B, H), dtype=dtype)
        K.lstm_sequence_backward(w_h, hs, cs, acts, dhs, A.zeros((B, H), dtype), dc_n, dgates, dh0, dc0)
        dgates2 = dgates.reshape(T * B, 4 * H)
        dx, dw_ih, db = proj.backward(dgates2, w_ih.requires_grad, b_ih is not None)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(dgates2, hs[:T].reshape(T * B, H), dw_hh, False)
        return (dx, dh0, dc0, dw_ih, dw_hh) + ((db, db) if b_ih is not None else ())

    parents = (proj.source, h0, c0, w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())
    return record(packed, parents, backward, "lstm_sequence")


# ---- GRU ------------------------------------------------------------------------------------
def gru_step_fused(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step, the gate math one op. x: (B, I), h: (B, H) -> h': (B, H)."""
    gi = linear(x, w_ih, b_ih)
    gh = linear(h, w_hh, b_hh)
    device = same_device("gru_cell", gi, gh, h)
    K, A = kernels(device), arrays(device)
    gi_data, gh_data, h_prev = A.contiguous(gi.data), A.contiguous(gh.data), _data(A, h)
    acts = A.empty_like(gi_data)
    h_new = A.empty_like(h_prev)
    K.gru_cell_forward(gi_data, gh_data, h_prev, acts, h_new)

    def backward(g):
        dgi, dgh = A.empty_like(gi_data), A.empty_like(gh_data)
        dh_prev = A.empty_like(h_prev)
        K.gru_cell_backward(acts, gh_data, h_prev, A.contiguous(g), dgi, dgh, dh_prev)
        return dgi, dgh, dh_prev  # dh_prev: the direct path z * g; the path through gh comes via linear

    return record(h_new, (gi, gh, h), backward, "gru_cell")


def gru_sequence(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """A whole GRU layer, one direction. x: (T, B, I), h0: (B, H) -> outputs (T, B, H) (time order)."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    device = same_device("gru_sequence", x, h0, w_ih, w_hh, b_ih, b_hh)
    K, A = kernels(device), arrays(device)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    b_h = A.zeros(3 * H, dtype=dtype) if b_hh is None else _data(A, b_hh)
    proj = InputProjection(K, A, x, w_ih, _data(A, b_ih), reverse)
    xproj = proj.out.reshape(T, B, 3 * H)
    hs = A.empty((T + 1, B, H), dtype=dtype)
    acts = A.empty((T, B, 3 * H), dtype=dtype)
    ghn = A.empty((T, B, H), dtype=dtype)
    K.gru_sequence_forward(xproj, w_h, b_h, _data(A, h0), hs, acts, ghn)
    out = A.contiguous(hs[1:][::-1]) if reverse else hs[1:]

    def backward(g):
        dhs = _time_order(A, g, reverse)
        dgi = A.empty((T, B, 3 * H), dtype=dtype)
        dgh = A.empty((T, B, 3 * H), dtype=dtype)
        dh0 = A.empty((B, H), dtype=dtype)
        K.gru_sequence_backward(w_h, hs, acts, ghn, dhs, A.zeros((B, H), dtype), dgi, dgh, dh0)
        dgi2, dgh2 = dgi.reshape(T * B, 3 * H), dgh.reshape(T * B, 3 * H)
        dx, dw_ih, db_ih = proj.backward(dgi2, w_ih.requires_grad, b_ih is not None)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(dgh2, hs[:T].reshape(T * B, H), dw_hh, False)
        grads = (dx, dh0, dw_ih, dw_hh)
        if b_ih is not None:
            db_hh = A.empty_like(b_h)
            K.bias_backward(dgh2, db_hh, False)
            grads += (db_ih, db_hh)
        return grads

    parents = (proj.source, h0, w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())
    return record(out, parents, backward, "gru_sequence")
