"""The small kernels (loss, layer norm, embedding, elementwise and optimizer updates): Numba vs the numpy reference.

Each cpu kernel runs on the same inputs as its reference, in float32 and float64, on awkward
shapes. The references themselves are checked by finite differences (float64).
"""
import numpy as np
import pytest

from tinyrnn.kernels import cpu
from tinyrnn.kernels import reference as ref
from tinyrnn.kernels.cpu.activations import exp
from tinyrnn.kernels.jit import kernel

DTYPES = [np.float32, np.float64]
IGNORE = -100


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def targets_for(rng, N, V, n_ignored=0):
    t = rng.integers(0, V, size=N).astype(np.int64)
    if n_ignored:
        t[rng.choice(N, size=n_ignored, replace=False)] = IGNORE
    return t


# ---- softmax cross-entropy and log-softmax ------------------------------------------------------

def run_xent(K, logits, targets, scale):
    N, V = logits.shape
    probs = np.full((N, V), np.nan, dtype=logits.dtype)
    losses = np.full(N, np.nan, dtype=logits.dtype)
    K.softmax_xent_forward(logits, targets, IGNORE, probs, losses)
    dlogits = np.full((N, V), np.nan, dtype=logits.dtype)
    K.softmax_xent_backward(probs, targets, IGNORE, scale, dlogits)
    return probs, losses, dlogits


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V,n_ignored", [(1, 1, 0), (7, 13, 2), (31, 97, 5), (3, 2, 3)])
def test_softmax_xent_matches_reference(dtype, N, V, n_ignored):
    rng = np.random.default_rng(N * 1000 + V)
    logits = rand(rng, (N, V), dtype, scale=4.0)
    targets = targets_for(rng, N, V, n_ignored)
    scale = 1.0 / max(1, N - n_ignored)
    got = run_xent(cpu, logits, targets, scale)
    want = run_xent(ref, logits, targets, scale)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol(dtype))
    probs, losses, dlogits = got
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    ignored = targets == IGNORE
    assert np.all(losses[ignored] == 0) and np.all(dlogits[ignored] == 0)
    assert np.all(losses[~ignored] >= 0)


def test_softmax_xent_non_contiguous_logits():
    rng = np.random.default_rng(1)
    big = rng.standard_normal((11, 40))
    logits = big[:, 3:40:3]  # (11, 13), strided rows and columns
    assert not logits.flags.c_contiguous
    targets = targets_for(rng, 11, 13, 1)
    got = run_xent(cpu, logits, targets, 0.1)
    want = run_xent(ref, np.ascontiguousarray(logits), targets, 0.1)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [cpu, ref], ids=["cpu", "reference"])
def test_softmax_xent_extreme_logits_stay_finite(K, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    targets = np.array([1, 2, 0], dtype=np.int64)
    probs, losses, dlogits = run_xent(K, logits, targets, 1.0)
    assert np.all(np.isfinite(probs)) and np.all(np.isfinite(losses)) and np.all(np.isfinite(dlogits))
    # row 0: log(1 + e^-1e4 + e^-2e4) - (-1e4 - 1e4) = 2e4; row 1: log 3; row 2: log 2
    np.testing.assert_allclose(losses, [2e4, np.log(3.0), np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(dlogits[0], [1.0, -1.0, 0.0], atol=1e-7)

    out = np.empty_like(logits)
    K.log_softmax_forward(logits, out)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], [0.0, -2e4, -1e4], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", [(1, 1), (5, 3), (17, 67)])
def test_log_softmax_matches_reference(dtype, N, V):
    rng = np.random.default_rng(N + V)
    x = rand(rng, (N, V), dtype, scale=5.0)
    dout = rand(rng, (N, V), dtype)
    results = []
    for K in (cpu, ref):
        out = np.full_like(x, np.nan)
        dx = np.full_like(x, np.nan)
        K.log_softmax_forward(x, out)
        K.log_softmax_backward(out, dout, dx)
        results.append((out, dx))
    (out, dx), (out_ref, dx_ref) = results
    np.testing.assert_allclose(out, out_ref, **tol(dtype))
    np.testing.assert_allclose(dx, dx_ref, **tol(dtype))
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-5)


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of x (changed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def test_softmax_xent_reference_finite_differences():
    rng = np.random.default_rng(2)
    N, V = 6, 5
    logits = rng.standard_normal((N, V)) * 2
    targets = targets_for(rng, N, V, 2)
    scale = 0.37
    probs = np.empty_like(logits)
    losses = np.empty(N)

    def loss():
        ref.softmax_xent_forward(logits, targets, IGNORE, probs, losses)
        return scale * losses.sum()

    loss()
    dlogits = np.empty_like(logits)
    ref.softmax_xent_backward(probs, targets, IGNORE, scale, dlogits)
    np.testing.assert_allclose(dlogits, numerical_grad(loss, logits), rtol=1e-6, atol=1e-9)


def test_log_softmax_reference_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 7)) * 2
    w = rng.standard_normal((4, 7))
    out = np.empty_like(x)

    def loss():
        ref.log_softmax_forward(x, out)
        return np.sum(w * out)

    loss()
    dx = np.empty_like(x)
    ref.log_softmax_backward(out, w, dx)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-9)


# ---- layer normalisation -----------------------------------------------------------------------
AFFINE = {"gain and shift": (True, True), "none": (False, False), "gain only": (True, False)}


def run_layer_norm(K, x, weight, bias, dout):
    """Forward then backward of one kernel module; every output starts as NaN (a number left unwritten fails)."""
    N, D = x.shape
    out, mean, rstd = np.full_like(x, np.nan), np.full(N, np.nan, x.dtype), np.full(N, np.nan, x.dtype)
    K.layer_norm_forward(x, weight, bias, 1e-5, out, mean, rstd)
    dx, dw, db = np.full_like(x, np.nan), np.full(weight.size, np.nan, x.dtype), np.full(bias.size, np.nan, x.dtype)
    K.layer_norm_backward(x, weight, mean, rstd, dout, dx, dw, db)
    return out, mean, rstd, dx, dw, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,D", [(1, 1), (5, 3), (17, 130), (0, 4), (3, 200)])
@pytest.mark.parametrize("affine", list(AFFINE))
def test_layer_norm_matches_reference(dtype, N, D, affine):
    rng = np.random.default_rng(N * 1000 + D)
    x = rand(rng, (N, D), dtype, scale=3.0) + 2             # a mean far from 0: the centring matters
    gain, shift = AFFINE[affine]
    weight = rand(rng, (D,), dtype) if gain else np.empty(0, dtype)
    bias = rand(rng, (D,), dtype) if shift else np.empty(0, dtype)
    dout = rand(rng, (N, D), dtype)
    got, want = run_layer_norm(cpu, x, weight, bias, dout), run_layer_norm(ref, x, weight, bias, dout)
    for name, a, b in zip(("out", "mean", "rstd", "dx", "dweight", "dbias"), got, want):
        np.testing.assert_allclose(a, b, err_msg=name, **tol(dtype))
    if N and D > 1:
        out = got[0] if not gain and not shift else (got[0] - (bias if shift else 0)) / (weight if gain else 1)
        np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-5)
        np.testing.assert_allclose(out.var(axis=1), 1, rtol=2e-3)     # var / (var + eps), var ~ 9


def test_layer_norm_reference_finite_differences():
    rng = np.random.default_rng(4)
    N, D = 4, 6
    x, weight, bias = rng.standard_normal((N, D)) * 2 + 1, rng.standard_normal(D), rng.standard_normal(D)
    w = rng.standard_normal((N, D))
    out, mean, rstd = np.empty_like(x), np.empty(N), np.empty(N)

    def loss():
        ref.layer_norm_forward(x, weight, bias, 1e-5, out, mean, rstd)
        return np.sum(w * out)

    loss()
    dx, dweight, dbias = np.empty_like(x), np.empty(D), np.empty(D)
    ref.layer_norm_backward(x, weight, mean, rstd, w, dx, dweight, dbias)
    for name, analytic, wrt in (("dx", dx, x), ("dweight", dweight, weight), ("dbias", dbias, bias)):
        np.testing.assert_allclose(analytic, numerical_grad(loss, wrt), rtol=1e-6, atol=1e-9, err_msg=name)


# ---- embedding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V,E,N", [(1, 1, 1), (5, 1, 9), (11, 7, 23), (3, 37, 50)])
def test_embedding_matches_reference(dtype, V, E, N):
    rng = np.random.default_rng(V * E + N)
    weight = rand(rng, (V, E), dtype)
    idx = rng.integers(0, V, size=N).astype(np.int64)
    idx[: min(N, 4)] = idx[0]  # make sure some index repeats
    out = np.full((N, E), np.nan, dtype=dtype)
    cpu.embedding_forward(weight, idx, out)
    np.testing.assert_array_equal(out, weight[idx])

    dout = rand(rng, (N, E), dtype)
    start = rand(rng, (V, E), dtype)  # the backward accumulates into dweight
    dweight, dweight_ref = start.copy(), start.copy()
    cpu.embedding_backward(idx, dout, dweight)
    ref.embedding_backward(idx, dout, dweight_ref)
    np.testing.assert_allclose(dweight, dweight_ref, **tol(dtype))


def test_embedding_backward_repeated_indices_add_up():
    idx = np.array([2, 0, 2, 2, 1, 0], dtype=np.int64)
    dout = np.arange(6 * 3, dtype=np.float64).reshape(6, 3)
    for K in (cpu, ref):
        dweight = np.zeros((4, 3))
        K.embedding_backward(idx, dout, dweight)
        np.testing.assert_array_equal(dweight[2], dout[0] + dout[2] + dout[3])
        np.testing.assert_array_equal(dweight[0], dout[1] + dout[5])
        np.testing.assert_array_equal(dweight[1], dout[4])
        np.testing.assert_array_equal(dweight[3], 0)


# ---- bias --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,M", [(1, 1), (13, 1), (7, 67), (64, 3)])
def test_bias_kernels_match_reference(dtype, N, M):
    rng = np.random.default_rng(N * M)
    x = rand(rng, (N, M), dtype)
    bias = rand(rng, (M,), dtype)
    x_cpu, x_ref = x.copy(), x.copy()
    cpu.add_bias_forward(x_cpu, bias)
    ref.add_bias_forward(x_ref, bias)
    np.testing.assert_array_equal(x_cpu, x_ref)

    dout = rand(rng, (N, M), dtype)
    for accumulate in (False, True):
        start = rand(rng, (M,), dtype)
        db_cpu, db_ref = start.copy(), start.copy()
        cpu.bias_backward(dout, db_cpu, accumulate)
        ref.bias_backward(dout, db_ref, accumulate)
        np.testing.assert_allclose(db_cpu, db_ref, **tol(dtype))


def test_bias_kernels_non_contiguous():
    rng = np.random.default_rng(4)
    big = rng.standard_normal((9, 20))
    x = big[:, 2:13:2]  # (9, 6) column-strided view, written in place
    bias = rng.standard_normal(6)
    want = x + bias
    cpu.add_bias_forward(x, bias)
    np.testing.assert_array_equal(big[:, 2:13:2], want)

    dout = rng.standard_normal((6, 9)).T  # (9, 6), Fortran order
    dbias = np.empty(6)
    cpu.bias_backward(dout, dbias, False)
    np.testing.assert_allclose(dbias, dout.sum(axis=0), rtol=1e-12)


# ---- norms and the optimizer updates -----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P", [0, 1, 4097, 10007])
def test_sum_of_squares_and_scale(dtype, P):
    rng = np.random.default_rng(P)
    x = rand(rng, (P,), dtype)
    got = cpu.sum_of_squares(x)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, ref.sum_of_squares(x), rtol=1e-12)
    y, y_ref = x.copy(), x.copy()
    cpu.scale_inplace(y, 0.3)
    ref.scale_inplace(y_ref, 0.3)
    np.testing.assert_allclose(y, y_ref, **tol(dtype))


# (kernel name, function of (P, dtype) making its state buffers, hyperparameters after the buffers)
def _zeros(n):
    return lambda P, dtype: [np.zeros(P if i < n else 0, dtype) for i in range(n)]


UPDATES = [
    ("sgd_update", lambda P, d: [np.zeros(0, d)], (0.1, 0.0, False, 0.0)),
    ("sgd_update", _zeros(1), (0.1, 0.9, False, 0.01)),
    ("sgd_update", _zeros(1), (0.1, 0.9, True, 0.0)),
    ("adam_update", _zeros(2), ("step", 1e-2, 0.9, 0.999, 1e-8, 0.0, False)),
    ("adam_update", _zeros(2), ("step", 1e-2, 0.8, 0.99, 1e-6, 0.1, False)),
    ("adam_update", _zeros(2), ("step", 1e-2, 0.9, 0.999, 1e-8, 0.1, True)),
    ("adagrad_update", _zeros(1), (0.1, 1e-10, 0.0)),
    ("adagrad_update", _zeros(1), (0.1, 1e-10, 0.05)),
    ("rmsprop_update", lambda P, d: [np.zeros(P, d), np.zeros(0, d), np.zeros(0, d)],
     (1e-2, 0.99, 1e-8, 0.0, 0.0, False)),
    ("rmsprop_update", lambda P, d: [np.zeros(P, d), np.zeros(P, d), np.zeros(P, d)],
     (1e-2, 0.9, 1e-8, 0.01, 0.9, True)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,make_state,hyper", UPDATES)
def test_optimizer_update_kernels_match_reference(dtype, name, make_state, hyper):
    rng = np.random.default_rng(7)
    for P in (1, 257):
        param = rand(rng, (P,), dtype)
        state = make_state(P, dtype)
        param_ref, state_ref = param.copy(), [s.copy() for s in state]
        for step in range(1, 5):
            grad = rand(rng, (P,), dtype)
            args = tuple(step if h == "step" else h for h in hyper)
            getattr(cpu, name)(param, grad, *state, *args)
            getattr(ref, name)(param_ref, grad, *state_ref, *args)
        np.testing.assert_allclose(param, param_ref, **tol(dtype))
        for s, s_ref in zip(state, state_ref):
            np.testing.assert_allclose(s, s_ref, **tol(dtype))
        assert np.all(np.isfinite(param))


@kernel
def exp_each(x, out):
    for i in range(x.size):
        out[i] = exp(x[i])


def test_exp_float32_is_exp_to_the_last_bit_or_so():
    """``activations.exp`` in float32 kernels (the softmax's): a vectorisable formula, within one
    float32 rounding of exp over the whole range, 0 below it, inf above it, NaN through; float64 is
    the library's exp."""
    x = np.concatenate([np.linspace(-120.0, 88.7, 400_001), [-np.inf, np.inf, np.nan, 0.0, -0.0, 88.8]])
    got = np.empty(x.size, np.float32)
    exp_each(x.astype(np.float32), got)
    exact = np.exp(x.astype(np.float32).astype(np.float64))
    normal = (exact > np.finfo(np.float32).tiny) & (exact < np.finfo(np.float32).max)
    assert normal.sum() > 300_000
    rel = np.abs(got[normal] - exact[normal]) / exact[normal]
    assert rel.max() <= 2.0 ** -24 * 1.01, rel.max()      # float32 rounding (half an ulp) at most
    small = (exact <= np.finfo(np.float32).tiny) & ~np.isnan(x)
    assert np.abs(got[small] - exact[small]).max() <= np.finfo(np.float32).smallest_subnormal
    assert got[x == -np.inf] == 0 and got[x == np.inf] == np.inf and got[x == 88.8] == np.inf
    assert np.isnan(got[np.isnan(x)]).all() and (got[x == 0] == 1).all()
    got64 = np.empty(x.size)
    exp_each(x, got64)
    np.testing.assert_allclose(got64, np.exp(x), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int8, np.uint16])
@pytest.mark.parametrize("shape", [(1,), (37,), (3, 5), (2, 3, 65)])
def test_aligned_arrays_start_on_a_cache_line(dtype, shape):
    """``aligned_empty`` (inside kernels) and ``aligned_copy`` (numpy): C-contiguous arrays of the
    asked shape and dtype whose first element is on a multiple of 64 bytes, whatever the allocator
    gave (many allocations, so both offsets of Numba's 32-byte alignment and numpy's 16 turn up)."""
    from tinyrnn.kernels.cpu.aligned import ALIGNMENT, aligned_copy, aligned_empty

    @kernel
    def fill(shape, like):
        a = aligned_empty(shape, like.dtype)
        a.ravel()[:] = np.arange(a.size)
        return a

    like = np.zeros(1, dtype)
    for _ in range(20):
        a = fill(shape, like)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.ctypes.data % ALIGNMENT == 0
        assert np.array_equal(a.ravel(), np.arange(a.size).astype(dtype))
        source = np.arange(np.prod(shape)).astype(dtype).reshape(shape)[..., ::-1]   # not contiguous
        b = aligned_copy(source)
        assert b.shape == shape and b.dtype == dtype and b.flags.c_contiguous
        assert b.ctypes.data % ALIGNMENT == 0 and np.array_equal(b, source)
