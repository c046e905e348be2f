"""Forward values of every primitive op against a plain numpy expression (float64), so an op that
computes the wrong thing cannot hide behind a gradcheck of itself. Also: values of batch_first
layers, the 2,000-step backward against the composed path, the TBPTT gradient against PyTorch, and
gradchecks of layers that cover every parameter and h0 / c0."""
import numpy as np
import pytest

from tinyrnn import Tensor, gradcheck, manual_seed, nn
from tinyrnn import functional as F

EXACT = dict(rtol=1e-13, atol=1e-14)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def T(a, grad=False):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 3, 4), (3, 1)), ((1, 4), (3, 1)), ((3, 4), ())]


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_ops_broadcast_like_numpy(rng, shapes):
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    b_pos = np.abs(b) + 0.5
    for op, want in [(F.add, a + b), (F.sub, a - b), (F.mul, a * b)]:
        got = op(T(a), T(b)).data
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, **EXACT)
    np.testing.assert_allclose(F.div(T(a), T(b_pos)).data, a / b_pos, **EXACT)
    # the operators and Python scalars on either side
    np.testing.assert_allclose((2.5 - T(a)).data, 2.5 - a, **EXACT)
    np.testing.assert_allclose((2.0 / T(b_pos)).data, 2.0 / b_pos, **EXACT)
    np.testing.assert_allclose((T(a) * 3).data, 3 * a, **EXACT)


def test_unary_ops_like_numpy(rng):
    x = rng.standard_normal((4, 5)) * 3
    pos = np.abs(x) + 0.1
    cases = [(F.neg, x, -x), (F.tanh, x, np.tanh(x)), (F.sigmoid, x, 1 / (1 + np.exp(-x))),
             (F.relu, x, np.maximum(x, 0)), (F.exp, x, np.exp(x)), (F.log, pos, np.log(pos))]
    for op, inp, want in cases:
        np.testing.assert_allclose(op(T(inp)).data, want, rtol=1e-12, atol=1e-15, err_msg=op.__name__)
    # sigmoid far out on both sides: no overflow, no NaN
    big = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    np.testing.assert_allclose(F.sigmoid(T(big)).data, [0.0, 1 / (1 + np.exp(40)), 0.5, 1 / (1 + np.exp(-40)), 1.0],
                               rtol=1e-12, atol=1e-15)   # (the tanh form is exact to ~1e-17 absolute, not relative)
    for p in (2, 3, 0.5, -1.5):
        np.testing.assert_allclose(F.pow(T(pos), p).data, pos ** p, rtol=1e-12)
        np.testing.assert_allclose((T(pos) ** p).data, pos ** p, rtol=1e-12)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_reductions_like_numpy(rng, axis, keepdims):
    x = rng.standard_normal((2, 3, 4))
    for op, want in [(F.sum, x.sum(axis=axis, keepdims=keepdims)), (F.mean, x.mean(axis=axis, keepdims=keepdims))]:
        got = op(T(x), axis=axis, keepdims=keepdims).data
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, **EXACT)


def test_shape_ops_like_numpy(rng):
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(F.reshape(T(x), (4, 6)).data, x.reshape(4, 6))
    np.testing.assert_array_equal(F.reshape(T(x), (-1,)).data, x.reshape(-1))
    np.testing.assert_array_equal(F.transpose(T(x)).data, x.T)
    np.testing.assert_array_equal(F.transpose(T(x), (1, 2, 0)).data, np.transpose(x, (1, 2, 0)))
    for index in [1, -1, slice(None, None, -1), (slice(0, 2), 2), (Ellipsis, 1), (slice(None), slice(1, 3), 0),
                  np.array([1, 0, 1]), (np.array([1, 0]), np.array([2, 2])), (slice(None), np.array([0, 0, 2]))]:
        np.testing.assert_array_equal(F.getitem(T(x), index).data, x[index], err_msg=str(index))
        np.testing.assert_array_equal(T(x)[index].data, x[index], err_msg=str(index))
    y, z = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(F.concat([T(x), T(y)], axis=1).data, np.concatenate([x, y], axis=1))
    np.testing.assert_array_equal(F.concat([T(x), T(z)], axis=-1).data, np.concatenate([x, z], axis=-1))
    for axis in (0, 1, -1):
        np.testing.assert_array_equal(F.stack([T(x), T(z)], axis=axis).data, np.stack([x, z], axis=axis))
    for got, want in zip(F.split(T(y), [1, 3, 1], axis=1), np.split(y, [1, 4], axis=1)):
        np.testing.assert_array_equal(got.data, want)
    pieces = F.split(T(x), 2, axis=2)
    assert len(pieces) == 2
    for got, want in zip(pieces, np.split(x, 2, axis=2)):
        np.testing.assert_array_equal(got.data, want)


def test_the_gradient_of_indexing_puts_it_back_in_place(rng):
    """getitem's backward (``arrays.placed``): g where x[index] read, 0 elsewhere, repeats adding up,
    for the fast path (leading-axis rows: packed[:T], packed[T]) and every other index."""
    x = rng.standard_normal((5, 3, 4))
    for index in [slice(None, 3), 3, -1, -2, slice(2, None), slice(4, 1), slice(1, 4), (slice(1, 3), slice(None)),
                  (slice(0, 2), 2), slice(None, None, -1), (Ellipsis, 1), (slice(None), slice(1, 3), 0),
                  np.array([1, 0, 1]), (np.array([1, 0]), np.array([2, 2])), (slice(None), np.array([0, 0, 2]))]:
        t = T(x, grad=True)
        g = rng.standard_normal(x[index].shape)
        F.getitem(t, index).backward(g)
        want = np.zeros_like(x)
        np.add.at(want, index, g)
        np.testing.assert_array_equal(t.grad, want, err_msg=str(index))


def test_matmul_and_linear_like_numpy(rng):
    a3, a2, b = rng.standard_normal((2, 5, 7)), rng.standard_normal((5, 7)), rng.standard_normal((7, 3))
    np.testing.assert_allclose(F.matmul(T(a3), T(b)).data, a3 @ b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose((T(a2) @ T(b)).data, a2 @ b, rtol=1e-12, atol=1e-13)
    w, bias = rng.standard_normal((3, 7)), rng.standard_normal(3)
    np.testing.assert_allclose(F.linear(T(a3), T(w), T(bias)).data, a3 @ w.T + bias, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(F.linear(T(a2), T(w)).data, a2 @ w.T, rtol=1e-12, atol=1e-13)


def test_embedding_like_numpy(rng):
    w = rng.standard_normal((6, 4))
    idx = np.array([[5, 0, 5], [2, 2, 1]])
    np.testing.assert_array_equal(F.embedding(T(w), idx).data, w[idx])


def test_log_softmax_and_cross_entropy_like_numpy(rng):
    x = rng.standard_normal((5, 7)) * 4
    x[0] += 1000.0                                   # stability: a huge row
    shifted = x - x.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(F.log_softmax(T(x)).data, logp, rtol=1e-12, atol=1e-12)
    xt = np.transpose(x)                              # axis=0 is the same op on the transpose
    np.testing.assert_allclose(F.log_softmax(T(xt), axis=0).data, logp.T, rtol=1e-12, atol=1e-12)
    targets = np.array([3, -100, 0, 6, -100])
    keep = targets != -100
    want = -logp[keep, targets[keep]].mean()
    np.testing.assert_allclose(F.cross_entropy(T(x), targets).item(), want, rtol=1e-12)
    # a custom ignore_index: -100 is then an ordinary (invalid) target, so use only valid ones
    t2 = np.array([3, 1, 0, 6, 1])
    want2 = -np.mean([logp[i, t] for i, t in enumerate(t2) if t != 1])
    np.testing.assert_allclose(F.cross_entropy(T(x), t2, ignore_index=1).item(), want2, rtol=1e-12)
    # (..., V) logits with targets of shape (...)
    x3, t3 = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, size=(2, 3))
    s3 = x3 - x3.max(-1, keepdims=True)
    lp3 = s3 - np.log(np.exp(s3).sum(-1, keepdims=True))
    np.testing.assert_allclose(F.cross_entropy(T(x3), t3).item(),
                               -np.take_along_axis(lp3, t3[..., None], -1).mean(), rtol=1e-12)


def test_dropout_scales_what_it_keeps(rng):
    x = rng.standard_normal((200, 50)) + 3.0
    for p in (0.25, 0.5):
        y = F.dropout(T(x), p, training=True, rng=np.random.default_rng(7)).data
        mask = np.random.default_rng(7).random(x.shape, dtype=np.float32) >= np.float32(p)   # the same draw
        np.testing.assert_allclose(y[mask], x[mask] / (1 - p), rtol=1e-15)
        np.testing.assert_array_equal(y[~mask], 0.0)
        assert abs((~mask).mean() - p) < 0.02
    np.testing.assert_array_equal(F.dropout(T(x), 0.5, training=False).data, x)


# ---------------------------------------------------------------------------- layers, values

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_batch_first_values_are_the_time_major_run_transposed(kind):
    manual_seed(3)
    layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](4, 5, num_layers=2, bidirectional=True).double()
    bf = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](4, 5, num_layers=2, bidirectional=True,
                                                             batch_first=True).double()
    bf.load_state_dict(layer.state_dict())
    x = np.random.default_rng(0).standard_normal((6, 3, 4))      # (T, B, I)
    out_t, state_t = layer(T(x))
    out_b, state_b = bf(T(np.ascontiguousarray(x.transpose(1, 0, 2))))
    np.testing.assert_allclose(out_b.data, out_t.data.transpose(1, 0, 2), rtol=1e-13, atol=1e-14)
    for s_t, s_b in zip(state_t if kind == "lstm" else [state_t], state_b if kind == "lstm" else [state_b]):
        np.testing.assert_allclose(s_b.data, s_t.data, rtol=1e-13, atol=1e-14)   # states stay (L*D, B, H)


def test_long_sequence_2000_steps_backward_equals_composed():
    """The fused BPTT over 2,000 steps against the composed tape (float64: both exact to rounding)."""
    manual_seed(8)
    lstm = nn.LSTM(3, 5).double()
    x_np = np.random.default_rng(13).standard_normal((2000, 2, 3)) * 0.5
    w = np.random.default_rng(14).standard_normal((2000, 2, 5))
    grads = []
    for fused in (True, False):
        lstm.fused = fused
        for p in lstm.parameters():
            p.grad = None
        x = T(x_np, grad=True)
        out, (h, c) = lstm(x)
        ((out * T(w)).sum() + c.sum()).backward()
        grads.append([out.data.copy(), x.grad.copy()] + [p.grad.copy() for p in lstm.parameters()])
    for a, b in zip(*grads):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_truncated_bptt_gradient_matches_torch():
    """Gradient of a window run from a detached state = PyTorch's with the same detached state."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tl = torch.nn.LSTM(3, 5, num_layers=2).double()
    ours = nn.LSTM(3, 5, num_layers=2).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    x = np.random.default_rng(12).standard_normal((10, 2, 3))
    w = np.random.default_rng(15).standard_normal((4, 2, 5))
    _, (h, c) = ours(T(x[:6]))
    second, _ = ours(T(x[6:]), (h.detach(), c.detach()))
    (second * T(w)).sum().backward()
    with torch.no_grad():
        _, (ht, ct) = tl(torch.tensor(x[:6]))
    second_t, _ = tl(torch.tensor(x[6:]), (ht.detach(), ct.detach()))
    (second_t * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(second.data, second_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    torch_params = dict(tl.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_params[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_layer_gradcheck_every_parameter_and_initial_state(kind):
    manual_seed(2)
    layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](3, 2, num_layers=2, bidirectional=True).double()
    rng = np.random.default_rng(4)
    x = T(rng.standard_normal((3, 2, 3)), grad=True)
    h0 = T(rng.standard_normal((4, 2, 2)), grad=True)
    c0 = T(rng.standard_normal((4, 2, 2)), grad=True)
    state = (h0, c0) if kind == "lstm" else h0
    params = layer.parameters()
    assert len(params) == 16                          # 2 layers x 2 directions x (w_ih, w_hh, b_ih, b_hh)

    def flat(*_):
        out, st = layer(x, state)
        parts = [out.reshape(-1)] + [s.reshape(-1) for s in (st if kind == "lstm" else (st,))]
        return F.concat(parts, axis=0)

    assert gradcheck(flat, [x, h0] + ([c0] if kind == "lstm" else []) + params)


def test_bidirectional_wrapper_gradcheck_every_parameter():
    manual_seed(5)
    wrapper = nn.Bidirectional(nn.LSTM(3, 2, dtype=np.float64), merge_mode="sum")
    rng = np.random.default_rng(11)
    x = T(rng.standard_normal((4, 2, 3)), grad=True)
    assert len(wrapper.parameters()) == 8
    assert gradcheck(lambda *a: wrapper(x)[0], [x] + wrapper.parameters())
