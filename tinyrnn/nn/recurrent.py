"""Sequence layers: ``RNN``, ``LSTM``, ``GRU`` (PyTorch's API and parameter names) and ``Bidirectional``.

Shapes (PyTorch's): x: (T, B, I), or (B, T, I) with ``batch_first``; D = 2 if bidirectional else 1;
L = num_layers.
    output: (T, B, D*H)           the last layer's hidden state at every step
    h_n:    (L*D, B, H)           final hidden state of every layer and direction
    c_n:    (L*D, B, H)           LSTM only: final cell state
Parameters per layer k and direction: ``weight_ih_l{k}`` (G*H, I_k), ``weight_hh_l{k}`` (G*H, H),
``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), and the same with ``_reverse`` for the backward direction,
so ``load_state_dict({k: v.numpy() for k, v in torch_layer.state_dict().items()})`` just works.

A bidirectional layer runs two independent recurrences over the same input: the forward one reads
"I love mango juice", the backward one reads "juice mango love I". The backward outputs are put
back in time order, so position t holds [forward state after x_0..x_t, backward state after
x_T-1..x_t], and the two are concatenated. In a stack, layer k+1 reads layer k's concatenated
output; dropout (if any) sits between layers, never after the last.

Variable lengths: ``layer(x, lengths=lengths)`` with x padded to the longest sequence and lengths
(B,) integers in [1, T] means what PyTorch's ``pack_padded_sequence(x, lengths,
enforce_sorted=False)`` and ``pad_packed_sequence`` mean: the backward direction of each sequence
starts at its own last token, outputs at padded positions are 0, padding gets no gradient, and
h_n (c_n) holds each sequence's state after its last step read. The layer sorts the batch by
decreasing length once (a gather on the tape, skipped when already sorted), runs every layer and
direction on the sorted batch (the kernels then skip the finished rows of every step) and puts
outputs and states back in the caller's order. CPU only.

Each layer-direction is one fused op on the tape (``tinyrnn.ops.recurrent``); ``fused=False`` runs the
composed per-step cells instead - the slow, readable reference the tests compare against.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..backend import arrays
from ..backend import DeviceError
from ..ops.recurrent import (LENGTHS_ON_CPU, check_lengths, gru_sequence, layer_norm_gru_sequence, lstm_sequence,
                             rnn_sequence)
from ..random import generator
from ..tensor import Tensor
from . import cells
from .layers import uniform
from .module import Module, Parameter


class _RNNBase(Module):
    kind = ""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 nonlinearity: str = "tanh", forget_bias: float | None = None, layer_norm: bool = False,
                 fused: bool = True, dtype=np.float32):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.config = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                           batch_first=batch_first, dropout=dropout, bidirectional=bidirectional, fused=fused, dtype=dtype)
        if self.kind == "rnn":
            self.config["nonlinearity"] = nonlinearity
        if self.kind == "lstm":
            self.config["forget_bias"] = forget_bias
        if self.kind == "gru":
            self.config["layer_norm"] = layer_norm
            if layer_norm and not bias:
                raise ValueError(cells.LAYER_NORM_NEEDS_BIAS)
        self.layer_norm = layer_norm
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional, self.nonlinearity, self.fused = bidirectional, nonlinearity, fused
        self.num_directions = 2 if bidirectional else 1

        G, H, bound = cells.GATES[self.kind], hidden_size, 1.0 / np.sqrt(hidden_size)
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else H * self.num_directions
            for suffix in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{suffix}", Parameter(uniform((G * H, layer_input), bound, dtype)))
                setattr(self, f"weight_hh_l{layer}{suffix}", Parameter(uniform((G * H, H), bound, dtype)))
                if layer_norm:             # gains and shifts in the place of the biases
                    for name, value in cells.norm_parameters(G * H, dtype).items():
                        setattr(self, f"{name}_l{layer}{suffix}", Parameter(value))
                elif bias:
                    b_ih = uniform((G * H,), bound, dtype)
                    b_hh = uniform((G * H,), bound, dtype)
                    if forget_bias is not None:  # LSTM: the sum b_if + b_hf is what the forget gate sees
                        b_ih[H:2 * H], b_hh[H:2 * H] = forget_bias, 0.0
                    setattr(self, f"bias_ih_l{layer}{suffix}", Parameter(b_ih))
                    setattr(self, f"bias_hh_l{layer}{suffix}", Parameter(b_hh))

    def _suffixes(self):
        return ("", "_reverse") if self.bidirectional else ("",)

    def layer_weights(self, layer: int, reverse: bool = False):
        """(w_ih, w_hh, b_ih, b_hh) of one layer and direction (the biases are None without bias):
        the one place that knows the parameter names ``weight_ih_l{layer}[_reverse]`` etc."""
        suffix = "_reverse" if reverse else ""
        get = lambda name: getattr(self, f"{name}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def layer_norms(self, layer: int, reverse: bool = False):
        """(ih gain, ih shift, hh gain, hh shift) of one layer and direction of a layer-normalised GRU
        (``norm_ih_weight_l{layer}[_reverse]`` etc.: ``cells.NORM_NAMES``)."""
        suffix = "_reverse" if reverse else ""
        return tuple(getattr(self, f"{name}_l{layer}{suffix}") for name in cells.NORM_NAMES)

    def extra_repr(self):
        return {k: v for k, v in self.config.items() if v not in (None, False, 0.0) or k == "hidden_size"}

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, x, state=None, lengths=None):
        """x: (T, B, I) (or (B, T, I) if batch_first); state: h0 (L*D, B, H), or (h0, c0) for LSTM;
        lengths: None, or (B,) integers in [1, T] (numpy array or list) for a padded batch.

        Returns (output, h_n), or (output, (h_n, c_n)) for LSTM.
        """
        x = x if isinstance(x, Tensor) else Tensor(x, device=self.weight_ih_l0.device)
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__} expects a 3-D input (T, B, I), got shape {x.shape}")
        if self.batch_first:
            x = ops.transpose(x, (1, 0, 2))
        T, B, I = x.shape
        if I != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {I} features, expected {self.input_size}")
        if x.dtype != self.weight_ih_l0.dtype:
            raise TypeError(f"{type(self).__name__}: input dtype {x.dtype} does not match the layer's weights "
                            f"({self.weight_ih_l0.dtype}): convert one, e.g. x.astype(np.{self.weight_ih_l0.dtype})")
        if T == 0:
            raise ValueError("empty sequence (T = 0)")
        order = None
        if lengths is not None:
            if x.device != "cpu":
                raise DeviceError(LENGTHS_ON_CPU)
            x, state, lengths, order = _sort_batch(x, state, check_lengths(lengths, T, B))
        h0, c0 = self._initial_state(state, B, x.dtype, x.device)
        output, h_n, c_n = self._run_layers(x, h0, c0, lengths)
        if order is not None:       # back in the caller's batch order
            inverse = np.argsort(order)
            output, h_n = ops.permute(output, inverse, 1), ops.permute(h_n, inverse, 1)
            c_n = None if c_n is None else ops.permute(c_n, inverse, 1)
        output = ops.transpose(output, (1, 0, 2)) if self.batch_first else output
        return (output, (h_n, c_n)) if self.kind == "lstm" else (output, h_n)

    def _run_layers(self, x, h0, c0, lengths):
        """Every layer and direction over x (T, B, I) -> (output (T, B, D*H), h_n, c_n or None)."""
        finals_h, finals_c = [], []
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.num_directions + d
                out, h_n, c_n = self._run_direction(x, layer, h0[k], c0[k] if c0 else None,
                                                    suffix == "_reverse", lengths)
                outputs.append(out)
                finals_h.append(h_n)
                finals_c.append(c_n)
            x = outputs[0] if len(outputs) == 1 else ops.concat(outputs, axis=2)
            if layer < self.num_layers - 1 and self.dropout > 0:
                x = ops.dropout(x, self.dropout, self.training, generator())

        c_n = _stack(finals_c) if self.kind == "lstm" else None
        return x, _stack(finals_h), c_n

    def _initial_state(self, state, B, dtype, device):
        """Per layer-direction initial states: lists of (B, H) tensors on ``device`` (zeros when not given)."""
        n, H = self.num_layers * self.num_directions, self.hidden_size

        def split(s, name):
            s = s if isinstance(s, Tensor) else Tensor(s, device=device)
            if s.shape != (n, B, H):
                raise ValueError(f"{name} must have shape {(n, B, H)}, got {s.shape}")
            if s.dtype != dtype:
                raise TypeError(f"{name} is {s.dtype} but the input is {dtype}")
            return [s[k] for k in range(n)]

        A = arrays(device)
        zeros = [Tensor(A.zeros((B, H), dtype=dtype)) for _ in range(n)]
        if self.kind == "lstm":
            if state is None:
                return zeros, [Tensor(A.zeros((B, H), dtype=dtype)) for _ in range(n)]
            h0, c0 = state
            return split(h0, "h0"), split(c0, "c0")
        return (zeros if state is None else split(state, "h0")), None

    def _run_direction(self, x, layer, h0, c0, reverse, lengths):
        """One layer, one direction over the whole sequence -> (outputs (T, B, H), h_n, c_n or None).
        lengths: None or (B,) sorted non-increasing."""
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer, reverse)
        norms = self.layer_norms(layer, reverse) if self.layer_norm else None
        if not self.fused:
            return self._run_composed(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, lengths, norms)
        if norms is not None:
            out, h_n = layer_norm_gru_sequence(x, h0, w_ih, w_hh, *norms, reverse=reverse, lengths=lengths)
            return out, h_n, None
        if self.kind == "lstm":
            return lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, lengths=lengths)
        if self.kind == "gru":
            out, h_n = gru_sequence(x, h0, w_ih, w_hh, b_ih, b_hh, reverse=reverse, lengths=lengths)
        else:
            out, h_n = rnn_sequence(x, h0, w_ih, w_hh, b_ih, b_hh, self.nonlinearity, reverse=reverse, lengths=lengths)
        return out, h_n, None

    def _run_composed(self, x, h, c, w_ih, w_hh, b_ih, b_hh, reverse, lengths=None, norms=None):
        """The reference: a Python loop over time calling the composed cell (one tape node per primitive).
        With lengths, a row past its length keeps its state (h = m * h_new + (1 - m) * h, m = t < length)
        and outputs 0; read backward, each row so starts at its own last token."""
        T = x.shape[0]
        outputs = [None] * T
        for t in (reversed(range(T)) if reverse else range(T)):
            if norms is not None:
                h_new, c_new = cells.layer_norm_gru_step_composed(x[t], h, w_ih, w_hh, *norms), None
            elif self.kind == "lstm":
                h_new, c_new = cells.lstm_step_composed(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
            elif self.kind == "gru":
                h_new, c_new = cells.gru_step_composed(x[t], h, w_ih, w_hh, b_ih, b_hh), None
            else:
                h_new, c_new = cells.rnn_step_composed(x[t], h, w_ih, w_hh, b_ih, b_hh, self.nonlinearity), None
            if lengths is None:
                h, c, outputs[t] = h_new, c_new, h_new
                continue
            m = (t < lengths).astype(x.dtype)[:, None]          # (B, 1): 1 where row b has step t
            h, outputs[t] = h_new * m + h * (1 - m), h_new * m
            c = None if c is None else c_new * m + c * (1 - m)
        return ops.stack(outputs, axis=0), h, c


def _stack(states):
    """(L*D) final states (B, H) -> (L*D, B, H); one state is only given the leading axis."""
    if len(states) == 1:
        return ops.reshape(states[0], (1,) + states[0].shape)
    return ops.stack(states, axis=0)


class RNN(_RNNBase):
    """Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act = tanh or relu."""

    kind = "rnn"


class LSTM(_RNNBase):
    """Long short-term memory; equations in ``tinyrnn.nn.cells``. ``forget_bias`` sets b_if (b_hf = 0)."""

    kind = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, forget_bias=None, fused=True, dtype=np.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         forget_bias=forget_bias, fused=fused, dtype=dtype)


class GRU(_RNNBase):
    """Gated recurrent unit; equations in ``tinyrnn.nn.cells``.

    ``layer_norm=True``: the layer-normalised GRU (equations there too). Each layer and direction
    then has, besides ``weight_ih_l{k}`` and ``weight_hh_l{k}``, the gains ``norm_ih_weight_l{k}``,
    ``norm_hh_weight_l{k}`` (3H,) (init 1) and the shifts ``norm_ih_bias_l{k}``,
    ``norm_hh_bias_l{k}`` (init 0) in the place of the biases (PyTorch has no such layer, so the
    names follow its LayerNorm's ``weight`` and ``bias``). One op a layer and direction:
    ``ops.layer_norm_gru_sequence``."""

    kind = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, layer_norm=False, fused=True, dtype=np.float32):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         layer_norm=layer_norm, fused=fused, dtype=dtype)


MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Module):
    """Keras-style wrapper: run ``layer`` forward in time and a fresh copy of it backward, then merge.

    layer: a unidirectional RNN, LSTM or GRU (its copy gets its own, newly initialised weights).
    merge_mode: 'concat' (features side by side, (T, B, 2H)), 'sum', 'mul', 'ave', or None (return
    both outputs as a tuple). forward returns (merged, (state_forward, state_backward)).
    Parameters are named ``forward_layer.*`` and ``backward_layer.*``.
    """

    def __init__(self, layer: _RNNBase, merge_mode: str | None = "concat"):
        super().__init__()
        if not isinstance(layer, _RNNBase) or layer.bidirectional:
            raise ValueError("Bidirectional wraps a unidirectional RNN, LSTM or GRU")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        self.backward_layer = type(layer)(**_constructor_args(layer))

    def forward(self, x, state=None, lengths=None):
        """x as the wrapped layer takes it; lengths: None or (B,) (see the layers). With lengths the
        backward layer reads each sequence reversed within its own length (``ops.reverse_padded``)."""
        x = x if isinstance(x, Tensor) else Tensor(x, device=self.forward_layer.weight_ih_l0.device)
        time_axis = 1 if self.forward_layer.batch_first else 0
        state_f, state_b = (None, None) if state is None else state
        out_f, final_f = self.forward_layer(x, state_f, lengths=lengths)
        if lengths is None:
            reverse = lambda y: _reverse_time(y, time_axis)  # noqa: E731
        else:
            lengths = check_lengths(lengths, x.shape[time_axis], x.shape[1 - time_axis])
            reverse = lambda y: ops.reverse_padded(y, lengths, time_axis)  # noqa: E731
        out_b_reversed, final_b = self.backward_layer(reverse(x), state_b, lengths=lengths)
        out_b = reverse(out_b_reversed)  # back in time order before merging
        if self.merge_mode == "concat":
            merged = ops.concat([out_f, out_b], axis=-1)
        elif self.merge_mode == "sum":
            merged = out_f + out_b
        elif self.merge_mode == "mul":
            merged = out_f * out_b
        elif self.merge_mode == "ave":
            merged = (out_f + out_b) * 0.5
        else:
            merged = (out_f, out_b)
        return merged, (final_f, final_b)

    def extra_repr(self):
        return {"merge_mode": self.merge_mode}


def _sort_batch(x, state, lengths):
    """Sort the batch by decreasing length (stable): x (T, B, I), state as ``forward`` takes it.
    Returns (x, state, sorted lengths, order), order None when already sorted (nothing gathered)."""
    order = np.argsort(-lengths, kind="stable")
    if np.all(order == np.arange(len(order))):
        return x, state, lengths, None

    def gather(s):
        return ops.permute(s if isinstance(s, Tensor) else Tensor(s, device=x.device), order, 1)

    if state is not None:
        state = tuple(gather(s) for s in state) if isinstance(state, (tuple, list)) else gather(state)
    return gather(x), state, lengths[order], order


def _reverse_time(x, axis):
    index = [slice(None)] * x.ndim
    index[axis] = slice(None, None, -1)
    return x[tuple(index)]


def _constructor_args(layer: _RNNBase) -> dict:
    args = dict(layer.config)
    if layer.kind != "rnn":
        args.pop("nonlinearity", None)
    return args
