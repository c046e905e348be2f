"""The multithreaded kernels at 1 thread and at 2+ threads, on shapes whose split is uneven.

Numba splits a ``prange`` over the threads it runs with; a kernel whose threads overlap, skip a
ragged last chunk, or race on a shared buffer can pass on one thread and fail on two. Each test
sets the thread count explicitly (conftest.py puts it back afterwards). Outputs start as NaN.
"""
import numba
import numpy as np
import pytest

from tinyrnn import Tensor, nn
from tinyrnn.kernels import cpu, reference as ref
from tinyrnn.kernels.cpu import sequence as cpu_sequence
from test_kernels_recurrent import CELL_OUTPUTS, GATES, SEQUENCE_OUTPUTS, make_sequence_inputs, randn, \
    run_cells, run_sequence

MAX_THREADS = numba.config.NUMBA_NUM_THREADS       # the most numba.set_num_threads accepts
THREADS = [1, pytest.param(2, marks=pytest.mark.skipif(MAX_THREADS < 2, reason="Numba started with 1 thread "
                                                      "(NUMBA_NUM_THREADS / one core): nothing to split"))]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture(params=THREADS, ids=lambda n: f"{n}thr")
def threads(request):
    numba.set_num_threads(request.param)
    assert numba.get_num_threads() == request.param
    return request.param


# (M, K, N): odd everywhere, ragged against the 6 x 64 and 4 x 64 tiles, the 4 x 4 dot tiles and the blocks
MATMUL_SHAPES = [(3, 5, 7), (13, 67, 9), (133, 20, 131), (70, 259, 65), (5, 3, 130)]


@pytest.mark.parametrize("variant", ["nn", "nt", "tn"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_threads(threads, variant, dtype):
    rng = np.random.default_rng(["nn", "nt", "tn"].index(variant))
    for M, K, N in MATMUL_SHAPES:
        a = rng.standard_normal((K, M) if variant == "tn" else (M, K)).astype(dtype)
        b = rng.standard_normal((N, K) if variant == "nt" else (K, N)).astype(dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = a64 @ b64 if variant == "nn" else a64 @ b64.T if variant == "nt" else a64.T @ b64
        tol = dict(rtol=1e-5, atol=1e-5 * np.sqrt(K)) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12 * K)
        out = np.full((M, N), np.nan, dtype)
        getattr(cpu, "matmul_" + variant)(a, b, out, False)
        np.testing.assert_allclose(out, want, **tol, err_msg=f"{variant} {(M, K, N)}")
        base = rng.standard_normal((M, N)).astype(dtype)
        out = base.copy()
        getattr(cpu, "matmul_" + variant)(a, b, out, True)
        np.testing.assert_allclose(out, base + want, **tol, err_msg=f"{variant} {(M, K, N)} accumulate")


# (T, B, H): batch rows not multiples of 4, hidden sizes not multiples of 64 (and one over 64)
SEQ_SIZES = [(3, 5, 37), (2, 7, 83), (2, 3, 130), (4, 9, 5)]


@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", False), ("rnn", True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sequence_kernels_threads(threads, kind, relu, dtype):
    for T, B, H in SEQ_SIZES:
        a = make_sequence_inputs(np.random.default_rng(T * 1000 + B * 10 + H), kind, T, B, H, dtype)
        got, want = run_sequence(cpu, kind, a, relu), run_sequence(ref, kind, a, relu)
        for name in SEQUENCE_OUTPUTS[kind]:
            assert not np.isnan(got[name]).any(), (name, T, B, H)
            np.testing.assert_allclose(got[name], want[name], **TOL[dtype], err_msg=f"{name} {(T, B, H)}")


class CutFor:
    """cpu's sequence kernels with their work cut for n_threads threads, whatever Numba runs with
    (``sequence._schedule``): so every way of cutting is tested on any machine."""

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def __getattr__(self, name):
        compiled = getattr(cpu_sequence, "_" + name)
        return lambda *args: compiled(*args, self.n_threads)


# (T, B, H, batch_sizes), each cut for 1, 2, 3, 8 and 16 threads: one block of rows a thread for
# the whole sequence when B >= 4 * threads (blocks of equal work, so ragged batch sizes give
# uneven rows), else a region a step over unit chunks, and over row blocks too when the chunks are
# fewer than the threads (B = 37, H = 21 at 16: blocks of 20 and 17 rows; B = 9, H = 130 at 3:
# three chunks, one block).
SPLIT_CASES = [(6, 37, 21, [37, 30, 21, 20, 19, 3]), (4, 64, 50, [64, 64, 40, 1]), (3, 33, 64, [33, 17, 16]),
               (5, 9, 130, [9, 9, 5, 2, 1])]


@pytest.mark.parametrize("cut_for", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", False)])
def test_sequence_kernels_every_cut(threads, kind, relu, cut_for):
    for T, B, H, sizes in SPLIT_CASES:
        a = make_sequence_inputs(np.random.default_rng(B * 10 + H), kind, T, B, H, np.float64)
        got, want = run_sequence(CutFor(cut_for), kind, a, relu, sizes), run_sequence(ref, kind, a, relu, sizes)
        for name in SEQUENCE_OUTPUTS[kind]:
            assert not np.isnan(got[name]).any(), (name, T, B, H)
            np.testing.assert_allclose(got[name], want[name], **TOL[np.float64], err_msg=f"{name} {(T, B, H)}")


@pytest.mark.parametrize("B,n_blocks", [(32, 2), (37, 2), (8, 8), (64, 3), (100, 16)])
@pytest.mark.parametrize("lengths", ["full", "ragged"])
def test_balanced_rows(B, n_blocks, lengths):
    """Row blocks of the one-region schedule: consecutive, all rows once, none empty, and of about
    equal work (a row's work: its length + 1), within one row of the ideal."""
    T = 20
    if lengths == "full":
        batch_sizes = np.full(T, B, np.int64)
    else:   # sorted lengths, longest first, as Steps gives them: 1 .. T steps
        row_length = np.sort(np.random.default_rng(B).integers(1, T + 1, B))[::-1]
        batch_sizes = np.array([(row_length > t).sum() for t in range(T)], np.int64)
    bounds = cpu_sequence._balanced_rows(batch_sizes, B, n_blocks)
    assert bounds[0] == 0 and bounds[-1] == B and len(bounds) == n_blocks + 1
    assert (np.diff(bounds) >= 1).all()
    work = np.array([(batch_sizes > b).sum() + 1 for b in range(B)])
    per_block = [work[bounds[k]:bounds[k + 1]].sum() for k in range(n_blocks)]
    assert max(per_block) <= work.sum() / n_blocks + work.max(), per_block
    if lengths == "full" and B % n_blocks == 0:
        assert (np.diff(bounds) == B // n_blocks).all()


@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", True)])
@pytest.mark.parametrize("B,H", [(5, 37), (7, 130), (3, 3)])
def test_cell_kernels_threads(threads, kind, relu, B, H):
    rng = np.random.default_rng(B * 100 + H)
    G = GATES[kind]
    arrays = {name: randn(rng, B, G * H, scale=2) for name in ("gates", "gi", "gh")}
    arrays |= {name: randn(rng, B, H) for name in ("c_prev", "h_prev", "dh", "dc")}
    arrays["pre"] = randn(rng, B, H, scale=2)
    got, want = run_cells(cpu, kind, arrays, relu), run_cells(ref, kind, arrays, relu)
    for i in CELL_OUTPUTS[kind]:
        assert not np.isnan(got[i]).any(), i
        np.testing.assert_allclose(got[i], want[i], **TOL[np.float64])


@pytest.mark.parametrize("N,M", [(1, 3), (300, 37), (257, 768)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bias_backward_same_bits_at_any_thread_count(N, M, dtype):
    """bias_backward sums fixed blocks of rows and then the blocks in order: the same bits on 1 thread
    as on every other count (training resumes bit for bit on another machine), and the sum itself."""
    rng = np.random.default_rng(N)
    dout = rng.standard_normal((N, M)).astype(dtype)
    start = rng.standard_normal(M).astype(dtype)
    results = []
    for n in range(1, MAX_THREADS + 1):
        numba.set_num_threads(n)
        db, acc = np.full(M, np.nan, dtype), start.copy()
        cpu.bias_backward(dout, db, False)
        cpu.bias_backward(dout, acc, True)
        results.append((db, acc))
    want = dout.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(results[0][0], want, **TOL[dtype])
    np.testing.assert_allclose(results[0][1], start + want, **TOL[dtype])
    for db, acc in results[1:]:
        np.testing.assert_array_equal(db, results[0][0])
        np.testing.assert_array_equal(acc, results[0][1])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_layer_forward_backward_same_at_1_and_2_threads(kind):
    """A whole bidirectional 2-layer layer (fused kernels, matmuls, bias sums): outputs and every
    gradient agree between 1 and 2 threads (float64: any race or lost chunk shows)."""
    if MAX_THREADS < 2:
        pytest.skip("Numba started with 1 thread: nothing to compare")
    rng = np.random.default_rng(0)
    layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](6, 37, num_layers=2, bidirectional=True).double()
    x_np, w_np = rng.standard_normal((5, 7, 6)), rng.standard_normal((5, 7, 74))
    results = []
    for n in (1, 2):
        numba.set_num_threads(n)
        for p in layer.parameters():
            p.grad = None
        x = Tensor(x_np, requires_grad=True)
        out, _ = layer(x)
        (out * Tensor(w_np)).sum().backward()
        results.append([out.data.copy(), x.grad.copy()] + [p.grad.copy() for p in layer.parameters()])
    for one, two in zip(*results):
        np.testing.assert_allclose(two, one, rtol=1e-12, atol=1e-12)


# These two run in this order (file order): the first leaves Numba on one thread, as
# `tinyrnn train --threads 1` in-process does; conftest.py must have put it back for the second.
def test_leaves_one_thread_behind():
    numba.set_num_threads(1)
    assert numba.get_num_threads() == 1


def test_thread_count_was_restored_after_the_previous_test():
    assert numba.get_num_threads() == MAX_THREADS
