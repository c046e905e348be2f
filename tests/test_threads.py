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


# Fewer unit chunks (64 units) than threads: the batch rows are cut into blocks too (sequence.py,
# _work_items); ragged batch sizes cross the block boundaries (B = 37: blocks of 20 and 17 rows).
ROW_SPLIT_CASES = [(6, 37, 21, [37, 30, 21, 20, 19, 3]), (4, 64, 50, [64, 64, 40, 1]), (3, 33, 64, [33, 17, 16])]


@pytest.mark.parametrize("kind,relu", [("lstm", False), ("gru", False), ("rnn", False)])
def test_sequence_kernels_split_rows(threads, kind, relu):
    for T, B, H, sizes in ROW_SPLIT_CASES:
        a = make_sequence_inputs(np.random.default_rng(B * 10 + H), kind, T, B, H, np.float64)
        got, want = run_sequence(cpu, kind, a, relu, sizes), run_sequence(ref, kind, a, relu, sizes)
        for name in SEQUENCE_OUTPUTS[kind]:
            assert not np.isnan(got[name]).any(), (name, T, B, H)
            np.testing.assert_allclose(got[name], want[name], **TOL[np.float64], err_msg=f"{name} {(T, B, H)}")


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
