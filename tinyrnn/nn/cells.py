"""The three recurrent cells: their equations, a composed form, and fused forms.

Shapes: x: (B, I) one time step of input, h, c: (B, H) states, G gates per cell (RNN 1,
GRU 3, LSTM 4); weights in PyTorch's layout: w_ih: (G*H, I), w_hh: (G*H, H), b_ih, b_hh: (G*H,).

RNN (tanh or relu)
    h' = act(W_ih x + b_ih + W_hh h + b_hh)

LSTM (gate order i, f, g, o as in PyTorch)
    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)        input gate
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)        forget gate
    g = tanh   (W_ig x + b_ig + W_hg h + b_hg)        candidate cell
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)        output gate
    c' = f * c + i * g
    h' = o * tanh(c')

GRU (gate order r, z, n as in PyTorch)
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)        reset gate
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)        update gate
    n = tanh   (W_in x + b_in + r * (W_hn h + b_hn))  candidate; r gates only the hidden part
    h' = (1 - z) * n + z * h

Each cell comes two ways, computing the same function:

* ``*_step_composed`` (here): built from the tape's primitive ops. The readable spec; backward
  comes for free from the primitives.
* the fused ops of ``tinyrnn.ops.recurrent``, named next to each composed form below:
  ``*_step_fused`` (one step, the gate math one op over the Numba kernels) and ``*_sequence``
  (a whole layer over T steps, the time loop and backpropagation through time inside Numba).

The cell Modules (``RNNCell``, ``LSTMCell``, ``GRUCell``) run the fused step, or the composed
one with ``fused=False``.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..backend import arrays
from ..ops.recurrent import gru_step_fused, lstm_step_fused, rnn_step_fused
from ..tensor import Tensor
from .layers import uniform
from .module import Module, Parameter

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# ============================================================================================
# RNN
# ============================================================================================
def rnn_step_composed(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """x: (B, I), h: (B, H) -> h': (B, H), from primitives. The same as one op: ``rnn_step_fused``; a whole
    layer over T steps as one op: ``rnn_sequence`` (both in ``tinyrnn.ops.recurrent``)."""
    pre = ops.linear(x, w_ih, b_ih) + ops.linear(h, w_hh, b_hh)
    return pre.tanh() if nonlinearity == "tanh" else pre.relu()


# ============================================================================================
# LSTM
# ============================================================================================
def lstm_step_composed(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """x: (B, I), h, c: (B, H) -> (h', c'), from primitives. The same as one op: ``lstm_step_fused``; a whole
    layer over T steps as one op: ``lstm_sequence`` (both in ``tinyrnn.ops.recurrent``)."""
    gates = ops.linear(x, w_ih, b_ih) + ops.linear(h, w_hh, b_hh)
    i, f, g, o = ops.split(gates, 4, axis=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c_new = f * c + i * g
    h_new = o * c_new.tanh()
    return h_new, c_new


# ============================================================================================
# GRU
# ============================================================================================
def gru_step_composed(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """x: (B, I), h: (B, H) -> h': (B, H), from primitives. The same as one op: ``gru_step_fused``; a whole
    layer over T steps as one op: ``gru_sequence`` (both in ``tinyrnn.ops.recurrent``)."""
    gi = ops.linear(x, w_ih, b_ih)
    gh = ops.linear(h, w_hh, b_hh)
    i_r, i_z, i_n = ops.split(gi, 3, axis=1)
    h_r, h_z, h_n = ops.split(gh, 3, axis=1)
    r = (i_r + h_r).sigmoid()
    z = (i_z + h_z).sigmoid()
    n = (i_n + r * h_n).tanh()
    return (1 - z) * n + z * h


# ============================================================================================
# Cell modules (one time step), PyTorch's API and parameter names
# ============================================================================================
class _CellBase(Module):
    kind = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, fused: bool = True,
                 dtype=np.float32):
        super().__init__()
        self.input_size, self.hidden_size, self.fused = input_size, hidden_size, fused
        G, bound = GATES[self.kind], 1.0 / np.sqrt(hidden_size)
        self.weight_ih = Parameter(uniform((G * hidden_size, input_size), bound, dtype))
        self.weight_hh = Parameter(uniform((G * hidden_size, hidden_size), bound, dtype))
        self.bias_ih = Parameter(uniform((G * hidden_size,), bound, dtype)) if bias else None
        self.bias_hh = Parameter(uniform((G * hidden_size,), bound, dtype)) if bias else None

    def _zeros(self, x):
        return Tensor(arrays(x.device).zeros((x.shape[0], self.hidden_size), dtype=x.dtype))

    def _weights(self):
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def extra_repr(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "fused": self.fused}


class RNNCell(_CellBase):
    """h' = act(W_ih x + b_ih + W_hh h + b_hh).  forward(x: (B, I), h: (B, H) or None) -> h': (B, H)"""

    kind = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", fused=True, dtype=np.float32):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, fused, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x, h=None):
        h = self._zeros(x) if h is None else h
        step = rnn_step_fused if self.fused else rnn_step_composed
        return step(x, h, *self._weights(), nonlinearity=self.nonlinearity)


class LSTMCell(_CellBase):
    """forward(x: (B, I), (h, c) or None) -> (h', c'), each (B, H). Equations: module docstring."""

    kind = "lstm"

    def forward(self, x, state=None):
        h, c = (self._zeros(x), self._zeros(x)) if state is None else state
        step = lstm_step_fused if self.fused else lstm_step_composed
        return step(x, h, c, *self._weights())


class GRUCell(_CellBase):
    """forward(x: (B, I), h: (B, H) or None) -> h': (B, H). Equations: module docstring."""

    kind = "gru"

    def forward(self, x, h=None):
        h = self._zeros(x) if h is None else h
        step = gru_step_fused if self.fused else gru_step_composed
        return step(x, h, *self._weights())
