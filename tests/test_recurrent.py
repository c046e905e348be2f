"""Recurrent cells and layers: gradcheck, fused == composed, PyTorch parity, long sequences."""
import numpy as np
import pytest

from tinyrnn import Tensor, gradcheck, manual_seed, nn
from tinyrnn import functional as F

KINDS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def randn(*shape, seed=0, requires_grad=True, dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=requires_grad)


def flat_outputs(out, state):
    """One tensor holding everything a layer returns, so gradcheck sees every output."""
    states = list(state) if isinstance(state, tuple) else [state]
    parts = [out.reshape(-1)] + [s.reshape(-1) for s in states]
    return F.concat(parts, axis=0)


# ---- cells ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "rnn_relu", "lstm", "gru"])
def test_fused_cell_gradcheck_and_equals_composed(kind):
    manual_seed(1)
    base = kind.split("_")[0]
    kwargs = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
    cell = CELLS[base](3, 4, **kwargs).double()
    x, h, c = randn(2, 3, seed=1), randn(2, 4, seed=2), randn(2, 4, seed=3)
    state = (h, c) if base == "lstm" else h

    def run(fused):
        cell.fused = fused
        out = cell(x, state)
        return F.concat([o.reshape(-1) for o in (out if isinstance(out, tuple) else (out,))], axis=0)

    np.testing.assert_allclose(run(True).data, run(False).data, rtol=1e-13, atol=1e-14)
    inputs = [x, h] + ([c] if base == "lstm" else []) + cell.parameters()
    cell.fused = True
    assert gradcheck(lambda *args: run(True), inputs)


# ---- sequence layers: gradcheck -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
def test_sequence_layer_gradcheck(kind, bidirectional, num_layers, with_state):
    manual_seed(2)
    layer = KINDS[kind](3, 2, num_layers=num_layers, bidirectional=bidirectional).double()
    T, B, D = 4, 2, 2 if bidirectional else 1
    x = randn(T, B, 3, seed=4)
    inputs = [x] + layer.parameters()
    state = None
    if with_state:
        h0 = randn(num_layers * D, B, 2, seed=5)
        if kind == "lstm":
            c0 = randn(num_layers * D, B, 2, seed=6)
            state = (h0, c0)
            inputs += [h0, c0]
        else:
            state = h0
            inputs += [h0]
    assert gradcheck(lambda *args: flat_outputs(*layer(x, state)), inputs)


# ---- fused == composed (float64 rounding) --------------------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_fused_layer_equals_composed_layer(kind, bidirectional):
    manual_seed(3)
    layer = KINDS[kind](5, 6, num_layers=2, bidirectional=bidirectional).double()
    D = 2 if bidirectional else 1
    x = randn(7, 3, 5, seed=7)
    h0 = randn(2 * D, 3, 6, seed=8)
    state = (h0, randn(2 * D, 3, 6, seed=9)) if kind == "lstm" else h0
    results = []
    for fused in (True, False):
        layer.fused = fused
        for t in [x, h0] + layer.parameters() + ([state[1]] if kind == "lstm" else []):
            t.grad = None
        y = flat_outputs(*layer(x, state))
        (y * Tensor(np.linspace(-1, 1, y.size))).sum().backward()
        grads = [x.grad, h0.grad] + [p.grad for p in layer.parameters()]
        results.append((y.data, grads))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-13)
    for g_fused, g_composed in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(g_fused, g_composed, rtol=1e-10, atol=1e-12)


# ---- layer semantics ----------------------------------------------------------------------------
def test_output_shapes_match_pytorch_conventions():
    lstm = nn.LSTM(4, 3, num_layers=2, bidirectional=True)
    out, (h_n, c_n) = lstm(Tensor(np.zeros((5, 2, 4), dtype=np.float32)))
    assert out.shape == (5, 2, 6) and h_n.shape == (4, 2, 3) and c_n.shape == (4, 2, 3)
    gru = nn.GRU(4, 3, batch_first=True)
    out, h_n = gru(Tensor(np.zeros((2, 5, 4), dtype=np.float32)))
    assert out.shape == (2, 5, 3) and h_n.shape == (1, 2, 3)
    names = [n for n, _ in lstm.named_parameters()]
    assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert "weight_hh_l1_reverse" in names


def test_backward_direction_reads_the_sequence_reversed():
    """Position t of the backward half equals a forward run over the reversed input, re-aligned."""
    manual_seed(4)
    bi = nn.GRU(3, 4, bidirectional=True).double()
    uni = nn.GRU(3, 4).double()
    uni.load_state_dict({k.replace("_reverse", ""): v for k, v in bi.state_dict().items() if k.endswith("_reverse")})
    x = randn(6, 2, 3, seed=10, requires_grad=False)
    out, h_n = bi(x)
    out_rev, h_rev = uni(Tensor(x.data[::-1].copy()))
    np.testing.assert_allclose(out.data[:, :, 4:], out_rev.data[::-1], rtol=1e-12)
    np.testing.assert_allclose(h_n.data[1], h_rev.data[0], rtol=1e-12)
    # the final backward state sits at time 0, the final forward state at time T-1
    np.testing.assert_allclose(h_n.data[1], out.data[0, :, 4:])
    np.testing.assert_allclose(h_n.data[0], out.data[-1, :, :4])


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_wrapper_merge_modes(merge_mode):
    manual_seed(5)
    wrapper = nn.Bidirectional(nn.LSTM(3, 4, dtype=np.float64), merge_mode=merge_mode)
    x = randn(5, 2, 3, seed=11)
    merged, (state_f, state_b) = wrapper(x)
    ref = nn.LSTM(3, 4, bidirectional=True, dtype=np.float64)
    ref.load_state_dict({**wrapper.forward_layer.state_dict(),
                         **{k + "_reverse": v for k, v in wrapper.backward_layer.state_dict().items()}})
    out, _ = ref(x)
    f, b = out.data[..., :4], out.data[..., 4:]
    expected = {"concat": out.data, "sum": f + b, "mul": f * b, "ave": (f + b) / 2}
    if merge_mode is None:
        np.testing.assert_allclose(merged[0].data, f, rtol=1e-12)
        np.testing.assert_allclose(merged[1].data, b, rtol=1e-12)
    else:
        np.testing.assert_allclose(merged.data, expected[merge_mode], rtol=1e-12)
        assert gradcheck(lambda *a: wrapper(x)[0], [x] + wrapper.parameters()[:4])


def test_dropout_between_layers_only():
    manual_seed(6)
    layer = nn.GRU(3, 4, num_layers=2, dropout=0.5)
    x = randn(4, 2, 3, requires_grad=False, dtype=np.float32)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    np.testing.assert_array_equal(a.data, b.data)
    layer.train()
    c, _ = layer(x)
    assert not np.allclose(a.data, c.data)
    single = nn.GRU(3, 4, num_layers=1, dropout=0.5)  # nothing to drop between: train == eval
    np.testing.assert_array_equal(single(x)[0].data, single.eval()(x)[0].data)


def test_truncated_bptt_with_detached_states_continues_the_sequence():
    manual_seed(7)
    lstm = nn.LSTM(3, 5, num_layers=2).double()
    x = randn(10, 2, 3, seed=12, requires_grad=False)
    full, _ = lstm(x)
    first, (h, c) = lstm(x[:6])
    second, _ = lstm(x[6:], (h.detach(), c.detach()))
    np.testing.assert_allclose(np.concatenate([first.data, second.data]), full.data, rtol=1e-12)
    loss = second.sum()
    loss.backward()
    assert lstm.weight_ih_l0.grad is not None


def test_forget_gate_bias_option():
    lstm = nn.LSTM(3, 4, forget_bias=1.0)
    np.testing.assert_array_equal(lstm.bias_ih_l0.data[4:8], 1.0)
    np.testing.assert_array_equal(lstm.bias_hh_l0.data[4:8], 0.0)


def test_initialisation_range_follows_pytorch():
    gru = nn.GRU(10, 16)
    bound = 1 / np.sqrt(16)
    for p in gru.parameters():
        assert np.abs(p.data).max() <= bound
        assert p.dtype == np.float32


def test_long_sequence_2000_steps():
    manual_seed(8)
    lstm = nn.LSTM(4, 8)
    x = randn(2000, 2, 4, seed=13, dtype=np.float32)
    out, (h, c) = lstm(x)
    (out.sum() + c.sum()).backward()
    assert np.all(np.isfinite(lstm.weight_hh_l0.grad)) and x.grad.shape == x.shape
    # the composed reference builds ~30k tape nodes: still no recursion error
    lstm.fused = False
    out2, _ = lstm(Tensor(x.data[:2000]))
    out2.sum().backward()
    np.testing.assert_allclose(out2.data, out.data, rtol=1e-4, atol=1e-5)


# ---- PyTorch parity (optional) -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_matches_pytorch(kind, num_layers, bidirectional):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    T, B, I, H = 7, 3, 5, 6
    tl = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, num_layers=num_layers, bidirectional=bidirectional)
    ours = KINDS[kind](I, H, num_layers=num_layers, bidirectional=bidirectional)
    ours.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    D = 2 if bidirectional else 1
    x_np = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    h0_np = np.random.default_rng(1).standard_normal((num_layers * D, B, H)).astype(np.float32)
    c0_np = np.random.default_rng(2).standard_normal((num_layers * D, B, H)).astype(np.float32)
    w_out = np.random.default_rng(3).standard_normal((T, B, D * H)).astype(np.float32)

    xt = torch.tensor(x_np, requires_grad=True)
    h0t = torch.tensor(h0_np, requires_grad=True)
    c0t = torch.tensor(c0_np, requires_grad=True)
    x, h0, c0 = Tensor(x_np, requires_grad=True), Tensor(h0_np, requires_grad=True), Tensor(c0_np, requires_grad=True)
    if kind == "lstm":
        out_t, (hn_t, cn_t) = tl(xt, (h0t, c0t))
        out, (hn, cn) = ours(x, (h0, c0))
        finals = [(hn, hn_t), (cn, cn_t)]
        loss_t = (out_t * torch.tensor(w_out)).sum() + hn_t.sum() * 0.5 + (cn_t ** 2).sum()
        loss = (out * w_out).sum() + hn.sum() * 0.5 + (cn * cn).sum()
    else:
        out_t, hn_t = tl(xt, h0t)
        out, hn = ours(x, h0)
        finals = [(hn, hn_t)]
        loss_t = (out_t * torch.tensor(w_out)).sum() + hn_t.sum() * 0.5
        loss = (out * w_out).sum() + hn.sum() * 0.5

    def close(a, b):
        b = b.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))

    close(out.data, out_t)
    for a, b in finals:
        close(a.data, b)
    loss_t.backward()
    loss.backward()
    close(x.grad, xt.grad)
    close(h0.grad, h0t.grad)
    if kind == "lstm":
        close(c0.grad, c0t.grad)
    torch_params = dict(tl.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, torch_params[name].grad)


def test_weights_round_trip_to_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.GRU(4, 5, num_layers=2, bidirectional=True)
    tl = torch.nn.GRU(4, 5, num_layers=2, bidirectional=True)
    tl.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    out_t, _ = tl(torch.from_numpy(x))
    out, _ = ours(Tensor(x))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-4, atol=1e-5)


# ---- embedding -> layer: the projected-table path ----------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_layer_reading_an_embedding_projects_the_table(kind, bidirectional):
    """x = E[idx] with V < T*B takes the table path; it must equal the dense path, values and gradients."""
    manual_seed(9)
    emb = nn.Embedding(5, 3).double()
    layer = KINDS[kind](3, 4, num_layers=2, bidirectional=bidirectional).double()
    idx = np.random.default_rng(0).integers(0, 5, size=(6, 3))        # T*B = 18 > V = 5
    results = []
    for table_path in (True, False):
        for p in emb.parameters() + layer.parameters():
            p.grad = None
        x = emb(idx)
        assert (x._lookup is not None)
        if not table_path:
            x = x * 1.0  # a plain tensor: the dense path
        y = flat_outputs(*layer(x))
        (y * Tensor(np.linspace(-1, 1, y.size))).sum().backward()
        results.append((y.data, [p.grad.copy() for p in emb.parameters() + layer.parameters()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-13)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda *args: flat_outputs(*layer(emb(idx))), emb.parameters() + layer.parameters()[:4])
