"""Scoring held-out text (``tinyrnn.generate.evaluate``): the whole text, as ``tinyrnn eval`` scores it,
and the sample of it the trainer scores at each evaluation, spread over the whole text rather than a
prefix of it, each sampled position scored exactly as the whole-text evaluation scores it."""
import numpy as np
import pytest

from tinyrnn import manual_seed, no_grad, ops
from tinyrnn.generate import evaluate, fill_in_windows, stream_rows
from tinyrnn.models import CharRNN


def test_stream_rows_sample_the_start_of_every_stream():
    text = np.arange(1001)                         # each id is its own position
    whole = stream_rows(text, 4, 50)
    assert whole.shape == (251, 4)                 # 4 streams of 250 targets: 0-250, 250-500, ...
    np.testing.assert_array_equal(whole[:, 3], np.arange(750, 1001))
    sample = stream_rows(text, 4, 50, max_chars=200)
    assert sample.shape == (51, 4)                 # the first 50 targets of each of those streams
    np.testing.assert_array_equal(sample, whole[:51])
    assert sample[0, 3] == 750                     # the last stream starts in the text's last quarter
    np.testing.assert_array_equal(stream_rows(text, 4, 50, max_chars=1001), whole)     # max_chars covers it all
    assert stream_rows(text, 4, 50, max_chars=2).shape == (2, 4)                       # at least a target each
    assert stream_rows(text[:120], 4, 50).shape == (60, 2)                             # short text: fewer streams


def test_fill_in_windows_sample_is_evenly_spaced_whole_windows():
    text = np.arange(1030)
    grid, tail = fill_in_windows(text, 100)
    np.testing.assert_array_equal(np.concatenate([grid.ravel(), tail]), text)         # all of it, once
    sample, no_tail = fill_in_windows(text, 100, max_chars=400)
    assert no_tail is None and sample.shape == (4, 100)
    np.testing.assert_array_equal(sample[:, 0], [0, 200, 500, 700])                    # spread over the text
    grid, tail = fill_in_windows(text[:60], 100, max_chars=30)                          # shorter than a window
    assert grid.shape == (0, 100) and len(tail) == 60


def one_stream_loss(model, ids):
    """Mean next-character loss of one stream read in a single call (batch 1), nats."""
    x = np.asarray(ids, dtype=np.int64).reshape(-1, 1)
    with no_grad():
        logits, _ = model(x[:-1])
        return float(ops.cross_entropy(logits.reshape(-1, model.vocab_size), x[1:].reshape(-1)).item())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sampled_score_is_the_streams_own_loss(cell):
    """Each sampled stream is scored from a fresh state over its first characters, as the whole-text
    evaluation scores them; the sample's mean is theirs (float64, so to 1e-10)."""
    manual_seed(5)
    model = CharRNN(vocab_size=7, cell=cell, hidden=10, layers=2, embed=4).double()
    model.eval()
    ids = np.random.default_rng(1).integers(0, 7, 4001)
    loss, count = evaluate(model, ids, batch_size=4, seq_len=30, max_chars=400)    # 100 targets a stream
    assert count == 400
    expected = np.mean([one_stream_loss(model, ids[b * 1000: b * 1000 + 101]) for b in range(4)])
    assert loss == pytest.approx(expected, rel=1e-10)
    whole, count = evaluate(model, ids, batch_size=4, seq_len=30)
    assert count == 4000
    assert whole == pytest.approx(np.mean([one_stream_loss(model, ids[b * 1000: b * 1000 + 1001])
                                           for b in range(4)]), rel=1e-10)


def test_sample_sees_the_end_of_the_text():
    """A text whose last half the model has not seen: a prefix would score only the first half, the
    spread sample scores both, as the whole text does."""
    manual_seed(2)
    model = CharRNN(vocab_size=6, cell="gru", hidden=8, layers=1, embed=3).double()
    model.eval()
    rng = np.random.default_rng(3)
    ids = np.concatenate([np.zeros(2000, dtype=np.int64), rng.integers(0, 6, 2000)])
    whole, _ = evaluate(model, ids, batch_size=8, seq_len=50)
    sample, _ = evaluate(model, ids, batch_size=8, seq_len=50, max_chars=800)
    prefix, _ = evaluate(model, ids[:800], batch_size=8, seq_len=50)
    assert abs(sample - whole) < 0.1 * abs(prefix - whole)


def test_bidirectional_sample_scores_its_windows():
    """The fill-in sample is the mean loss of the whole windows it picks, each scored as in the full
    evaluation."""
    manual_seed(4)
    model = CharRNN(vocab_size=5, cell="lstm", hidden=6, layers=1, embed=3, bidir=True).double()
    model.eval()
    ids = np.random.default_rng(4).integers(0, 5, 1234)
    loss, count = evaluate(model, ids, batch_size=3, seq_len=40, max_chars=200)
    picked, _ = fill_in_windows(ids, 40, max_chars=200)
    assert count == 200 and len(picked) == 5
    expected, scored = evaluate(model, picked.ravel(), batch_size=3, seq_len=40)         # those windows, whole
    assert scored == 200 and loss == pytest.approx(expected, rel=1e-10)
    whole, count = evaluate(model, ids, batch_size=3, seq_len=40)
    assert count == 1234 and np.isfinite(whole)
