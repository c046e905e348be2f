"""The SIMD vectors of the CPU kernels (tinyrnn.kernels.cpu.simd): every operation, lane by lane,
against the same code run on scalars, in float32 and float64, including the gate activations."""
import numpy as np
import pytest

from tinyrnn.kernels.cpu.activations import sigmoid, tanh
from tinyrnn.kernels.cpu.simd import LANES, vdot_pairs, vfma, vget, vizeros, vload, vset, vsplat, vstore, vsum, vzeros
from tinyrnn.kernels.jit import kernel

N_RESULTS = 13


@kernel
def on_vectors(a, b, c, out):
    x, y, z = vload(a, 0), vload(b, 0), vload(c, 0)
    results = (x + y, x - y, x * y, x / y, min(x, y), max(x, y), 2 * x - 1, -x, 1 - x / 3,
               tanh(x), sigmoid(x), vfma(x, y, z), vzeros(a) + vsplat(a[0]))
    for r in range(N_RESULTS):
        vstore(out, r * LANES, results[r])


@kernel
def on_scalars(a, b, c, out):
    for lane in range(LANES):
        x, y, z = a[lane], b[lane], c[lane]
        o = out[lane::LANES]               # o[r]: lane `lane` of result r
        o[0], o[1], o[2], o[3] = x + y, x - y, x * y, x / y
        o[4], o[5], o[6], o[7], o[8] = min(x, y), max(x, y), 2 * x - 1, -x, 1 - x / 3
        o[9], o[10], o[11], o[12] = tanh(x), sigmoid(x), x * y + z, a[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_operations_match_scalar_code(dtype):
    rng = np.random.default_rng(0)
    a = (3 * rng.standard_normal(LANES)).astype(dtype)
    b = (rng.standard_normal(LANES) + 4).astype(dtype)      # no zero divisors
    c = rng.standard_normal(LANES).astype(dtype)
    got, want = np.zeros(N_RESULTS * LANES, dtype), np.zeros(N_RESULTS * LANES, dtype)
    on_vectors(a, b, c, got)
    on_scalars(a, b, c, want)
    # float32: one rounding apart at most (a multiply-add may or may not be fused)
    tol = dict(rtol=4e-7, atol=4e-7) if dtype == np.float32 else dict(rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(got, want, **tol)
    # and the activations are the real ones (float64 exactly, float32 to the approximation's error)
    exact = np.tanh(a.astype(np.float64))
    err = 1e-15 if dtype == np.float64 else 4e-7
    np.testing.assert_allclose(got[9 * LANES:10 * LANES], exact, atol=err, rtol=0)
    np.testing.assert_allclose(got[10 * LANES:11 * LANES], 1 / (1 + np.exp(-a.astype(np.float64))),
                               atol=err, rtol=0)


@kernel
def lanes_roundtrip(a, out):
    v = vload(a, 0)
    for lane in range(LANES):
        v = vset(v, lane, vget(v, lane) * 2)
    vstore(out, 1, v)                     # at an offset: loads and stores need no alignment


def test_get_set_and_unaligned_store():
    a = np.arange(LANES, dtype=np.float32)
    out = np.full(LANES + 2, -1, np.float32)
    lanes_roundtrip(a, out)
    np.testing.assert_array_equal(out, np.concatenate([[-1], 2 * a, [-1]]))


@kernel
def integer_dot(q, i, x, j, chunks):
    """q[i:] . x[j:] over `chunks` vdot_pairs, and over the first one alone"""
    acc = vizeros()
    for n in range(chunks):
        acc = vdot_pairs(acc, q, i + 2 * LANES * n, x, j + 2 * LANES * n)
    first = vdot_pairs(vizeros(), q, i, x, j)
    return vsum(acc), vsum(first)


def test_integer_dot_products():
    """vdot_pairs + vsum: int8 times int16 summed exactly in int32, at any offsets, at the extremes."""
    rng = np.random.default_rng(3)
    q = rng.integers(-127, 128, 300).astype(np.int8)
    x = rng.integers(-32767, 32768, 300).astype(np.int16)
    for i, j, chunks in ((0, 0, 1), (5, 3, 4), (17, 40, 8)):
        n = 2 * LANES * chunks
        total, first = integer_dot(q, i, x, j, chunks)
        assert total == int(q[i:i + n].astype(np.int64) @ x[j:j + n].astype(np.int64))
        assert first == int(q[i:i + 2 * LANES].astype(np.int64) @ x[j:j + 2 * LANES].astype(np.int64))
    extreme_q, extreme_x = np.full(2 * LANES * 8, -127, np.int8), np.full(2 * LANES * 8, -32767, np.int16)
    assert integer_dot(extreme_q, 0, extreme_x, 0, 8)[0] == 127 * 32767 * 2 * LANES * 8   # 1.07e9: no wrap
