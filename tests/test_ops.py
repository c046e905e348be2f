"""Every primitive op passes gradcheck in float64, including broadcasting and repeated indices."""
import zlib

import numpy as np
import pytest

from tinyrnn import Tensor, gradcheck
from tinyrnn import functional as F
from tinyrnn.gradcheck import GradcheckError

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """A fresh generator per test, seeded by the test's name: inputs do not depend on which tests ran."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def t(*shape, positive=False):
    data = rng.standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return Tensor(data, requires_grad=True)


BINARY = [F.add, F.sub, F.mul, F.div]
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((3, 4), ())]


@pytest.mark.parametrize("op", BINARY, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary_ops_with_broadcasting(op, shapes):
    a, b = t(*shapes[0]), t(*shapes[1], positive=(op is F.div))
    assert gradcheck(op, [a, b])


def test_operator_overloads_match_functions():
    a, b = t(3, 4), t(3, 4, positive=True)
    for expr, fn in [(a + b, F.add), (a - b, F.sub), (a * b, F.mul), (a / b, F.div)]:
        np.testing.assert_array_equal(expr.data, fn(a, b).data)
    np.testing.assert_array_equal((2 - a).data, 2 - a.data)
    np.testing.assert_array_equal((2 / b).data, 2 / b.data)
    np.testing.assert_array_equal((-a).data, -a.data)
    assert gradcheck(lambda x: 3.0 - x * 2 + 1 / (x * x + 1), [a])


@pytest.mark.parametrize("name", ["neg", "tanh", "sigmoid", "relu", "exp", "log"])
def test_unary_ops(name):
    x = t(4, 5, positive=(name == "log"))
    if name == "relu":  # keep away from the kink, where finite differences are meaningless
        x.data[np.abs(x.data) < 1e-3] = 0.5
    assert gradcheck(getattr(F, name), [x])


@pytest.mark.parametrize("p", [2, 3, 0.5, -1.5])
def test_pow_by_constant(p):
    assert gradcheck(lambda x: x ** p, [t(3, 4, positive=True)])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_sum_and_mean(axis, keepdims):
    x = t(2, 3, 4)
    assert gradcheck(lambda a: a.sum(axis=axis, keepdims=keepdims), [x])
    assert gradcheck(lambda a: a.mean(axis=axis, keepdims=keepdims), [x])
    np.testing.assert_allclose(x.mean(axis=axis, keepdims=keepdims).data, x.data.mean(axis=axis, keepdims=keepdims))


def test_shape_ops():
    x = t(2, 3, 4)
    assert gradcheck(lambda a: a.reshape(6, 4), [x])
    assert gradcheck(lambda a: a.transpose(2, 0, 1), [x])
    assert gradcheck(lambda a: a.T, [t(3, 5)])


def test_concat_stack_split():
    a, b, c = t(2, 3), t(2, 5), t(2, 3)
    assert gradcheck(lambda x, y: F.concat([x, y], axis=1), [a, b])
    assert gradcheck(lambda x, y: F.stack([x, y], axis=1), [a, c])
    assert gradcheck(lambda x: F.split(x, [1, 3, 4], axis=1)[1] * 2 + F.split(x, [1, 3, 4], axis=1)[2].sum(), [t(2, 8)])
    pieces = F.split(t(6, 2), 3, axis=0)
    assert [p.shape for p in pieces] == [(2, 2)] * 3


def test_slicing_and_indexing():
    x = t(5, 4)
    assert gradcheck(lambda a: a[1:4, ::2], [x])
    assert gradcheck(lambda a: a[2], [x])
    assert gradcheck(lambda a: a[::-1], [x])
    # repeated integer indices: each occurrence adds its gradient
    idx = np.array([0, 2, 2, 4, 0, 0])
    assert gradcheck(lambda a: a[idx], [x])
    y = t(5, 4)
    y[idx].sum().backward()
    np.testing.assert_allclose(y.grad[:, 0], [3, 0, 2, 0, 1])


@pytest.mark.parametrize("a_shape,b_shape", [((3, 4), (4, 5)), ((1, 1), (1, 1)), ((2, 3, 7), (7, 2)), ((5, 13), (13, 1))])
def test_matmul(a_shape, b_shape):
    a, b = t(*a_shape), t(*b_shape)
    np.testing.assert_allclose((a @ b).data, a.data @ b.data, rtol=1e-12)
    assert gradcheck(F.matmul, [a, b])


def test_matmul_shape_errors():
    with pytest.raises(ValueError, match="do not align"):
        t(3, 4) @ t(5, 2)


def test_linear_op():
    x, w, b = t(2, 3, 4), t(5, 4), t(5)
    np.testing.assert_allclose(F.linear(x, w, b).data, x.data @ w.data.T + b.data, rtol=1e-12)
    assert gradcheck(F.linear, [x, w, b])
    assert gradcheck(lambda x, w: F.linear(x, w), [x, w])


def test_layer_norm_op():
    x, w, b = t(2, 3, 5), t(5), t(5)
    x.data = x.data * 3 + 1
    centred = x.data - x.data.mean(axis=-1, keepdims=True)
    xhat = centred / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(F.layer_norm(x, w, b).data, xhat * w.data + b.data, rtol=1e-12)
    assert gradcheck(F.layer_norm, [x, w, b])
    assert gradcheck(lambda x: F.layer_norm(x), [x])
    assert gradcheck(lambda x, w: F.layer_norm(x, w, eps=0.1), [x, w])
    assert gradcheck(lambda x, b: F.layer_norm(x, bias=b), [x, b])


def test_layer_norm_errors_name_the_fix():
    x = t(3, 4)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        F.layer_norm(x, t(3))
    with pytest.raises(ValueError, match="at least 1 number"):
        F.layer_norm(t(3, 0))
    with pytest.raises(TypeError, match="mixed dtypes"):
        F.layer_norm(x, Tensor(np.ones(4, np.float32)))


def test_embedding_with_repeated_indices():
    w = t(6, 3)
    idx = np.array([[1, 1, 5], [0, 1, 5]])
    out = F.embedding(w, idx)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.data, w.data[idx])
    assert gradcheck(lambda w: F.embedding(w, idx), [w])
    w.grad = None
    F.embedding(w, idx).sum().backward()
    np.testing.assert_allclose(w.grad[:, 0], [1, 3, 0, 0, 0, 2])
    with pytest.raises(IndexError):
        F.embedding(w, np.array([6]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_permute(axis):
    x = t(4, 5, 3)
    order = np.random.default_rng(axis).permutation(x.shape[axis])
    np.testing.assert_array_equal(F.permute(x, order, axis).data, np.take(x.data, order, axis=axis))
    assert gradcheck(lambda a: F.permute(a, order, axis) * F.permute(a, order, axis), [x])
    for bad in (order[:-1], np.zeros_like(order)):          # too short; repeats an index
        with pytest.raises(ValueError, match="permutation"):
            F.permute(x, bad, axis)


def test_dropout_train_eval_and_seed():
    x = t(50, 40)
    y1 = F.dropout(x, 0.3, training=True, rng=np.random.default_rng(7))
    y2 = F.dropout(x, 0.3, training=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y1.data, y2.data)
    kept = y1.data != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y1.data[kept], x.data[kept] / 0.7)
    assert F.dropout(x, 0.3, training=False) is x
    assert gradcheck(lambda a: F.dropout(a, 0.3, True, np.random.default_rng(3)), [x])


@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax(axis):
    x = t(4, 7)
    out = F.log_softmax(x, axis=axis)
    np.testing.assert_allclose(np.exp(out.data).sum(axis=axis), 1.0, rtol=1e-12)
    assert gradcheck(lambda a: F.log_softmax(a, axis=axis), [x])


def test_cross_entropy_matches_log_softmax_and_ignores():
    logits = t(6, 5)
    targets = np.array([0, 4, 2, -100, 1, 4])
    loss = F.cross_entropy(logits, targets)
    logp = F.log_softmax(logits).data
    keep = targets != -100
    np.testing.assert_allclose(loss.item(), -logp[keep.nonzero()[0], targets[keep]].mean(), rtol=1e-12)
    assert gradcheck(lambda a: F.cross_entropy(a, targets), [logits])
    other = np.array([[0, 4, 2], [3, 1, 4]])  # (2, 3) tokens; ignore the 4s
    assert gradcheck(lambda a: F.cross_entropy(a.reshape(2, 3, 5), other, ignore_index=4), [logits])


def test_cross_entropy_is_stable_for_huge_logits():
    logits = Tensor(np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]]), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), 1e4, rtol=1e-9)
    loss.backward()
    assert np.all(np.isfinite(logits.grad))


def test_astype_round_trip_gradient():
    x = t(3)
    assert gradcheck(lambda a: a.astype(np.float32).astype(np.float64) * 2, [x], eps=1e-2, atol=1e-4, rtol=1e-4)


def test_gradcheck_catches_a_wrong_gradient():
    from tinyrnn.tensor import record

    def bad_square(x):
        return record(x.data ** 2, (x,), lambda g: (g * x.data,), "bad")  # should be 2x

    with pytest.raises(GradcheckError, match="gradcheck failed"):
        gradcheck(bad_square, [t(3)])


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(F.tanh, [Tensor(np.ones(3, dtype=np.float32), requires_grad=True)])
