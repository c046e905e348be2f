"""The layer-normalised GRU (``nn.GRU(layer_norm=True)``, ``GRUCell(layer_norm=True)``,
``ops.layer_norm_gru_sequence``): its kernels against the numpy reference, the fused layer against
the composed one, gradcheck in float64, and PyTorch's layer-normalised GRU (the one
``tinyrnn.bench.candidates`` trains) with copied weights."""
import numpy as np
import pytest

from tinyrnn import Tensor, gradcheck, manual_seed, nn
from tinyrnn import functional as F
from tinyrnn.kernels import cpu
from tinyrnn.kernels import reference as ref


def randn(*shape, seed=0, requires_grad=True, dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype), requires_grad=requires_grad)


def flat_outputs(out, state):
    return F.concat([out.reshape(-1), state.reshape(-1)], axis=0)


def shaken(layer, seed=7):
    """The layer with gains and shifts away from their initial 1 and 0, so that the tests see them."""
    rng = np.random.default_rng(seed)
    for name, p in layer.named_parameters():
        if "norm_" in name:
            p.data = (p.data + 0.3 * rng.standard_normal(p.shape)).astype(p.dtype)
    return layer


# ---- kernels: the CPU's against the reference ---------------------------------------------------
def run_kernels(K, dtype, T, B, H, batch_sizes):
    rng = np.random.default_rng(1)
    xproj = rng.standard_normal((int(batch_sizes.sum()), 3 * H)).astype(dtype)
    w_hh = (rng.standard_normal((3 * H, H)) * 0.3).astype(dtype)
    gain, shift = (1 + 0.3 * rng.standard_normal(3 * H)).astype(dtype), (0.3 * rng.standard_normal(3 * H)).astype(dtype)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(dtype)
    nan = lambda *shape: np.full(shape, np.nan, dtype)       # noqa: E731  (a number left unwritten fails)
    hs, acts, xhat, rstd = nan(T + 1, B, H), nan(T, B, 3 * H), nan(T, B, 3 * H), nan(T, B)
    K.layer_norm_gru_sequence_forward(xproj, w_hh, gain, shift, 1e-5, h0, batch_sizes, hs, acts, xhat, rstd)
    dhs, dh_n = rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    dgi, dgh, draw, dh0 = nan(T, B, 3 * H), nan(T, B, 3 * H), nan(T, B, 3 * H), nan(B, H)
    K.layer_norm_gru_sequence_backward(w_hh, gain, shift, hs, acts, xhat, rstd, dhs, dh_n, batch_sizes,
                                       dgi, dgh, draw, dh0)
    return dict(hs=hs, acts=acts, xhat=xhat, rstd=rstd, dgi=dgi, dgh=dgh, draw=draw, dh0=dh0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T, B, H, sizes", [
    (5, 3, 4, None),                        # fewer rows than MR, H under one SIMD vector
    (4, 13, 70, None),                      # a row block a thread, H = 4 vectors + 6 units
    (6, 9, 33, [9, 9, 7, 4, 4, 1]),         # padding: rows drop out step by step
    (3, 1, 130, None),                      # one row, three chunks
])
def test_cpu_kernels_match_the_reference(dtype, T, B, H, sizes):
    batch_sizes = np.full(T, B, np.int64) if sizes is None else np.array(sizes, np.int64)
    got, want = run_kernels(cpu, dtype, T, B, H, batch_sizes), run_kernels(ref, dtype, T, B, H, batch_sizes)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], err_msg=name, **tol)
    steps = batch_sizes[:, None] > np.arange(B)                 # the active (step, row) pairs
    xhat = want["xhat"][steps]
    np.testing.assert_allclose(xhat.mean(axis=-1), 0, atol=1e-6)    # the recurrent side, normalised
    np.testing.assert_allclose(xhat.var(axis=-1), 1, rtol=2e-2)


# ---- the op and the layers ----------------------------------------------------------------------
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, [4, 3, 1]], ids=["full", "padded"])
def test_sequence_op_gradcheck(reverse, lengths):
    T, B, I, H = 4, 3, 3, 2
    x, h0 = randn(T, B, I, seed=1), randn(B, H, seed=2)
    w_ih, w_hh = randn(3 * H, I, seed=3), randn(3 * H, H, seed=4)
    norms = [randn(3 * H, seed=s) for s in (5, 6, 7, 8)]
    inputs = [x, h0, w_ih, w_hh] + norms

    def run(*args):
        lens = None if lengths is None else np.array(lengths)
        return flat_outputs(*F.layer_norm_gru_sequence(*args, reverse=reverse, lengths=lens))

    assert gradcheck(run, inputs)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["full", "padded"])
def test_fused_layer_equals_composed_layer(bidirectional, lengths):
    manual_seed(3)
    layer = shaken(nn.GRU(3, 4, num_layers=2, bidirectional=bidirectional, layer_norm=True).double())
    x, h0 = randn(5, 3, 3, seed=4), randn(2 * (2 if bidirectional else 1), 3, 4, seed=5)
    w = np.linspace(-1, 1, 5 * 3 * 4 * (2 if bidirectional else 1) + h0.size)
    results = []
    for fused in (True, False):
        layer.fused = fused
        for p in layer.parameters() + [x, h0]:
            p.grad = None
        y = flat_outputs(*layer(x, h0, lengths=lengths))
        (y * Tensor(w)).sum().backward()
        results.append([y.data] + [p.grad.copy() for p in layer.parameters() + [x, h0]])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_layer_gradcheck_with_an_embedding_table():
    """x = E[idx] (V < T*B) normalises the projected table's rows before the lookup."""
    manual_seed(4)
    emb = nn.Embedding(5, 3).double()
    layer = shaken(nn.GRU(3, 2, num_layers=2, layer_norm=True).double())
    idx = np.random.default_rng(0).integers(0, 5, size=(4, 3))
    assert emb(idx)._lookup is not None
    dense = flat_outputs(*layer(emb(idx) * 1.0))
    np.testing.assert_allclose(flat_outputs(*layer(emb(idx))).data, dense.data, rtol=1e-12, atol=1e-13)
    assert gradcheck(lambda *args: flat_outputs(*layer(emb(idx))), emb.parameters() + layer.parameters())


def test_cell_fused_equals_composed_and_gradcheck():
    manual_seed(5)
    cell = shaken(nn.GRUCell(3, 4, layer_norm=True).double())
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh", "norm_ih_weight", "norm_ih_bias",
                                                      "norm_hh_weight", "norm_hh_bias"]
    x, h = randn(2, 3, seed=1), randn(2, 4, seed=2)
    cell.fused = False
    composed = cell(x, h).data
    cell.fused = True
    np.testing.assert_allclose(cell(x, h).data, composed, rtol=1e-13, atol=1e-14)
    assert gradcheck(lambda *args: cell(x, h), [x, h] + cell.parameters())


def test_options_and_errors():
    layer = nn.GRU(3, 4, layer_norm=True)
    assert "bias_ih_l0" not in dict(layer.named_parameters())         # the shifts stand in for the biases
    np.testing.assert_array_equal(layer.norm_hh_weight_l0.data, 1)
    np.testing.assert_array_equal(layer.norm_hh_bias_l0.data, 0)
    for make in (lambda: nn.GRU(3, 4, bias=False, layer_norm=True), lambda: nn.GRUCell(3, 4, bias=False, layer_norm=True)):
        with pytest.raises(ValueError, match="leave bias=True"):
            make()
    wrapped = nn.Bidirectional(nn.GRU(3, 4, layer_norm=True))       # the copy is layer-normalised too
    assert "norm_ih_weight_l0" in dict(wrapped.backward_layer.named_parameters())


# ---- PyTorch -------------------------------------------------------------------------------------
def test_matches_pytorch_layer_normalised_gru():
    torch = pytest.importorskip("torch")
    from tinyrnn.bench.candidates import layer_norm_gru

    torch.manual_seed(0)
    T, B, I, H, L = 7, 3, 5, 6, 2
    theirs = layer_norm_gru(I, H, L)
    with torch.no_grad():
        for p in theirs.parameters():
            if p.dim() == 1:                                        # gains and shifts away from 1 and 0
                p.add_(0.3 * torch.randn_like(p))
    ours = nn.GRU(I, H, num_layers=L, layer_norm=True)
    names = {"w_ih": "weight_ih", "w_hh": "weight_hh", "norm_x.weight": "norm_ih_weight",
             "norm_x.bias": "norm_ih_bias", "norm_h.weight": "norm_hh_weight", "norm_h.bias": "norm_hh_bias"}
    state = {}
    for key, value in theirs.state_dict().items():                  # layers.{k}.{name}
        _, k, name = key.split(".", 2)
        state[f"{names[name]}_l{k}"] = value.numpy()
    ours.load_state_dict(state)
    x_np = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    h0_np = np.random.default_rng(1).standard_normal((L, B, H)).astype(np.float32)
    w_out = np.random.default_rng(2).standard_normal((T, B, H)).astype(np.float32)
    xt, h0t = torch.tensor(x_np, requires_grad=True), torch.tensor(h0_np, requires_grad=True)
    x, h0 = Tensor(x_np, requires_grad=True), Tensor(h0_np, requires_grad=True)
    out_t, hn_t = theirs(xt, h0t)
    out, hn = ours(x, h0)
    ((out_t * torch.tensor(w_out)).sum() + hn_t.sum() * 0.5).backward()
    ((out * w_out).sum() + hn.sum() * 0.5).backward()

    def close(a, b):
        b = b.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))

    close(out.data, out_t)
    close(hn.data, hn_t)
    close(x.grad, xt.grad)
    close(h0.grad, h0t.grad)
    for key, p in theirs.named_parameters():
        _, k, name = key.split(".", 2)
        close(getattr(ours, f"{names[name]}_l{k}").grad, p.grad)
