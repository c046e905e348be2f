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

Layer-normalised GRU (``layer_norm=True``; Ba, Kiros and Hinton 2016): each side's 3H products are
normalised together, then given a gain and a shift, which stand in for the biases:
    LN(v) = (v - mean(v)) / sqrt(var(v) + eps)          over v's 3H numbers, eps = 1e-5
    [a_r, a_z, a_n] = LN(W_ih x) * g_ih + s_ih        [c_r, c_z, c_n] = LN(W_hh h) * g_hh + s_hh
    r = sigmoid(a_r + c_r),  z = sigmoid(a_z + c_z),  n = tanh(a_n + r * c_n)
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
from ..ops.recurrent import gru_gates_fused, gru_step_fused, lstm_step_fused, rnn_step_fused
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
    return _gru_gates(ops.linear(x, w_ih, b_ih), ops.linear(h, w_hh, b_hh), h)


def layer_norm_gru_step_composed(x, h, w_ih, w_hh, ih_gain, ih_shift, hh_gain, hh_shift, eps=1e-5):
    """The layer-normalised GRU: x: (B, I), h: (B, H); gains and shifts (3H,) -> h': (B, H), from
    primitives. A whole layer over T steps as one op: ``layer_norm_gru_sequence``; one step fused:
    ``GRUCell(layer_norm=True)`` (the two normalisations, then the GRU's gate kernel)."""
    gi = ops.layer_norm(ops.linear(x, w_ih), ih_gain, ih_shift, eps)
    gh = ops.layer_norm(ops.linear(h, w_hh), hh_gain, hh_shift, eps)
    return _gru_gates(gi, gh, h)


def _gru_gates(gi, gh, h):
    """The GRU's gate math from the two sides' projections gi, gh: (B, 3H) -> h': (B, H)."""
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
    """forward(x: (B, I), h: (B, H) or None) -> h': (B, H). Equations: module docstring.

    ``layer_norm=True``: the layer-normalised GRU, with gains ``norm_ih_weight``, ``norm_hh_weight``
    (init 1) and shifts ``norm_ih_bias``, ``norm_hh_bias`` (init 0) in the place of the biases."""

    kind = "gru"

    def __init__(self, input_size, hidden_size, bias=True, layer_norm=False, fused=True, dtype=np.float32):
        if layer_norm and not bias:
            raise ValueError(LAYER_NORM_NEEDS_BIAS)
        super().__init__(input_size, hidden_size, bias and not layer_norm, fused, dtype)
        self.layer_norm = layer_norm
        if layer_norm:
            for name, value in norm_parameters(3 * hidden_size, dtype).items():
                setattr(self, name, Parameter(value))

    def forward(self, x, h=None):
        h = self._zeros(x) if h is None else h
        if not self.layer_norm:
            step = gru_step_fused if self.fused else gru_step_composed
            return step(x, h, *self._weights())
        norms = tuple(getattr(self, name) for name in NORM_NAMES)
        if not self.fused:
            return layer_norm_gru_step_composed(x, h, self.weight_ih, self.weight_hh, *norms)
        gi = ops.layer_norm(ops.linear(x, self.weight_ih), norms[0], norms[1])
        gh = ops.layer_norm(ops.linear(h, self.weight_hh), norms[2], norms[3])
        return gru_gates_fused(gi, gh, h)

    def extra_repr(self):
        return {**super().extra_repr(), **({"layer_norm": True} if self.layer_norm else {})}


# The layer-normalised GRU's gains and shifts, by their names (a layer adds ``_l{k}[_reverse]``):
NORM_NAMES = ("norm_ih_weight", "norm_ih_bias", "norm_hh_weight", "norm_hh_bias")
LAYER_NORM_NEEDS_BIAS = "layer_norm=True puts the normalisations' shifts in the place of the biases: leave bias=True"


def norm_parameters(size: int, dtype) -> dict:
    """The initial gains (1) and shifts (0) of a layer-normalised GRU, by ``NORM_NAMES``: (size,) each."""
    return {name: (np.ones if name.endswith("weight") else np.zeros)(size, dtype) for name in NORM_NAMES}
