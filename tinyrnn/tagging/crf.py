"""A linear-chain CRF: its negative log-likelihood as one op on the tape, and Viterbi decoding.

For a sentence of length L with emission scores E (L, K) and tags y, the score of y is

    score(y) = start[y_0] + sum_t E[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{L-1}]

and p(y) = exp(score(y)) / Z, Z summing exp(score) over all K^L tag sequences. The forward
algorithm gives log Z in O(L K^2); its gradient is the expected count of each score term, so the
backward pass computes marginals with the backward algorithm:

    d(log Z - score(y)) / d E[t, k]              = p(y_t = k) - [y_t = k]
    d(...) / d transitions[i, j]                 = sum_t p(y_{t-1} = i, y_t = j) - #gold (i -> j)
    d(...) / d start[k], d end[k]                = p(y_0 = k) - [y_0 = k], p(y_{L-1} = k) - [y_{L-1} = k]

Batches are time-major and padded: emissions (T, B, K), tags (T, B), lengths (B,); positions
t >= lengths[b] are padding and take no part in the value or the gradient. A score of -inf in
``transitions`` / ``start`` / ``end`` forbids that move (e.g. O -> I-PER).
"""
from __future__ import annotations

import numpy as np

from ..backend import DeviceError
from ..nn.module import Module, Parameter
from ..tensor import Tensor, record


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(x))) along ``axis``, stably; -inf where every entry is -inf."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - m), axis=axis)) + np.squeeze(m, axis)


def _check(emissions: np.ndarray, tags, lengths, transitions: np.ndarray):
    """Shapes and ranges; returns (tags, lengths, mask (T, B) bool)."""
    T, B, K = emissions.shape
    lengths = np.asarray(lengths, np.int64).reshape(-1)
    if lengths.shape != (B,) or np.any(lengths < 1) or np.any(lengths > T):
        raise ValueError(f"crf: lengths must be {B} integers in [1, {T}], got {lengths.tolist()}")
    if transitions.shape != (K, K):
        raise ValueError(f"crf: transitions must be ({K}, {K}) for {K} tags, got {transitions.shape}")
    mask = np.arange(T)[:, None] < lengths[None, :]
    if tags is None:
        return None, lengths, mask
    tags = np.asarray(tags, np.int64)
    if tags.shape != (T, B):
        raise ValueError(f"crf: tags must be (T, B) = ({T}, {B}), got {tags.shape}")
    if np.any((tags[mask] < 0) | (tags[mask] >= K)):
        raise IndexError(f"crf: tag ids must be in [0, {K}) at every position t < length")
    return np.where(mask, tags, 0), lengths, mask   # padding tags may be anything: make them 0


def _forward(E, trans, start, mask):
    """alphas (T, B, K): log of the summed exp-scores of all prefixes ending in each tag.
    Padded steps copy the last valid alpha forward, so alphas[-1] is alpha at length - 1."""
    alphas = np.empty_like(E)
    alphas[0] = start + E[0]
    for t in range(1, E.shape[0]):
        step = logsumexp(alphas[t - 1][:, :, None] + trans[None], axis=1) + E[t]
        alphas[t] = np.where(mask[t][:, None], step, alphas[t - 1])
    return alphas


def _backward(E, trans, end, mask):
    """betas (T, B, K): log of the summed exp-scores of all suffixes after each tag (end included)."""
    betas = np.empty_like(E)
    betas[-1] = end
    for t in range(E.shape[0] - 2, -1, -1):
        step = logsumexp(trans[None] + (E[t + 1] + betas[t + 1])[:, None, :], axis=2)
        betas[t] = np.where(mask[t + 1][:, None], step, betas[t + 1])
    return betas


def _gold_score(E, trans, start, end, tags, lengths, mask):
    """score(gold) per sentence, (B,)."""
    T, B, _ = E.shape
    b = np.arange(B)
    last = tags[lengths - 1, b]
    emit = np.take_along_axis(E, tags[:, :, None], axis=2)[:, :, 0]
    moves = np.where(mask[1:], trans[tags[:-1], tags[1:]], 0)
    return start[tags[0]] + np.where(mask, emit, 0).sum(0) + moves.sum(0) + end[last]


def _tensor(x, name: str) -> Tensor:
    t = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    if t.device != "cpu":
        raise DeviceError(f"crf_nll runs on the CPU: move {name} there first (.to('cpu'))")
    return t


def crf_nll(emissions, tags, lengths, transitions, start, end, reduction: str = "sum") -> Tensor:
    """Negative log-likelihood of the gold tags, log Z - score(gold), as one op on the tape.

    emissions: (T, B, K) Tensor, time-major and padded; tags: (T, B) ints; lengths: (B,) ints >= 1
    transitions: (K, K) Tensor, [i, j] scores tag i followed by tag j; start, end: (K,) Tensors
    reduction: 'sum' (default) or 'mean' over the B sentences: a 0-d tensor; 'none': (B,)
    All floats are computed in the emissions' dtype (float32 or float64).
    """
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"crf_nll: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    parents = tuple(_tensor(x, n) for x, n in ((emissions, "emissions"), (transitions, "transitions"),
                                                (start, "start"), (end, "end")))
    dtype = parents[0].dtype
    E, trans, st, en = (p.data.astype(dtype, copy=False) for p in parents)
    tags, lengths, mask = _check(E, tags, lengths, trans)
    T, B, K = E.shape
    alphas = _forward(E, trans, st, mask)
    log_z = logsumexp(alphas[-1] + en, axis=1)                      # (B,)
    nll = log_z - _gold_score(E, trans, st, en, tags, lengths, mask)
    value = {"sum": nll.sum(), "mean": nll.mean(), "none": nll}[reduction]

    def backward(g):
        # weight of each sentence's gradient: d loss / d nll[b]
        w = np.broadcast_to(np.asarray(g, dtype) / (B if reduction == "mean" else 1), (B,))
        betas = _backward(E, trans, en, mask)
        with np.errstate(invalid="ignore"):                         # exp(-inf) is fine; padding: 0
            node = np.exp(np.where(mask[:, :, None], alphas + betas - log_z[None, :, None], -np.inf))
        node = np.nan_to_num(node)                                  # p(y_t = k), (T, B, K)
        gold = np.zeros_like(E)
        np.put_along_axis(gold, tags[:, :, None], 1, axis=2)
        gold *= mask[:, :, None]
        d_emit = (node - gold) * w[None, :, None]
        d_trans = np.zeros_like(trans)
        for t in range(1, T):                                       # pairwise marginals, step t
            pair = alphas[t - 1][:, :, None] + trans[None] + (E[t] + betas[t])[:, None, :]
            with np.errstate(invalid="ignore"):
                pair = np.exp(np.where(mask[t][:, None, None], pair - log_z[:, None, None], -np.inf))
            d_trans += np.einsum("b,bij->ij", w, np.nan_to_num(pair))
        b = np.arange(B)
        last = tags[lengths - 1, b]
        np.add.at(d_trans, (tags[:-1], tags[1:]), -(w[None, :] * mask[1:]))
        d_start = w @ (node[0] - gold[0])
        node_last, gold_last = node[lengths - 1, b], np.eye(K, dtype=dtype)[last]
        d_end = w @ (node_last - gold_last)
        return tuple(d.astype(p.dtype, copy=False) for d, p in zip((d_emit, d_trans, d_start, d_end), parents))

    return record(np.asarray(value, dtype), parents, backward, "crf_nll")


def viterbi_decode(emissions, lengths, transitions, start, end) -> list:
    """The best tag sequence of each sentence: a list of B lists of tag ids (length lengths[b]).

    emissions: (T, B, K) array (or Tensor); transitions (K, K), start (K,), end (K,) arrays or Tensors.
    """
    E, trans, st, en = (x.numpy() if isinstance(x, Tensor) else np.asarray(x)
                        for x in (emissions, transitions, start, end))
    _, lengths, mask = _check(E, None, lengths, trans)
    T, B, K = E.shape
    delta = st + E[0]                                               # best score ending in each tag
    pointers = np.empty((T, B, K), np.int64)                        # best previous tag
    pointers[0] = np.arange(K)
    for t in range(1, T):
        scores = delta[:, :, None] + trans[None]                    # (B, K prev, K next)
        best = scores.argmax(axis=1)
        step = np.take_along_axis(scores, best[:, None, :], axis=1)[:, 0] + E[t]
        delta = np.where(mask[t][:, None], step, delta)
        pointers[t] = np.where(mask[t][:, None], best, np.arange(K))   # padding: stay on the same tag
    path = np.empty((T, B), np.int64)
    path[-1] = (delta + en).argmax(axis=1)
    for t in range(T - 1, 0, -1):
        path[t - 1] = pointers[t][np.arange(B), path[t]]
    return [path[:n, b].tolist() for b, n in enumerate(lengths.tolist())]


def bio_constraints(tags) -> tuple:
    """Scores that forbid invalid BIO moves, to add to transitions / start before decoding.

    tags: the tag names in id order (``tag_vocab.itos``). I-X may only follow B-X or I-X, so
    returns (transitions (K, K), start (K,)) holding -inf there and 0 elsewhere.
    """
    K = len(tags)
    trans, start = np.zeros((K, K)), np.zeros(K)
    for j, tag in enumerate(tags):
        if not tag.startswith("I-"):
            continue
        start[j] = -np.inf
        for i, prev in enumerate(tags):
            if prev[2:] != tag[2:] or prev[:2] not in ("B-", "I-"):
                trans[i, j] = -np.inf
    return trans, start


class CRF(Module):
    """The three score tables of a linear-chain CRF over ``num_tags`` tags, trained with ``nll``.

    transitions (K, K), start (K,), end (K,): Parameters, zero at first (the emissions break ties).
    """

    def __init__(self, num_tags: int, dtype=np.float32):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = Parameter(np.zeros((num_tags, num_tags)), dtype=dtype)
        self.start = Parameter(np.zeros(num_tags), dtype=dtype)
        self.end = Parameter(np.zeros(num_tags), dtype=dtype)

    def nll(self, emissions, tags, lengths, reduction: str = "sum") -> Tensor:
        """emissions (T, B, K) Tensor, tags (T, B), lengths (B,) -> the summed (or mean) NLL."""
        return crf_nll(emissions, tags, lengths, self.transitions, self.start, self.end, reduction)

    def decode(self, emissions, lengths) -> list:
        """emissions (T, B, K) -> a list of B tag-id lists, by Viterbi."""
        return viterbi_decode(emissions, lengths, self.transitions, self.start, self.end)

    def extra_repr(self) -> dict:
        return {"num_tags": self.num_tags}
