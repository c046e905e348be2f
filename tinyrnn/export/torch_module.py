"""``--format torch``: a self-contained PyTorch module definition written next to the weights.

``tinyrnn export RUN --format torch --out model.py`` writes two files:

    model.py            ``CharRNN(torch.nn.Module)`` (the same layers and names as tinyrnn's) and
                        ``load(path=None) -> (model, chars)``; it needs only torch
    model.safetensors   the weights and the config/vocabulary (see ``safetensors.py``), read by
                        ``load`` with a few lines of its own (no ``torch.load``, no pickle, no
                        ``safetensors`` package)

For a tagger, model.py holds ``Tagger(torch.nn.Module)`` instead (the same submodules and names as
tinyrnn's; ``pack_padded_sequence`` for the character and the sentence BiRNN; ``encode``,
``predict`` with argmax or Viterbi) and ``load() -> (model, vocabs)``.
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


TAGGER_SOURCE = '''"""A tinyrnn tagger rebuilt in PyTorch (written by `tinyrnn export --format torch`).

    import __MODULE__
    model, vocabs = __MODULE__.load()                 # reads __WEIGHTS__ beside this file
    model.predict([["I", "love", "mango", "juice"], ["Hi"]])     # -> lists of tag strings
    emissions = model(*model.encode(sentences))       # (T, B, K) scores; encode gives the four inputs

vocabs: {"words", "chars", "tags"}, each {"tokens": [...], ...}; id = position, <pad> 0, <unk> 1
(words and chars), words looked up lower-cased. Only torch is needed: the safetensors file is
read below without torch.load or pickle.
"""
import json
import os
import struct

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__WEIGHTS__")
UNK = 1


class CRF(torch.nn.Module):
    """A linear-chain CRF's scores: transitions[i, j] (tag i then tag j), start, end."""

    def __init__(self, num_tags):
        super().__init__()
        self.transitions = torch.nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = torch.nn.Parameter(torch.zeros(num_tags))
        self.end = torch.nn.Parameter(torch.zeros(num_tags))

    def decode(self, emissions):
        """emissions (L, K) of one sentence -> its best tag ids (Viterbi)."""
        delta, pointers = self.start + emissions[0], []
        for t in range(1, len(emissions)):
            best, prev = (delta[:, None] + self.transitions).max(dim=0)     # over the previous tag
            delta = best + emissions[t]
            pointers.append(prev)
        path = [int((delta + self.end).argmax())]
        for prev in reversed(pointers):
            path.append(int(prev[path[-1]]))
        return path[::-1]


class Tagger(torch.nn.Module):
    """Word embedding (lower-cased) + a character BiRNN's final states -> sentence BiRNN -> Linear."""

    def __init__(self, vocabs, cell="lstm", layers=2, hidden=128, word_dim=100, char_dim=50, char_hidden=50,
                 dropout=0.33, crf=False, char_cell=None):
        super().__init__()
        self.vocabs = vocabs
        self.word_dim, self.char_hidden = word_dim, char_hidden
        if word_dim:
            self.word_embed = torch.nn.Embedding(len(vocabs["words"]["tokens"]), word_dim)
        if char_hidden:
            self.char_embed = torch.nn.Embedding(len(vocabs["chars"]["tokens"]), char_dim)
            self.char_rnn = CELLS[char_cell or cell](char_dim, char_hidden, 1, bidirectional=True)
        self.drop = torch.nn.Dropout(dropout)
        self.rnn = CELLS[cell](word_dim + 2 * char_hidden, hidden, layers, dropout=dropout if layers > 1 else 0.0,
                               bidirectional=True)                        # dropout between layers
        K = len(vocabs["tags"]["tokens"])
        self.head = torch.nn.Linear(2 * hidden, K)
        self.crf = CRF(K) if crf else None

    def forward(self, words, chars, char_lengths, lengths):
        """words (T, B), chars (T, B, W), char_lengths (T, B), lengths (B,) int64 -> emissions (T, B, K)."""
        T, B = words.shape
        parts = [self.word_embed(words)] if self.word_dim else []
        if self.char_hidden:                        # every token's characters: one batch of T*B sequences
            x = self.char_embed(chars.reshape(T * B, -1).t())                       # (W, T*B, char_dim)
            packed = pack_padded_sequence(x, char_lengths.reshape(-1).clamp(min=1).cpu(), enforce_sorted=False)
            h = self.char_rnn(packed)[1]
            h = h[0] if isinstance(h, tuple) else h                                 # (2, T*B, char_hidden)
            parts.append(torch.cat([h[0], h[1]], dim=1).reshape(T, B, -1))          # [forward ; backward]
        x = self.drop(torch.cat(parts, dim=2))
        out = self.rnn(pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False))[0]
        out = pad_packed_sequence(out, total_length=T)[0]                           # zero at padding
        return self.head(self.drop(out))

    def encode(self, sentences):
        """Lists of words -> (words, chars, char_lengths, lengths): forward's inputs (the ONNX file's too)."""
        word_ids = {w: i for i, w in enumerate(self.vocabs["words"]["tokens"])}
        char_ids = {c: i for i, c in enumerate(self.vocabs["chars"]["tokens"])}
        T, B, W = max(map(len, sentences)), len(sentences), max(len(w) for s in sentences for w in s)
        words, chars = torch.zeros(T, B, dtype=torch.long), torch.zeros(T, B, W, dtype=torch.long)
        char_lengths = torch.zeros(T, B, dtype=torch.long)
        for b, sentence in enumerate(sentences):
            for t, w in enumerate(sentence):
                words[t, b] = word_ids.get(w.lower(), UNK)
                chars[t, b, :len(w)] = torch.tensor([char_ids.get(c, UNK) for c in w])
                char_lengths[t, b] = len(w)
        return words, chars, char_lengths, torch.tensor([len(s) for s in sentences])

    @torch.no_grad()
    def predict(self, sentences):
        """Lists of words (each non-empty) -> lists of tags: Viterbi with the CRF, else argmax per token."""
        words, chars, char_lengths, lengths = self.encode(sentences)
        emissions, tags = self(words, chars, char_lengths, lengths), self.vocabs["tags"]["tokens"]
        decode = self.crf.decode if self.crf is not None else lambda e: e.argmax(1).tolist()
        return [[tags[k] for k in decode(emissions[:n, b])] for b, n in enumerate(lengths.tolist())]


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
    """The tagger (in eval mode) and its vocabularies from an exported file."""
    tensors, metadata = read_safetensors(path)
    vocabs = json.loads(metadata["vocab"])
    model = Tagger(vocabs, **json.loads(metadata["config"]))
    model.load_state_dict(tensors)
    return model.eval(), vocabs
'''


def module_source(module_name, weights_name, source=SOURCE):
    """The text of the generated module (``module_name``.py reading ``weights_name`` beside it)."""
    return source.replace("__MODULE__", module_name).replace("__WEIGHTS__", weights_name)


def check_out(out):
    """``out`` must be NAME.py with NAME importable (``import NAME``)."""
    stem, ext = os.path.splitext(os.path.basename(out))
    if ext != ".py" or not stem.isidentifier():
        raise TinyRNNError(f"--format torch writes a Python module: give --out NAME.py with NAME a valid "
                           f"Python identifier (e.g. model.py), not {out}")


def write_char(model, vocab, meta, out, source=SOURCE):
    """Write ``out`` (a .py file) and the weights beside it (same name, ``.safetensors``) -> both paths."""
    from . import atomic_write
    from .safetensors import dumps, model_metadata

    check_out(out)
    stem = os.path.splitext(out)[0]
    name, weights = os.path.basename(stem), stem + ".safetensors"
    atomic_write(weights, dumps(model.state_dict(), model_metadata(model, vocab, meta)))
    try:
        atomic_write(out, module_source(name, os.path.basename(weights), source).encode("utf-8"))
    except BaseException:
        os.unlink(weights)
        raise
    return [out, weights]


def write_tagger(model, vocabs, meta, out):
    """A tagger: ``out`` (``Tagger(torch.nn.Module)`` and ``load``) plus its ``.safetensors`` -> both paths."""
    return write_char(model, vocabs, meta, out, TAGGER_SOURCE)
