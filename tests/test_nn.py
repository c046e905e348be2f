"""Modules: parameter registration, state dicts, modes, and the feed-forward layers."""
import numpy as np
import pytest

from tinyrnn import Tensor, gradcheck, manual_seed, nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.hidden = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(8, 3, bias=False)

    def forward(self, idx):
        return self.out(self.drop(self.hidden(self.embed(idx)).tanh()))


def test_named_parameters_and_state_dict_round_trip():
    manual_seed(0)
    model = TwoLayer()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["embed.weight", "hidden.weight", "hidden.bias", "out.weight"]
    assert model.num_parameters() == 10 * 4 + 8 * 4 + 8 + 3 * 8
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    manual_seed(1)
    other = TwoLayer().load_state_dict(state)
    for (_, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({"embed.weight": state["embed.weight"]})
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({**state, "out.weight": np.zeros((2, 2))})


def test_train_eval_propagates():
    model = TwoLayer()
    model.eval()
    assert not any(m.training for m in model.modules())
    idx = np.array([1, 2, 3])
    np.testing.assert_array_equal(model(idx).data, model(idx).data)
    model.train()
    assert all(m.training for m in model.modules())


def test_linear_init_and_gradcheck():
    manual_seed(2)
    lin = nn.Linear(9, 4)
    assert np.abs(lin.weight.data).max() <= 1 / 3
    lin.double()
    x = Tensor(np.random.default_rng(0).standard_normal((5, 9)), requires_grad=True)
    assert gradcheck(lambda *a: lin(x), [x] + lin.parameters())


def test_layer_norm_module_gradcheck_and_options():
    norm = nn.LayerNorm(6)
    assert [n for n, _ in norm.named_parameters()] == ["weight", "bias"]       # PyTorch's names
    np.testing.assert_array_equal(norm.weight.data, 1)
    np.testing.assert_array_equal(norm.bias.data, 0)
    assert nn.LayerNorm(6, bias=False).bias is None and nn.LayerNorm((6,), elementwise_affine=False).weight is None
    norm.double()
    rng = np.random.default_rng(3)
    norm.weight.data, norm.bias.data = rng.standard_normal(6), rng.standard_normal(6)
    x = Tensor(rng.standard_normal((2, 4, 6)) * 2 + 1, requires_grad=True)
    assert gradcheck(lambda *a: norm(x), [x] + norm.parameters())
    for bad in (0, (2, 3)):
        with pytest.raises(ValueError, match="normalized_shape"):
            nn.LayerNorm(bad)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_module_matches_pytorch(affine):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.LayerNorm(37, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.normal_()
            ref.bias.normal_()
    norm = nn.LayerNorm(37, elementwise_affine=affine).load_state_dict(
        {k: v.detach().numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(5)
    x_np = (rng.standard_normal((3, 8, 37)) * 4 + 2).astype(np.float32)
    dy = rng.standard_normal((3, 8, 37)).astype(np.float32)
    x, xt = Tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    y, yt = norm(x), ref(xt)
    (y * Tensor(dy)).sum().backward()
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, p in norm.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(ref, name).grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_zero_grad():
    model = TwoLayer()
    model(np.array([1, 2])).sum().backward()
    assert model.hidden.weight.grad is not None
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.5, momentum=0.9)), ("SGD", dict(lr=0.5, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.05)), ("AdamW", dict(lr=0.05, weight_decay=1e-4)),
    ("Adagrad", dict(lr=0.5)), ("RMSprop", dict(lr=0.01)),
])
def test_tiny_mlp_trains_to_near_zero_loss_on_the_tape(name, kwargs):
    """XOR-like data (not linearly separable): Linear -> tanh -> Linear -> cross_entropy, all on the tape."""
    from tinyrnn import functional as F
    from tinyrnn import optim

    manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(64, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    model = nn.Module()
    model.l1, model.l2 = nn.Linear(2, 16), nn.Linear(16, 2)
    opt = getattr(optim, name)(model.parameters(), **kwargs)
    for _ in range(600):
        loss = F.cross_entropy(model.l2(model.l1(Tensor(x)).tanh()), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05, loss.item()
