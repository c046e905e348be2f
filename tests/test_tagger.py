"""The tagger as a library: it learns, padding never counts, checkpoints and exact resume.

The data is synthetic: a word's tag is fixed by its suffix (-o, -ce NOUN; -ed, -ing VERB; -ly
ADV; -y ADJ), so only the character RNN can tag words it never saw. Models are tiny.
"""
import json

import numpy as np
import pytest

import tinyrnn
from tinyrnn import checkpoint, optim
from tinyrnn.errors import TinyRNNError
from tinyrnn.tagging import batch as tagger_batch
from tinyrnn.tagging.batch import IGNORE, encode_batch, epoch_batches, length_batches
from tinyrnn.tagging.conll import Sentence
from tinyrnn.tagging.model import Tagger
from tinyrnn.tagging.task import TagConfig, build_vocabs, train_tagger

STEMS = ["mang", "jui", "lov", "walk", "talk", "happ", "brisk", "slow", "dark", "cold", "warm", "soft"]
SUFFIX = {"o": "NOUN", "ce": "NOUN", "ed": "VERB", "ing": "VERB", "ly": "ADV", "y": "ADJ"}
TINY = dict(hidden=16, layers=1, word_dim=8, char_dim=8, char_hidden=16, dropout=0.0)


def tag_of(word):
    return SUFFIX[max((s for s in SUFFIX if word.endswith(s)), key=len)]


def sentences(n, stems=STEMS, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [stems[rng.integers(len(stems))] + list(SUFFIX)[rng.integers(len(SUFFIX))]
                 for _ in range(rng.integers(2, 7))]
        out.append(Sentence(words, [tag_of(w) for w in words]))
    return out


def write_conllu(path, sents):
    with open(path, "w", encoding="utf-8") as f:
        for k, s in enumerate(sents):
            f.write(f"# sent_id = {k}\n")
            f.writelines(f"{i}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_\n" for i, (w, t) in enumerate(zip(s.words, s.tags), 1))
            f.write("\n")
    return str(path)


def accuracy(model, sents):
    predicted = model.predict(sents)
    pairs = [(p, g) for s, tags in zip(sents, predicted) for p, g in zip(tags, s.tags)]
    return sum(p == g for p, g in pairs) / len(pairs)


@pytest.mark.parametrize("crf", [False, True])
def test_learns_suffixes_and_tags_unseen_words(crf):
    train = sentences(40)
    tinyrnn.manual_seed(0)
    vocabs = build_vocabs(train)
    model = Tagger(vocabs, crf=crf, **TINY)
    opt = optim.Adam(model.parameters(), lr=0.03)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(30):
        idx = rng.permutation(len(train))[:20]
        batch = encode_batch(vocabs, [train[i].words for i in idx], [train[i].tags for i in idx], 0.25, rng)
        loss = model.loss(batch)
        model.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert accuracy(model, train) == 1.0
    unseen = sentences(20, stems=["zork", "plim", "quab"], seed=1)       # words never seen in training
    assert not any(w.lower() in vocabs.words for s in unseen for w in s.words)
    assert accuracy(model, unseen) >= 0.95
    assert model.predict([["zorkly", "plimed"], ["quabo"]]) == [["ADV", "VERB"], ["NOUN"]]


@pytest.mark.parametrize("crf", [False, True])
def test_padding_never_counts(crf):
    train = sentences(6)
    tinyrnn.manual_seed(1)
    vocabs = build_vocabs(train)
    model = Tagger(vocabs, crf=crf, **TINY).eval()
    short, long = min(train, key=len), max(train, key=len)
    assert len(short) < len(long)

    def batch(sents):
        return encode_batch(vocabs, [s.words for s in sents], [s.tags for s in sents])

    alone, pair = batch([short]), batch([short, long])
    n = len(short)
    np.testing.assert_allclose(model(pair).numpy()[:n, 0], model(alone).numpy()[:, 0], rtol=1e-5, atol=1e-6)
    assert (pair.tags[n:, 0] == IGNORE).all()
    # the loss is the per-token mean over real tokens only: the pair's loss weights each sentence by its length
    expected = (model.loss(alone).item() * n + model.loss(batch([long])).item() * len(long)) / (n + len(long))
    assert model.loss(pair).item() == pytest.approx(expected, rel=1e-5)
    junk = batch([short, long])                                          # junk ids in the padding
    junk.words[n:, 0] = 3
    junk.word_index[n:, 0] = 1
    assert model.loss(junk).item() == pytest.approx(model.loss(pair).item(), rel=1e-6)
    assert model.predict([short, long])[0] == model.predict([short])[0]


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_other_cells_train_and_predict(cell):
    train = sentences(4)
    tinyrnn.manual_seed(3)
    vocabs = build_vocabs(train)
    model = Tagger(vocabs, cell=cell, **TINY)
    loss = model.loss(encode_batch(vocabs, [s.words for s in train], [s.tags for s in train]))
    loss.backward()
    assert np.isfinite(loss.item()) and all(p.grad is not None for p in model.parameters())
    assert [len(t) for t in model.predict(train)] == [len(s) for s in train]


def test_predict_keeps_order_and_empty_sentences():
    train = sentences(5)
    tinyrnn.manual_seed(2)
    model = Tagger(build_vocabs(train), **TINY)
    words = [s.words for s in train]
    one_by_one = [model.predict([w])[0] for w in words]
    assert model.predict(words + [[]], batch_size=2) == one_by_one + [[]]
    assert model.training                                                # predict restores the mode


def test_predict_batches_by_positions(monkeypatch):
    """Inference batches hold at most INFERENCE_POSITIONS padded positions, whatever batch_size
    asks; the tags do not depend on the batches."""
    train = sentences(6)
    tinyrnn.manual_seed(2)
    model = Tagger(build_vocabs(train), **TINY)
    words = [s.words for s in train]
    expected = model.predict(words)
    seen = []
    monkeypatch.setattr(tagger_batch, "INFERENCE_POSITIONS", 2 * max(len(w) for w in words))
    real_forward = Tagger.forward
    monkeypatch.setattr(Tagger, "forward", lambda self, batch, table=None: seen.append(batch.words.shape)
                        or real_forward(self, batch, table))
    assert model.predict(words) == expected
    assert len(seen) > 1 and all(T * B <= tagger_batch.INFERENCE_POSITIONS for T, B in seen)


def test_length_batches():
    lengths = [3, 0, 7, 7, 1, 5, 2, 9]
    # longest first, ties in input order, the empty sequence left out; 14 positions: 9 alone,
    # two of 7, two of 5 and 3, then batch_size (3) bounds two of 2 and 1
    assert list(length_batches(lengths, 3, positions=14)) == [[7], [2, 3], [5, 0], [6, 4]]
    assert list(length_batches(lengths, 2, positions=5)) == [[7], [2], [3], [5], [0], [6, 4]]
    assert list(length_batches([0, 0], 4)) == []


def test_epoch_batches_are_a_pure_function_of_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(1, 30, size=50)
    a = epoch_batches(lengths, 8, seed=3, epoch=2)
    assert a == epoch_batches(lengths, 8, seed=3, epoch=2) != epoch_batches(lengths, 8, seed=3, epoch=3)
    assert sorted(i for b in a for i in b) == list(range(50))
    ranges = sorted((lengths[b].min(), lengths[b].max()) for b in a)  # each batch: a run of the sorted lengths
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))


def test_bad_model_arguments():
    vocabs = build_vocabs(sentences(2))
    with pytest.raises(TinyRNNError, match="unknown cell"):
        Tagger(vocabs, cell="transformer")
    with pytest.raises(TinyRNNError, match="both 0"):
        Tagger(vocabs, word_dim=0, char_hidden=0)
    with pytest.raises(TinyRNNError, match="dropout"):
        Tagger(vocabs, dropout=1.0)


def cfg(train, dev, **kw):
    base = dict(train=train, dev=dev, hidden=8, layers=2, word_dim=6, char_dim=4, char_hidden=6, dropout=0.3,
                word_dropout=0.25, batch_size=4, lr=0.01, lr_schedule="constant", eval_every=4, save_every=100,
                threads=1)
    return TagConfig(**{**base, **kw})


def weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_exact_resume_and_checkpoint(tmp_path):
    train = write_conllu(tmp_path / "train.conllu", sentences(18))
    dev = write_conllu(tmp_path / "dev.conllu", sentences(6, seed=5))
    straight = train_tagger(cfg(train, dev, steps=12), out=str(tmp_path / "straight"), progress=False, log=print)
    train_tagger(cfg(train, dev, steps=7), out=str(tmp_path / "split"), progress=False, log=print)
    split = train_tagger(cfg(None, None, steps=12), out=str(tmp_path / "split"), resume=True, explicit={"steps"},
                         progress=False, log=print)
    assert split["step"] == straight["step"] == 12
    a, b = weights(tmp_path / "straight" / "last.npz"), weights(tmp_path / "split" / "last.npz")
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert split["dev_accuracy"] == straight["dev_accuracy"]
    rows = [json.loads(line) for line in open(tmp_path / "split" / "metrics.jsonl")]
    assert any("dev_accuracy" in r for r in rows) and any("loss" in r for r in rows)

    model, vocabs, meta = checkpoint.load_model(tmp_path / "straight" / "last", family="tagger")
    assert meta["family"] == "tagger" and meta["column"] == "upos" and meta["data"]["max_length"] >= 2
    assert model.config()["hidden"] == 8 and vocabs.tags.itos == model.vocabs.tags.itos
    with pytest.raises(TinyRNNError, match="holds a tagger, not a character model"):
        checkpoint.load_model(tmp_path / "straight")


def test_resume_on_another_file_is_refused(tmp_path):
    train = write_conllu(tmp_path / "train.conllu", sentences(8))
    train_tagger(cfg(train, None, steps=2), out=str(tmp_path / "run"), progress=False, log=print)
    other = write_conllu(tmp_path / "train.conllu", sentences(8, seed=9))   # same path, new content
    with pytest.raises(TinyRNNError, match="not the file the run in progress was trained on"):
        train_tagger(cfg(other, None, steps=4), out=str(tmp_path / "run"), resume=True, explicit={"steps"},
                     progress=False, log=print)


def test_bad_config(tmp_path):
    with pytest.raises(TinyRNNError, match="no training file"):
        train_tagger(TagConfig(steps=1), out=str(tmp_path / "a"), progress=False)
    train = write_conllu(tmp_path / "train.conllu", sentences(3))
    for bad, needle in ((dict(column="lemma"), "--column"), (dict(word_dropout=-1.0), "--word-dropout"),
                        (dict(batch_size=0), "--batch-size")):
        with pytest.raises(TinyRNNError, match=needle):
            train_tagger(cfg(train, None, steps=1, **bad), out=str(tmp_path / "b"), progress=False)
    assert not (tmp_path / "b").exists()
