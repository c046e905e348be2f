"""The sampling rule (temperature, top-k, top-p) against a plain statement of it, on known logits,
for the numpy reference ``sample_index`` and for the Numba generation kernels (a model whose head
gives fixed logits: w_out = 0, b_out = the logits, so every draw uses the same distribution).

The rule: p = softmax(z / temperature); rank the indices by decreasing p (ties: lower index
first); keep the first top_k (all if top_k <= 0); then, if top_p < 1, the shortest prefix of those
whose probabilities sum to >= top_p; walk the kept indices in rank order and return the first at
which the running sum of p exceeds u * (sum of kept p). When nothing is cut (top_k <= 0 or >= V,
top_p >= 1) the walk is in index order instead (the same distribution, no sort). temperature <= 0:
the argmax.
"""
import numpy as np
import pytest

from tinyrnn.kernels import cpu, reference
from tinyrnn.kernels.reference.weight_formats import no_scale

P = np.array([0.5, 0.1, 0.3, 0.05, 0.05])        # ranked: 0, 2, 1, 3, 4 (3 before 4: the tie)
LOGITS = np.log(P) + 2.0                          # softmax(LOGITS) == P
US = np.linspace(0.0, 0.999, 1000)

# (temperature, top_k, top_p) -> [(u below which, index)], written out by hand from P
CASES = {
    (1.0, 0, 1.0): [(0.5, 0), (0.6, 1), (0.9, 2), (0.95, 3), (1.0, 4)],   # nothing cut: index order
    (1.0, 5, 1.0): [(0.5, 0), (0.6, 1), (0.9, 2), (0.95, 3), (1.0, 4)],   # top_k = V cuts nothing
    (1.0, 9, 1.0): [(0.5, 0), (0.6, 1), (0.9, 2), (0.95, 3), (1.0, 4)],   # nor does top_k > V
    (1.0, 4, 1.0): [(0.5 / 0.95, 0), (0.8 / 0.95, 2), (0.9 / 0.95, 1), (1.0, 3)],  # rank order again
    (1.0, 2, 1.0): [(0.5 / 0.8, 0), (1.0, 2)],                     # kept {0, 2}, total 0.8
    (1.0, 3, 1.0): [(0.5 / 0.9, 0), (0.8 / 0.9, 2), (1.0, 1)],
    (1.0, 1, 1.0): [(1.0, 0)],                                      # top_k 1: always the argmax
    (1.0, 0, 0.7): [(0.5 / 0.8, 0), (1.0, 2)],                      # shortest prefix >= 0.7: {0, 2}
    (1.0, 0, 0.85): [(0.5 / 0.9, 0), (0.8 / 0.9, 2), (1.0, 1)],     # >= 0.85: {0, 2, 1}
    (1.0, 0, 0.2): [(1.0, 0)],                                      # small top_p: the most probable only
    (1.0, 2, 0.95): [(0.5 / 0.8, 0), (1.0, 2)],                     # top_k first, then top_p
    # temperature 0.5: p ~ P**2 = .25, .01, .09, .0025, .0025 (sum .355)
    (0.5, 0, 1.0): [(0.25 / 0.355, 0), (0.26 / 0.355, 1), (0.35 / 0.355, 2), (0.3525 / 0.355, 3), (1.0, 4)],
    # temperature 2: p ~ sqrt(P)
    (2.0, 2, 1.0): [(np.sqrt(0.5) / (np.sqrt(0.5) + np.sqrt(0.3)), 0), (1.0, 2)],
}


def expected(u, bands):
    for upper, index in bands:
        if u < upper:
            return index
    return bands[-1][1]


def near_a_boundary(u, bands):
    return any(abs(u - upper) < 1e-9 for upper, _ in bands)


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_reference_sample_index(case):
    temperature, top_k, top_p = case
    bands = CASES[case]
    for u in US:
        if not near_a_boundary(u, bands):
            assert reference.sample_index(LOGITS, u, temperature, top_k, top_p) == expected(u, bands), u


def test_reference_argmax_at_temperature_zero():
    z = np.array([0.1, 3.0, -2.0, 3.0])                 # the first maximum wins
    for u in (0.0, 0.5, 0.99):
        assert reference.sample_index(z, u, 0.0, 0, 1.0) == 1
        assert reference.sample_index(z, u, 1.0, 1, 1.0) == 1


def kernel_draws(kind, logits, uniforms, temperature, top_k, top_p):
    """The CPU generation kernel on a 1-layer model whose head ignores the state: logits = b_out."""
    rng = np.random.default_rng(0)
    V, H = len(logits), 4
    G = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    x0, w0 = rng.standard_normal((V, G * H)), rng.standard_normal((G * H, H))   # layer 0's table and w_hh
    w = np.zeros((0, G * H, 2 * H))
    b = rng.standard_normal((1, G * H))
    w_out, b_out = np.zeros((V, H)), np.array(logits, dtype=np.float64)
    h, c = np.zeros((1, H)), np.zeros((1, H))
    prime, out = np.array([1], dtype=np.int64), np.full(len(uniforms), -1, dtype=np.int64)
    tail = (prime, np.asarray(uniforms, dtype=np.float64), temperature, top_k, top_p, out)
    mats = [a for matrix in (w0, w) for a in (matrix, no_scale(matrix))]   # float weights: empty row scales
    head = (w_out, no_scale(w_out), b_out)
    if kind == "lstm":
        cpu.lstm_generate(x0, *mats, b, *head, h, c, *tail)
    elif kind == "gru":
        cpu.gru_generate(x0, *mats, b, b.copy(), *head, h, *tail)
    else:
        cpu.rnn_generate(x0, *mats, b, False, *head, h, *tail)
    return out


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_kernel_sampling_rule(kind):
    for (temperature, top_k, top_p), bands in CASES.items():
        us = np.array([u for u in US if not near_a_boundary(u, bands)])
        got = kernel_draws(kind, LOGITS, us, temperature, top_k, top_p)
        want = np.array([expected(u, bands) for u in us])
        bad = np.flatnonzero(got != want)
        assert not len(bad), ((temperature, top_k, top_p), us[bad[:5]], got[bad[:5]], want[bad[:5]])
    z = np.array([0.1, 3.0, -2.0, 3.0])
    assert (kernel_draws(kind, z, US[::50], 0.0, 0, 1.0) == 1).all()
    assert (kernel_draws(kind, z, US[::50], 1.0, 1, 1.0) == 1).all()


@pytest.mark.parametrize("V", [0, 1, 2, 3, 5, 64, 65, 1000, 5003])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_order_by_decreasing_probability(V, dtype):
    """The CPU kernel's rank order (its own merge sort, not Numba's argsort: compile time) is
    ``np.argsort(-p, kind="stable")``: decreasing p, ties by index, on distinct and on tied values."""
    from tinyrnn.kernels.cpu.generate import _by_decreasing

    rng = np.random.default_rng(V)
    for p in (rng.random(V), rng.integers(0, 4, V), np.zeros(V)):
        p = p.astype(dtype)
        order, merged = np.full(V, -1, np.int64), np.full(V, -1, np.int64)
        _by_decreasing(p, order, merged)        # an odd and an even number of passes: V 2, 3 and 5, 64
        np.testing.assert_array_equal(order, np.argsort(-p, kind="stable"))


def probability_cases(V, dtype):
    """Distributions a head may give: flat, peaked, tied values, one certain index, all tied."""
    rng = np.random.default_rng(V)
    cases = [rng.random(V), np.exp(3 * rng.standard_normal(V)), rng.integers(1, 4, V).astype(float),
             np.eye(1, V, V // 2)[0], np.ones(V)]
    return [(c / c.sum()).astype(dtype) for c in cases]


@pytest.mark.parametrize("V", [1, 2, 5, 65, 300, 3000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_ranks_only_the_head_it_keeps(V, dtype):
    """``_ranked_head`` sorts only the indices at or above a threshold, not all V: it keeps the same
    indices in the same order as a full stable sort (``np.argsort(-p, kind="stable")``) followed by
    the rule's cuts (the first top_k, then the shortest prefix whose running sum in float64 is >= top_p),
    on flat, peaked and tied distributions, for top_k and top_p alone and together."""
    from tinyrnn.kernels.cpu.generate import _ranked_head

    for p in probability_cases(V, dtype):
        full = np.argsort(-p, kind="stable")
        running = np.cumsum(p[full].astype(np.float64))
        for top_k in sorted({0, 1, 5, max(V - 1, 1), V}):
            for top_p in (1.0, 0.999999, 0.95, 0.5, 1e-4):
                keep = V if top_k <= 0 else min(top_k, V)
                if keep == V and top_p >= 1:
                    continue                      # nothing is cut: the kernel draws in index order
                if top_p < 1:
                    keep = min(keep, int(np.argmax(running >= top_p)) + 1 if running[-1] >= top_p else keep)
                order, merged = np.full(V, -1, np.int64), np.full(V, -1, np.int64)
                kept = _ranked_head(p, V if top_k <= 0 else min(top_k, V), top_p, order, merged)
                assert kept == keep, (top_k, top_p, kept, keep)
                np.testing.assert_array_equal(order[:kept], full[:keep])


def test_kernel_head_too_short_to_tell_is_said():
    """``_kept`` on a ranked head that ends before the top_p cut says so (the caller then sorts all)."""
    from tinyrnn.kernels.cpu.generate import _kept

    p = np.array([0.5, 0.25, 0.125, 0.125])                # sums exact in binary
    order = np.array([0, 1, 2, 3], np.int64)
    assert _kept(p, order, 2, 4, 0.875) == (2, False)      # 0.75 after the 2 ranked: the cut is further
    assert _kept(p, order, 3, 4, 0.875) == (3, True)        # 0.875 reached at the third
    assert _kept(p, order, 2, 2, 1.0) == (2, True)          # top_k alone: 2 ranked of 2 kept
    assert _kept(p, order, 1, 2, 1.0) == (1, False)


def test_kernel_sorts_everything_when_the_head_is_too_short(monkeypatch):
    """When the indices above the threshold cannot tell where the top_p cut lies (the vectorised
    mass that chose them differs from the running sum in its last bits), ``_ranked_head`` sorts all
    V. Forced here: a threshold that keeps only the likeliest index, under top_p 0.9 on a flat p
    (``_ranked_head`` run as Python, calling the compiled kernels, with the threshold replaced)."""
    from tinyrnn.kernels.cpu import generate as G

    p = np.random.default_rng(3).random(65)
    p /= p.sum()
    monkeypatch.setattr(G, "_head_threshold", lambda p, top_k, top_p: p.max())
    order, merged = np.full(65, -1, np.int64), np.full(65, -1, np.int64)
    kept = G._ranked_head.py_func(p, 65, 0.9, order, merged)
    full = np.argsort(-p, kind="stable")
    assert kept == int(np.argmax(np.cumsum(p[full]) >= 0.9)) + 1 > 1
    np.testing.assert_array_equal(order[:kept], full[:kept])
