"""The tape: backward order, accumulation, no_grad, dtypes, deep graphs."""
import numpy as np
import pytest

import tinyrnn
from tinyrnn import Tensor, no_grad


def test_backward_simple_chain():
    x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = (x * 2).tanh().sum()
    y.backward()
    expected = 2 * (1 - np.tanh(2 * x.data) ** 2)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-6)


def test_default_dtype_is_float32_and_float64_is_kept():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor([1, 2]).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float64
    assert tinyrnn.tensor([1.0], dtype=np.float64).dtype == np.float64


def test_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 6.0])


def test_shared_subexpression_gets_both_paths():
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = x * x          # used twice below
    z = (y + y * x).sum()   # z = x^2 + x^3, dz/dx = 2x + 3x^2 = 33
    z.backward()
    np.testing.assert_allclose(x.grad, [33.0])


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = (x * 2).sum()
    assert not y.requires_grad
    assert y._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    assert tinyrnn.is_grad_enabled()


def test_mixing_dtypes_raises_instead_of_upcasting():
    a = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = Tensor(np.ones(3, dtype=np.float64), requires_grad=True)
    with pytest.raises(TypeError, match="mixed dtypes"):
        a + b
    with pytest.raises(TypeError, match="mixed dtypes"):
        a @ Tensor(np.ones((3, 2)))
    with pytest.raises(TypeError, match="mixed dtypes"):
        a * np.ones(3, dtype=np.float64)
    # Python scalars take the tensor's dtype
    assert (a * 2.5).dtype == np.float32


def test_deep_graph_10000_steps_no_recursion_error():
    x = Tensor(np.array([1.0]), requires_grad=True)
    h = x
    for _ in range(10_000):
        h = h * 1.0001 + 0.0
    h.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-8)


def test_backward_frees_graph_unless_retained():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data)
    assert y._backward is None


def test_backward_needs_scalar_or_grad():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    y.backward(np.ones((2, 2)))
    np.testing.assert_allclose(x.grad, 2 * np.ones((2, 2)))


def test_detach_cuts_the_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad
    z = (y * x).sum()
    z.backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


def test_int_tensors_cannot_require_grad():
    with pytest.raises(TypeError):
        Tensor(np.array([1, 2]), requires_grad=True)


def test_no_two_tensors_share_a_gradient_buffer():
    """backward() takes an op's fresh gradient array as .grad without a copy (``_accumulate``):
    never when two parents get the same array (LSTM's b_ih and b_hh, x + x), never the caller's
    gradient, and accumulation over a second backward stays right."""
    rng = np.random.default_rng(0)
    lstm = tinyrnn.nn.LSTM(3, 4, dtype=np.float64)
    x = Tensor(rng.standard_normal((5, 2, 3)), requires_grad=True)
    for _ in range(2):          # the second pass accumulates into the buffers the first one took
        out, _ = lstm(x)
        out.sum().backward()
    b_ih, b_hh = lstm.bias_ih_l0.grad, lstm.bias_hh_l0.grad
    assert not np.shares_memory(b_ih, b_hh)
    first = b_ih.copy()
    b_hh[...] += 1
    np.testing.assert_array_equal(b_ih, first)

    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    y = a + b                   # add's backward hands the same array to both parents
    seed = np.full(3, 2.0)
    y.backward(seed)
    assert not np.shares_memory(a.grad, b.grad) and not np.shares_memory(a.grad, seed)
    a.grad += 1
    np.testing.assert_array_equal(b.grad, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(seed, [2.0, 2.0, 2.0])

    g = Tensor(np.ones(2), requires_grad=True)
    z = (g * 3).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_array_equal(g.grad, [6.0, 6.0])
