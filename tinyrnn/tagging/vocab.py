"""Vocabularies: words, characters and tags to integer ids, and back; JSON, never pickle.

    words = build_word_vocab(s.words for s in train)      # <pad> = 0, <unk> = 1, then by count
    chars = build_char_vocab(s.words for s in train)      # <pad> = 0, <unk> = 1
    tags = build_tag_vocab(s.tags for s in train)         # no <unk>: an unseen tag is reported
    ids = words.encode(["The", "cat"])                    # int64 array
    ids = word_dropout(ids, words.counts, 0.25, rng)      # rare words become <unk> at random
    Vocab.from_json(words.to_json()) == words

``counts[i]`` is how often token ``i`` occurred in the data it was built from (0 for specials).
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np

from ..errors import TinyRNNError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class Vocab:
    """A list of distinct tokens (id = position) with counts.

    tokens: the tokens, specials first; counts: one count per token
    unk:    whether id 1 is <unk> (unknown tokens map to it); without, an unknown token is an error
    pad:    whether id 0 is <pad>
    lower:  encode lower-cases first (the tokens were lower-cased when built)
    """

    def __init__(self, tokens, counts=None, pad: bool = True, unk: bool = True, lower: bool = False):
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary tokens must be distinct")
        self.counts = np.zeros(len(self.itos), np.int64) if counts is None else np.asarray(counts, np.int64)
        self.pad, self.unk, self.lower = bool(pad), bool(unk), bool(lower)
        if pad and self.itos[PAD_ID] != PAD or unk and self.itos[UNK_ID] != UNK:
            raise ValueError(f"a vocabulary with specials starts with {PAD!r}, {UNK!r}")

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return (token.lower() if self.lower else token) in self.stoi

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.to_json() == other.to_json()

    def encode(self, tokens, missing: int | None = None) -> np.ndarray:
        """Ids of ``tokens`` as an int64 array. Unknown tokens: <unk> if the vocabulary has one, else
        ``missing`` if given (e.g. -1 for gold tags the model never saw), else a TinyRNNError."""
        get, default = self.stoi.get, UNK_ID if self.unk else missing
        if self.lower:
            tokens = [t.lower() for t in tokens]
        ids = [get(t, default) for t in tokens]
        if default is None and None in ids:
            bad = tokens[ids.index(None)]
            raise TinyRNNError(f"{bad!r} is not in the vocabulary ({len(self)} entries, e.g. "
                               f"{', '.join(self.itos[:5])}): use data with the same tag set as training")
        return np.array(ids, np.int64)

    def decode(self, ids) -> list:
        return [self.itos[i] for i in np.asarray(ids).tolist()]

    def to_json(self) -> dict:
        """A JSON-ready dict (``json.dumps`` it, or nest it in a checkpoint's metadata)."""
        return {"tokens": self.itos, "counts": self.counts.tolist(), "pad": self.pad, "unk": self.unk,
                "lower": self.lower}

    @classmethod
    def from_json(cls, data) -> "Vocab":
        """From ``to_json()``'s dict, or its JSON text."""
        try:
            if isinstance(data, (str, bytes)):
                data = json.loads(data)
            return cls(data["tokens"], data["counts"], data["pad"], data["unk"], data.get("lower", False))
        except (ValueError, KeyError, TypeError) as e:
            raise TinyRNNError(f"corrupt vocabulary ({type(e).__name__}: {e}): "
                               "save it again with Vocab.to_json()") from None


def _build(sequences, specials: bool, min_count: int = 1, lower: bool = False) -> Vocab:
    """Tokens by falling count (ties: first seen first), those seen fewer than min_count times dropped."""
    counter = Counter()
    for seq in sequences:
        counter.update([t.lower() for t in seq] if lower else seq)
    kept = [(t, c) for t, c in counter.most_common() if c >= min_count]
    head = [PAD, UNK] if specials else []
    kept = [(t, c) for t, c in kept if t not in head]
    return Vocab(head + [t for t, _ in kept], [0] * len(head) + [c for _, c in kept],
                 pad=specials, unk=specials, lower=lower)


def build_word_vocab(word_sequences, min_count: int = 1, lower: bool = False) -> Vocab:
    """Word vocabulary (<pad> 0, <unk> 1) of the words in an iterable of word lists."""
    return _build(word_sequences, True, min_count, lower)


def build_char_vocab(word_sequences, min_count: int = 1) -> Vocab:
    """Character vocabulary (<pad> 0, <unk> 1) of the characters of the words."""
    return _build(("".join(words) for words in word_sequences), True, min_count)


def build_tag_vocab(tag_sequences) -> Vocab:
    """Tag vocabulary, no specials (ids 0..K-1, most frequent first)."""
    return _build(tag_sequences, False)


def encode_chars(words, chars: Vocab) -> np.ndarray:
    """(N, W) int64 character ids of N words, padded with <pad> (0) to the longest word W."""
    lengths = np.array([len(w) for w in words], np.int64)
    out = np.zeros((len(words), max(int(lengths.max(initial=0)), 1)), np.int64)
    word, position = ragged_index(lengths)
    out[word, position] = chars.encode("".join(words))       # every character, word after word
    return out


def ragged_index(lengths) -> tuple:
    """(which, position) (N,) each: the sequence and the position in it of each item of sequences
    of ``lengths`` laid end to end (N = sum(lengths))."""
    lengths = np.asarray(lengths, np.int64)
    which = np.repeat(np.arange(len(lengths)), lengths)
    return which, np.arange(len(which)) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def word_dropout(ids, counts, alpha: float, rng: np.random.Generator, singleton: bool = False) -> np.ndarray:
    """Replace words by <unk> at random, so the model learns an <unk> embedding (training only).

    ids:    int array of word ids, any shape (<pad> and <unk> are never replaced)
    counts: training count of each id (``vocab.counts``)
    Default (Kiperwasser & Goldberg 2016): word w becomes <unk> with probability
    alpha / (alpha + count(w)), so rare words are dropped often and frequent ones almost never.
    ``singleton=True`` (Lample et al. 2016): only words seen once are dropped, with probability alpha.
    Returns a new array.
    """
    ids = np.asarray(ids)
    c = np.asarray(counts)[ids]
    if singleton:
        p = np.where(c == 1, alpha, 0.0)
    else:
        p = alpha / (alpha + np.maximum(c, 1e-12))
    drop = (rng.random(ids.shape) < p) & (ids > UNK_ID)
    return np.where(drop, UNK_ID, ids).astype(ids.dtype, copy=False)


def pad_batch(sequences, pad_id: int = PAD_ID) -> tuple:
    """Time-major batch of id sequences: (ids (T, B) int64 padded with ``pad_id``, lengths (B,)).

    T is the longest sequence; the layout crf_nll and the recurrent layers expect.
    """
    lengths = np.array([len(s) for s in sequences], np.int64)
    return pad_flat([i for s in sequences for i in s], lengths, pad_id), lengths


def pad_flat(flat_ids, lengths, pad_id: int = PAD_ID) -> np.ndarray:
    """The ids of sequences of ``lengths`` laid end to end -> time-major (T, B) int64, padded with ``pad_id``."""
    lengths = np.asarray(lengths, np.int64)
    ids = np.full((int(lengths.max(initial=0)), len(lengths)), pad_id, np.int64)
    which, position = ragged_index(lengths)
    ids[position, which] = flat_ids
    return ids
