"""bias=False layers, cells and generation; load_state_dict(strict=False); the corpus cache after
the file is edited."""
import os

import numpy as np
import pytest

from tinyrnn import Tensor, manual_seed, nn
from tinyrnn.data import load_corpus

LAYERS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bias_false_layer_matches_torch(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tl = getattr(torch.nn, LAYERS[kind])(4, 5, num_layers=2, bias=False, bidirectional=True).double()
    ours = getattr(nn, LAYERS[kind])(4, 5, num_layers=2, bias=False, bidirectional=True).double()
    assert not any("bias" in name for name, _ in ours.named_parameters()) and len(ours.parameters()) == 8
    ours.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((6, 3, 4))
    xt = torch.tensor(x, requires_grad=True)
    xo = Tensor(x, requires_grad=True)
    out_t, _ = tl(xt)
    out, _ = ours(xo)
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    w = np.random.default_rng(2).standard_normal(out.shape)
    (out_t * torch.tensor(w)).sum().backward()
    (out * Tensor(w)).sum().backward()
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    torch_params = dict(tl.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_params[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bias_false_cell_matches_torch(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    name = LAYERS[kind] + "Cell"
    tc = getattr(torch.nn, name)(3, 4, bias=False).double()
    ours = getattr(nn, name)(3, 4, bias=False).double()
    assert len(ours.parameters()) == 2
    ours.load_state_dict({k: v.detach().numpy() for k, v in tc.state_dict().items()})
    rng = np.random.default_rng(3)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    for fused in (True, False):
        ours.fused = fused
        if kind == "lstm":
            h1, c1 = ours(Tensor(x), (Tensor(h), Tensor(c)))
            h1t, c1t = tc(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))
            np.testing.assert_allclose(c1.data, c1t.detach().numpy(), rtol=1e-12, atol=1e-12)
        else:
            h1, h1t = ours(Tensor(x), Tensor(h)), tc(torch.tensor(x), torch.tensor(h))
        np.testing.assert_allclose(h1.data, h1t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_generation_without_biases_is_the_greedy_decode(kind):
    """A CharRNN whose stack has no biases samples (argmax) what a plain forward pass predicts."""
    from tinyrnn.generate import sample_indices
    from tinyrnn.models import CharRNN

    manual_seed(4)
    model = CharRNN(7, kind, hidden=6, layers=2, embed=4).double()
    model.rnn = getattr(nn, LAYERS[kind])(4, 6, num_layers=2, bias=False).double()
    model.eval()
    prime = np.array([1, 5, 2], dtype=np.int64)
    got = np.concatenate(list(sample_indices(model, prime, 12, temperature=0.0)))
    seq, want = list(prime), []
    for _ in range(12):                       # re-read the whole text each time: no state carried
        logits, _ = model(np.array(seq, dtype=np.int64)[:, None])
        want.append(int(np.argmax(logits.data[-1, 0])))
        seq.append(want[-1])
    assert got.tolist() == want


def test_load_state_dict_strict_false():
    lin = nn.Linear(3, 2)
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    bias_before = lin.bias.data.copy()
    with pytest.raises(KeyError):
        lin.load_state_dict({"weight": w})                              # strict: bias is missing
    with pytest.raises(KeyError):
        lin.load_state_dict({"weight": w, "bias": bias_before, "extra": w})
    lin.load_state_dict({"weight": w, "extra": np.zeros(4)}, strict=False)
    np.testing.assert_array_equal(lin.weight.data, w)                    # what is there is loaded
    np.testing.assert_array_equal(lin.bias.data, bias_before)            # what is not is left alone
    with pytest.raises(ValueError):
        lin.load_state_dict({"weight": np.zeros((3, 3))}, strict=False)   # shapes are still checked


def test_corpus_cache_is_rebuilt_after_the_file_is_edited(tmp_path):
    path, cache = tmp_path / "big.txt", tmp_path / "cache"
    path.write_text("abcabc" * 50, encoding="utf-8")
    first = load_corpus(str(path), cache_dir=str(cache), mmap_min_bytes=16)
    assert isinstance(first.ids, np.memmap) and first.text() == "abcabc" * 50
    # same size, other characters, a later modification time
    st = os.stat(path)
    path.write_text("xyzxyz" * 50, encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = load_corpus(str(path), cache_dir=str(cache), mmap_min_bytes=16)
    assert second.text() == "xyzxyz" * 50 and list(second.vocab.chars) == ["x", "y", "z"]
    # longer
    path.write_text("hello world\n" * 40, encoding="utf-8")
    third = load_corpus(str(path), cache_dir=str(cache), mmap_min_bytes=16)
    assert third.text() == "hello world\n" * 40
    assert load_corpus(str(path), cache_dir=str(cache), mmap_min_bytes=16).text() == third.text()
