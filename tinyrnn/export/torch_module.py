"""``--format torch``: a self-contained PyTorch module definition written next to the weights.

``tinyrnn export RUN --format torch --out model.py`` writes two files:

    model.py            ``CharRNN(torch.nn.Module)`` (the same layers and names as tinyrnn's) and
                        ``load(path=None) -> (model, chars)``; it needs only torch
    model.safetensors   the weights and the config/vocabulary (see ``safetensors.py``), read by
                        ``load`` with a few lines of its own (no ``torch.load``, no pickle, no
                        ``safetensors`` package)
"""
import os

from ..errors import TinyRNNError

SOURCE = '''"""A tinyrnn character model rebuilt in PyTorch (written by `tinyrnn export --format torch`).

    import __MODULE__
    model, chars = __MODULE__.load()                 # reads __WEIGHTS__ beside this file
    ids = torch.tensor([[chars.index(c)] for c in "The "])           # (T, B=1)
    logits, state = model(ids)                       # language model: (T, B, V), state for the next call
    logits = model.fill_logits(ids)                  # fill-in model (config bidir): logits[t] never sees ids[t]

Only torch is needed: the safetensors file is read below without torch.load or pickle.
"""
import json
import os
import struct

import torch

CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__WEIGHTS__")


class CharRNN(torch.nn.Module):
    """Embedding -> RNN/LSTM/GRU stack -> Linear; with bidir, two stacks shifted by one step."""

    def __init__(self, vocab_size, cell="lstm", hidden=256, layers=2, embed=64, dropout=0.0, bidir=False):
        super().__init__()
        self.bidir = bidir
        self.embed = torch.nn.Embedding(vocab_size, embed)
        self.rnn = CELLS[cell](embed, hidden, layers, dropout=dropout)              # left to right
        if bidir:
            self.rnn_backward = CELLS[cell](embed, hidden, layers, dropout=dropout)  # right to left
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(hidden * (2 if bidir else 1), vocab_size)

    def forward(self, x, state=None):
        """x: (T, B) int64 -> (logits (T, B, V), state): h (L, B, H), or (h, c) for an LSTM."""
        if self.bidir:
            raise ValueError("a fill-in model (bidir): use fill_logits(x)")
        out, state = self.rnn(self.embed(x), state)
        return self.head(self.drop(out)), state

    def fill_logits(self, x):
        """x: (T, B) int64 -> logits (T, B, V) where logits[t] depends on x[:t] and x[t+1:] only."""
        e = self.embed(x)
        fwd, _ = self.rnn(e)                                   # fwd[t]: after x_0..x_t
        bwd = self.rnn_backward(e.flip(0))[0].flip(0)          # bwd[t]: after x_T-1..x_t
        zeros = fwd.new_zeros((1,) + tuple(fwd.shape[1:]))
        before = torch.cat([zeros, fwd[:-1]], dim=0)           # after x_0..x_t-1
        after = torch.cat([bwd[1:], zeros], dim=0)             # after x_T-1..x_t+1
        return self.head(self.drop(torch.cat([before, after], dim=2)))


def read_safetensors(path):
    """A safetensors file -> ({name: tensor}, {str: str} metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[8 + n + begin:8 + n + end])
        tensors[name] = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, metadata


def load(path=WEIGHTS):
    """The model (in eval mode) and its characters (index i <-> chars[i]) from an exported file."""
    tensors, metadata = read_safetensors(path)
    model = CharRNN(**json.loads(metadata["config"]))
    model.load_state_dict(tensors)
    return model.eval(), json.loads(metadata["vocab"])
'''


def module_source(module_name, weights_name):
    """The text of the generated module (``module_name``.py reading ``weights_name`` beside it)."""
    return SOURCE.replace("__MODULE__", module_name).replace("__WEIGHTS__", weights_name)


def check_out(out):
    """``out`` must be NAME.py with NAME importable (``import NAME``)."""
    stem, ext = os.path.splitext(os.path.basename(out))
    if ext != ".py" or not stem.isidentifier():
        raise TinyRNNError(f"--format torch writes a Python module: give --out NAME.py with NAME a valid "
                           f"Python identifier (e.g. model.py), not {out}")


def write_char(model, vocab, meta, out):
    """Write ``out`` (a .py file) and the weights beside it (same name, ``.safetensors``) -> both paths."""
    from . import atomic_write
    from .safetensors import dumps, model_metadata

    check_out(out)
    stem = os.path.splitext(out)[0]
    name, weights = os.path.basename(stem), stem + ".safetensors"
    atomic_write(weights, dumps(model.state_dict(), model_metadata(model, vocab, meta)))
    try:
        atomic_write(out, module_source(name, os.path.basename(weights)).encode("utf-8"))
    except BaseException:
        os.unlink(weights)
        raise
    return [out, weights]
