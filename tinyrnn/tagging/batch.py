"""Batches of sentences for the tagger: ids, padding, the characters of each word, length buckets.

    batch = encode_batch(vocabs, [["I", "love", "mango", "juice"], ["Hi"]], tags=None)
    batch.words (T, B)   word ids, <pad> after each sentence's end      lengths (B,)
    batch.chars (W, U)   character ids of the U distinct words of the batch (time-major, padded)
    batch.char_lengths (U,), batch.word_index (T, B): which of the U words sits at each position
    batch.tags (T, B)    gold tag ids, IGNORE (-100) at padding (or None)

Each distinct word form is read once by the character RNN, however often it occurs in the batch.
``epoch_batches(lengths, batch_size, seed, epoch)`` plans an epoch: sentences sorted by length
(ties broken at random), cut into batches of ``batch_size`` sentences, the batches shuffled; a
pure function of its arguments, so resuming at any step rebuilds the same batches.
``length_batches(lengths, batch_size)`` plans inference: longest first, at most
``INFERENCE_POSITIONS`` padded positions a batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .vocab import PAD_ID, Vocab, encode_chars, pad_batch, pad_flat, word_dropout

IGNORE = -100          # the target id that the loss and the accuracy skip (padding)

# Inference (no tape) runs batches of at most this many padded positions (T x B), of sentences or
# of word forms, whatever batch size is asked. The first ``predict`` grows the process's memory to
# its largest batch (freed memory is kept for reuse: ``backend.keep_freed_memory``): padded to
# their longest member, 256 sentences or 2,048 word forms (one a URL of 100 characters) took tens
# to hundreds of MB a layer; on EWT's first 25,000 tokens that first call spent 1.5 s of system
# time on 749 MB of new pages, against 11 ms and 305 MB with this cap, and later calls ran 1.2-1.4x
# faster in the smaller arrays too (BENCHMARKS.md).
INFERENCE_POSITIONS = 4096


class TaggerVocabs(NamedTuple):
    """The three vocabularies of a tagger: words (lower-cased), characters, tags."""
    words: Vocab
    chars: Vocab
    tags: Vocab


@dataclass
class TagBatch:
    words: np.ndarray          # (T, B) int64
    lengths: np.ndarray        # (B,) int64
    chars: np.ndarray | None   # (W, U) int64 (None: a table computed beforehand)
    char_lengths: np.ndarray | None   # (U,) int64
    word_index: np.ndarray     # (T, B) int64 into the U distinct words
    tags: np.ndarray | None    # (T, B) int64, IGNORE at padding

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def encode_batch(vocabs: TaggerVocabs, sentences, tags=None, alpha: float = 0.0, rng=None,
                 unknown_tag: int | None = None, forms: dict | None = None) -> TagBatch:
    """A TagBatch of ``sentences`` (lists of words, each non-empty) and, when given, their ``tags``.

    alpha > 0: word dropout (training): a word seen c times in training becomes <unk> with
    probability alpha / (alpha + c), drawn from ``rng``. unknown_tag: the id given to a gold tag
    the vocabulary lacks (default: a TinyRNNError naming it). forms: {word form: row} of a table
    of character vectors computed beforehand (``Tagger.predict``): word_index points into it and
    the batch carries no characters (chars, char_lengths None).
    """
    lengths = np.array([len(s) for s in sentences], np.int64)
    flat = [w for s in sentences for w in s]                   # every word, sentence after sentence
    words = pad_flat(vocabs.words.encode(flat), lengths, PAD_ID)
    if alpha > 0:
        words = word_dropout(words, vocabs.words.counts, alpha, rng)
    distinct = {} if forms is None else forms
    word_index = pad_flat([distinct.setdefault(w, len(distinct)) for w in flat], lengths, 0)
    chars = char_lengths = None
    if forms is None:
        chars, char_lengths = encode_forms(list(distinct), vocabs.chars)
    gold = None
    if tags is not None:
        gold, _ = pad_batch([vocabs.tags.encode(t, missing=unknown_tag) for t in tags], IGNORE)
    return TagBatch(words, lengths, chars, char_lengths, word_index, gold)


def encode_forms(forms, chars: Vocab) -> tuple:
    """Word forms -> (character ids (W, U) time-major, padded with <pad>; lengths (U,))."""
    ids = np.ascontiguousarray(encode_chars(forms, chars).T)
    return ids, np.array([len(w) for w in forms], np.int64)


def epoch_batches(lengths, batch_size: int, seed: int, epoch: int) -> list:
    """The batches of one epoch: lists of sentence indices, similar lengths together, shuffled."""
    rng = np.random.default_rng([seed, epoch])
    lengths = np.asarray(lengths)
    order = np.lexsort((rng.random(len(lengths)), lengths))          # by length, ties at random
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[k].tolist() for k in rng.permutation(len(batches))]


def length_batches(lengths, batch_size: int, positions: int | None = None):
    """Indices of sequences of ``lengths`` in batches for inference: longest first (the order the
    recurrent layers need, so nothing is sorted again), each of at most ``batch_size`` sequences
    and at most ``positions`` (default ``INFERENCE_POSITIONS``) padded positions (its first
    length x its size; at least one sequence). Empty sequences are left out."""
    positions = positions or INFERENCE_POSITIONS
    order = [i for i in np.argsort([-n for n in lengths], kind="stable").tolist() if lengths[i]]
    start = 0
    while start < len(order):
        size = max(1, min(batch_size, positions // lengths[order[start]]))
        yield order[start:start + size]
        start += size
