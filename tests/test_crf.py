"""The linear-chain CRF: loss and Viterbi against brute force over all K^T paths, gradients
against finite differences, padding inert, float32 against float64."""
import itertools

import numpy as np
import pytest

import tinyrnn
from tinyrnn import Tensor
from tinyrnn.tagging.crf import CRF, crf_nll, logsumexp, viterbi_decode

K, T = 3, 4
LENGTHS = [4, 1, 3, 2]


def _inputs(seed=0, dtype=np.float64, lengths=LENGTHS, K=K, T=T):
    rng = np.random.default_rng(seed)
    B = len(lengths)
    E = rng.standard_normal((T, B, K))
    tags = rng.integers(0, K, (T, B))
    trans, start, end = rng.standard_normal((K, K)), rng.standard_normal(K), rng.standard_normal(K)
    tensors = [Tensor(x, requires_grad=True, dtype=dtype) for x in (E, trans, start, end)]
    return tensors, tags, np.array(lengths)


def _score(path, E, trans, start, end):
    s = start[path[0]] + end[path[-1]] + sum(E[t, k] for t, k in enumerate(path))
    return s + sum(trans[a, b] for a, b in zip(path, path[1:]))


def _brute(E, tags, lengths, trans, start, end):
    """Per sentence: (log Z - score(gold), best path) by enumerating every path."""
    out = []
    for b, n in enumerate(lengths):
        e = E[:n, b]
        paths = list(itertools.product(range(E.shape[2]), repeat=n))
        scores = np.array([_score(p, e, trans, start, end) for p in paths])
        gold = _score(tags[:n, b], e, trans, start, end)
        out.append((logsumexp(scores, axis=0) - gold, list(paths[int(scores.argmax())])))
    return out


def test_loss_equals_brute_force():
    (E, tr, st, en), tags, lengths = _inputs()
    brute = _brute(E.data, tags, lengths, tr.data, st.data, en.data)
    per = crf_nll(E, tags, lengths, tr, st, en, reduction="none").data
    np.testing.assert_allclose(per, [b[0] for b in brute], rtol=0, atol=1e-10)
    total = crf_nll(E, tags, lengths, tr, st, en).item()
    assert abs(total - sum(b[0] for b in brute)) < 1e-10
    mean = crf_nll(E, tags, lengths, tr, st, en, reduction="mean").item()
    assert abs(mean - total / len(lengths)) < 1e-10
    assert np.all(per > 0)


def test_viterbi_equals_brute_force():
    for seed in range(5):
        (E, tr, st, en), tags, lengths = _inputs(seed)
        brute = _brute(E.data, tags, lengths, tr.data, st.data, en.data)
        assert viterbi_decode(E.data, lengths, tr.data, st.data, en.data) == [b[1] for b in brute]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradcheck_with_padding(reduction):
    (E, tr, st, en), tags, lengths = _inputs(1)
    fn = lambda e, a, b, c: crf_nll(e, tags, lengths, a, b, c, reduction=reduction)
    assert tinyrnn.gradcheck(fn, [E, tr, st, en])


def test_gradcheck_per_sentence_losses():
    (E, tr, st, en), tags, lengths = _inputs(2)
    assert tinyrnn.gradcheck(lambda e, a, b, c: crf_nll(e, tags, lengths, a, b, c, reduction="none"),
                             [E, tr, st, en])


def test_padding_is_inert():
    (E, tr, st, en), tags, lengths = _inputs(3)
    loss = crf_nll(E, tags, lengths, tr, st, en)
    loss.backward()
    pad = np.arange(T)[:, None] >= lengths[None, :]
    assert np.all(E.grad[pad] == 0)
    # changing padded emissions or tags changes nothing
    E2 = Tensor(np.where(pad[:, :, None], 1e3, E.data), requires_grad=True)
    tags2 = np.where(pad, -7, tags)
    assert crf_nll(E2, tags2, lengths, tr, st, en).item() == pytest.approx(loss.item(), abs=1e-12)


def test_emission_gradient_rows_sum_to_zero():
    (E, tr, st, en), tags, lengths = _inputs(4)
    crf_nll(E, tags, lengths, tr, st, en).backward()
    np.testing.assert_allclose(E.grad.sum(axis=2), 0, atol=1e-12)   # marginals sum to 1, one-hot to 1
    np.testing.assert_allclose(st.grad.sum(), 0, atol=1e-12)
    np.testing.assert_allclose(tr.grad.sum(), 0, atol=1e-12)        # length-1 moves per sentence both sides


def test_float32_matches_float64():
    (E, tr, st, en), tags, lengths = _inputs(5, lengths=[7, 3, 5, 1, 6], T=7, K=5)
    loss64 = crf_nll(E, tags, lengths, tr, st, en)
    loss64.backward()
    f32 = [Tensor(t.data, requires_grad=True, dtype=np.float32) for t in (E, tr, st, en)]
    loss32 = crf_nll(*f32[:1], tags, lengths, *f32[1:])
    assert loss32.dtype == np.float32
    loss32.backward()
    assert abs(loss32.item() - loss64.item()) <= 1e-5 * abs(loss64.item())
    for a, b in zip(f32, (E, tr, st, en)):
        assert a.grad.dtype == np.float32
        np.testing.assert_allclose(a.grad, b.grad, atol=1e-5)


def test_large_scores_are_stable():
    (E, tr, st, en), tags, lengths = _inputs(6)
    big = Tensor(E.data * 1e4, requires_grad=True)
    loss = crf_nll(big, tags, lengths, tr, st, en)
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(big.grad))


def test_forbidden_transitions():
    """-inf transitions are never decoded and get no gradient mass."""
    (E, tr, st, en), tags, lengths = _inputs(7)
    forbid = tr.data.copy()
    forbid[0, 1] = -np.inf
    paths = viterbi_decode(E.data, lengths, forbid, st.data, en.data)
    assert all((a, b) != (0, 1) for p in paths for a, b in zip(p, p[1:]))
    gold = np.full_like(tags, 2)                 # no gold 0 -> 1 move
    trans = Tensor(forbid, requires_grad=True)
    loss = crf_nll(E, gold, lengths, trans, st, en)
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(trans.grad)) and trans.grad[0, 1] == 0


def test_crf_module():
    crf = CRF(K, dtype=np.float64)
    assert [n for n, _ in crf.named_parameters()] == ["transitions", "start", "end"]
    (E, *_), tags, lengths = _inputs(8)
    crf.nll(E, tags, lengths).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in crf.parameters())
    paths = crf.decode(E, lengths)
    assert [len(p) for p in paths] == list(lengths)
    # with zero CRF scores Viterbi is the per-position argmax
    assert paths == [E.data[:n, b].argmax(1).tolist() for b, n in enumerate(lengths)]


def test_bad_shapes():
    (E, tr, st, en), tags, lengths = _inputs(9)
    with pytest.raises(ValueError, match="lengths"):
        crf_nll(E, tags, [4, 0, 3, 2], tr, st, en)
    with pytest.raises(ValueError, match="tags"):
        crf_nll(E, tags[:, :2], lengths, tr, st, en)
    with pytest.raises(IndexError):
        crf_nll(E, np.full_like(tags, K), lengths, tr, st, en)


try:
    import torch
except ImportError:        # the comparison below needs PyTorch; everything above does not
    torch = None


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_matches_torch_autograd():
    """A hand-written torch forward algorithm, differentiated by torch's autograd."""
    (E, tr, st, en), tags, lengths = _inputs(10, lengths=[5, 2, 4], T=5, K=4)
    crf_nll(E, tags, lengths, tr, st, en).backward()
    te, ttr, tst, ten = (torch.tensor(t.data, requires_grad=True) for t in (E, tr, st, en))
    total = 0
    for b, n in enumerate(lengths):
        alpha = tst + te[0, b]
        gold = tst[tags[0, b]] + te[0, b, tags[0, b]]
        for t in range(1, n):
            alpha = torch.logsumexp(alpha[:, None] + ttr, 0) + te[t, b]
            gold = gold + ttr[tags[t - 1, b], tags[t, b]] + te[t, b, tags[t, b]]
        total = total + torch.logsumexp(alpha + ten, 0) - gold - ten[tags[n - 1, b]]
    total.backward()
    for mine, ref in zip((E, tr, st, en), (te, ttr, tst, ten)):
        np.testing.assert_allclose(mine.grad, ref.grad.numpy(), atol=1e-10)


def test_bio_constraints():
    from tinyrnn.tagging.crf import bio_constraints

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    trans, start = bio_constraints(tags)
    assert np.isneginf(start[[2, 4]]).all() and np.all(start[[0, 1, 3]] == 0)
    allowed = np.isfinite(trans)
    assert allowed[1, 2] and allowed[2, 2] and allowed[3, 4] and allowed[2, 1] and allowed[0, 1]
    assert not allowed[0, 2] and not allowed[1, 4] and not allowed[4, 2]
    rng = np.random.default_rng(0)
    E = rng.standard_normal((6, 3, 5)) * 3
    for path in viterbi_decode(E, [6, 4, 1], trans, start, np.zeros(5)):
        assert tags[path[0]][:2] != "I-"
        assert all(not tags[b].startswith("I-") or tags[a][2:] == tags[b][2:] and tags[a] != "O"
                   for a, b in zip(path, path[1:]))


def test_import_does_not_load_numba():
    import subprocess
    import sys

    code = "import sys, tinyrnn.tagging; print('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
