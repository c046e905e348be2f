"""``CharRNN``: embedding -> recurrent stack -> linear head over the vocabulary.

Unidirectional (a language model): position t reads x_0..x_t and predicts x_{t+1}.

    x (T, B) ints -> embed (T, B, E) -> RNN/LSTM/GRU stack (T, B, H) -> Linear (T, B, V) logits

Bidirectional (a fill-in model, ``bidir=True``): position t predicts x_t itself from two states,

    before[t] = forward stack's output after reading x_0 .. x_{t-1}     (zeros for t = 0)
    after[t]  = backward stack's output after reading x_{T-1} .. x_{t+1} (zeros for t = T-1)
    logits[t] = Linear(concat(before[t], after[t]))

The two directions are two *separate* unidirectional stacks merged only at the head. A single
bidirectional stack (``nn.LSTM(bidirectional=True)``) would not do: from layer 2 on, each direction
reads the other direction's output at the same position, which has seen x_t - the character it is
asked to predict. Shifting by one position keeps x_t out of both states at every layer.
"""
import numpy as np

from . import nn
from . import ops
from .errors import TinyRNNError
from .tensor import Tensor

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    """A character model. ``config()`` returns the constructor arguments (stored in checkpoints)."""

    family = "char"      # the checkpoint family (see ``checkpoint.load_model``)

    def __init__(self, vocab_size, cell="lstm", hidden=256, layers=2, embed=64, dropout=0.0, bidir=False):
        super().__init__()
        if cell not in CELLS:
            raise TinyRNNError(f"unknown cell {cell!r}: use one of {', '.join(CELLS)}")
        for name, value in (("vocab_size", vocab_size), ("hidden", hidden), ("layers", layers), ("embed", embed)):
            if int(value) <= 0:
                raise TinyRNNError(f"{name} must be positive, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise TinyRNNError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.cell, self.hidden, self.layers = int(vocab_size), cell, int(hidden), int(layers)
        self.embed_dim, self.dropout_p, self.bidir = int(embed), float(dropout), bool(bidir)
        Stack = CELLS[cell]
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = Stack(embed, hidden, layers, dropout=dropout)                 # reads left to right
        if bidir:
            self.rnn_backward = Stack(embed, hidden, layers, dropout=dropout)    # reads right to left
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidir else 1), vocab_size)

    @classmethod
    def from_checkpoint(cls, meta, arrays):
        """(model, vocab) from a checkpoint's meta and arrays (``checkpoint.load_model`` calls this)."""
        from .checkpoint import model_arrays
        from .data import Vocab

        model = cls(**meta["model"])
        model.load_state_dict(model_arrays(arrays))
        return model, Vocab(meta["vocab"])

    def set_dropout(self, p):
        """Change the dropout probability (between layers and before the head) of a built model."""
        if not 0.0 <= p < 1.0:
            raise TinyRNNError(f"dropout must be in [0, 1), got {p}")
        self.dropout_p = self.rnn.dropout = self.drop.p = float(p)
        if self.bidir:
            self.rnn_backward.dropout = self.dropout_p

    def config(self):
        return dict(vocab_size=self.vocab_size, cell=self.cell, hidden=self.hidden, layers=self.layers,
                    embed=self.embed_dim, dropout=self.dropout_p, bidir=self.bidir)

    # ---- unidirectional: a language model -------------------------------------------------------
    def forward(self, x, state=None):
        """x: (T, B) int indices; state: the stack's state or None -> (logits (T, B, V), new state)."""
        if self.bidir:
            raise TinyRNNError("a bidirectional model predicts masked characters: use fill_logits()")
        out, state = self.rnn(self.embed(x), state)
        return self.head(self.drop(out)), state

    # ---- bidirectional: fill in ---------------------------------------------------------------
    def fill_logits(self, x):
        """x: (T, B) int indices -> logits (T, B, V) where logits[t] never depends on x[t]."""
        if not self.bidir:
            raise TinyRNNError("fill_logits needs a bidirectional model (trained with --bidir)")
        T, B = x.shape
        e = self.embed(x)                                        # (T, B, E)
        fwd, _ = self.rnn(e)                                     # fwd[t]: after x_0..x_t
        bwd_rev, _ = self.rnn_backward(e[::-1])                  # bwd_rev[j]: after x_{T-1}..x_{T-1-j}
        bwd = bwd_rev[::-1]                                      # bwd[t]: after x_{T-1}..x_t
        zeros = Tensor(np.zeros((1, B, self.hidden), dtype=fwd.dtype), device=fwd.device)
        before = ops.concat([zeros, fwd[:T - 1]], axis=0)        # before[t]: after x_0..x_{t-1}
        after = ops.concat([bwd[1:], zeros], axis=0)             # after[t]: after x_{T-1}..x_{t+1}
        return self.head(self.drop(ops.concat([before, after], axis=2)))
