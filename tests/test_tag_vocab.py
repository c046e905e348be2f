"""Word, character and tag vocabularies: ids, <pad>/<unk>, JSON round trips, word dropout."""
import json

import numpy as np
import pytest

from tinyrnn.errors import TinyRNNError
from tinyrnn.tagging.vocab import (PAD_ID, UNK_ID, Vocab, build_char_vocab, build_tag_vocab,
                                   build_word_vocab, encode_chars, word_dropout)

SENTENCES = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "end"]]


def test_word_vocab():
    v = build_word_vocab(SENTENCES)
    assert v.itos[:2] == ["<pad>", "<unk>"] and v.itos[2:4] == ["the", "sat"]   # by count
    assert v.counts.tolist()[:4] == [0, 0, 3, 2]
    assert v.encode(["the", "zebra"]).tolist() == [2, UNK_ID]
    assert v.decode([2, 3]) == ["the", "sat"]
    assert "cat" in v and "zebra" not in v and len(v) == 7
    rare = build_word_vocab(SENTENCES, min_count=2)
    assert rare.itos == ["<pad>", "<unk>", "the", "sat"]


def test_lowercased_vocab():
    v = build_word_vocab([["The", "the", "THE"]], lower=True)
    assert v.itos == ["<pad>", "<unk>", "the"] and v.counts[2] == 3
    assert v.encode(["ThE"]).tolist() == [2] and "THE" in v


def test_char_vocab():
    c = build_char_vocab(SENTENCES)
    assert c.itos[:2] == ["<pad>", "<unk>"] and "t" in c
    ids = encode_chars(["at", "e", "é"], c)
    assert ids.shape == (3, 2) and ids[1, 1] == PAD_ID and ids[2, 0] == UNK_ID
    assert c.decode(ids[0]) == ["a", "t"]
    assert encode_chars(["", "ta"], c).tolist() == [[PAD_ID, PAD_ID], c.encode("ta").tolist()]
    assert encode_chars([], c).shape == (0, 1)


def test_tag_vocab_has_no_unk():
    t = build_tag_vocab([["DET", "NOUN"], ["DET"]])
    assert t.itos == ["DET", "NOUN"] and not t.unk and not t.pad
    assert t.encode(["NOUN"]).tolist() == [1]
    assert t.encode(["NOUN", "X"], missing=-1).tolist() == [1, -1]      # an unseen gold tag at eval
    with pytest.raises(TinyRNNError, match="'X' is not in the vocabulary"):
        t.encode(["X"])


def test_json_round_trip():
    for v in (build_word_vocab(SENTENCES, lower=True), build_char_vocab(SENTENCES), build_tag_vocab(SENTENCES)):
        text = json.dumps(v.to_json())
        back = Vocab.from_json(text)
        assert back == v and back.itos == v.itos and back.counts.tolist() == v.counts.tolist()
        assert Vocab.from_json(v.to_json()) == v


def test_corrupt_json():
    for bad in ("{not json", '{"tokens": ["a"]}', "[1, 2]"):
        with pytest.raises(TinyRNNError, match="corrupt vocabulary"):
            Vocab.from_json(bad)


def test_word_dropout_rate():
    counts = np.array([0, 0, 1, 3, 1000])
    ids = np.tile(np.arange(5), (20000, 1))
    out = word_dropout(ids, counts, 0.25, np.random.default_rng(0))
    assert out.dtype == ids.dtype and out.shape == ids.shape
    rate = (out == UNK_ID).mean(axis=0)
    assert rate[PAD_ID] == 0 and np.all(out[:, 0] == PAD_ID)            # padding is never replaced
    assert rate[2] == pytest.approx(0.25 / 1.25, abs=0.01)
    assert rate[3] == pytest.approx(0.25 / 3.25, abs=0.01)
    assert rate[4] < 0.001
    single = word_dropout(ids, counts, 0.5, np.random.default_rng(0), singleton=True)
    rate = (single == UNK_ID).mean(axis=0)
    assert rate[2] == pytest.approx(0.5, abs=0.02) and rate[3] == 0 and rate[4] == 0
    assert np.all(ids == np.arange(5))                                  # the input is not changed


def test_pad_batch():
    from tinyrnn.tagging.vocab import pad_batch

    ids, lengths = pad_batch([np.array([5, 6, 7]), [8]])
    assert ids.tolist() == [[5, 8], [6, 0], [7, 0]] and lengths.tolist() == [3, 1]
    ids, _ = pad_batch([[1]], pad_id=-1)
    assert ids.shape == (1, 1)
