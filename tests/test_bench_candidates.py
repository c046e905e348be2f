"""The model-candidates benchmark (``tinyrnn.bench.candidates``): the layer-normalised GRU computes its
docstring's equations, the tied head shares the embedding's weight, and a run trains and scores
every variant."""
import json
import math

import numpy as np
import pytest

from tinyrnn.bench import candidates

torch = pytest.importorskip("torch")


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _layer_norm(v, gain, shift):
    return gain * (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-5) + shift


def _side(module):
    """A side's map from its product to the gates' input: LN, or the bias that stands in for it."""
    if isinstance(module, torch.nn.LayerNorm):
        return lambda v: _layer_norm(v, module.weight.detach().numpy(), module.bias.detach().numpy())
    return lambda v: v + module.bias.detach().numpy()


@pytest.mark.parametrize("normed_inputs, normed_recurrent", [(True, True), (True, False), (False, True)])
def test_layer_norm_gru_follows_its_equations(normed_inputs, normed_recurrent):
    T, B, I, H, L = 4, 3, 5, 6, 2
    torch.manual_seed(0)
    stack = candidates.layer_norm_gru(I, H, L, inputs=normed_inputs, recurrent=normed_recurrent).double()
    with torch.no_grad():                               # gains and shifts away from 1 and 0
        for p in stack.parameters():
            if p.ndim == 1:
                p.uniform_(-1.5, 1.5)
    rng = np.random.default_rng(1)
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((L, B, H))
    out, h_last = stack(torch.from_numpy(x), torch.from_numpy(h0))

    inputs, expected_last = x, []
    for k, layer in enumerate(stack.layers):
        w_ih, w_hh = layer.w_ih.detach().numpy(), layer.w_hh.detach().numpy()
        norm_x, norm_h = _side(layer.norm_x), _side(layer.norm_h)
        assert isinstance(layer.norm_x, torch.nn.LayerNorm) == normed_inputs
        assert isinstance(layer.norm_h, torch.nn.LayerNorm) == normed_recurrent
        h, outputs = h0[k], []
        for t in range(T):
            a_r, a_z, a_n = np.split(norm_x(inputs[t] @ w_ih.T), 3, axis=-1)
            c_r, c_z, c_n = np.split(norm_h(h @ w_hh.T), 3, axis=-1)
            r, z = _sigmoid(a_r + c_r), _sigmoid(a_z + c_z)
            h = (1 - z) * np.tanh(a_n + r * c_n) + z * h
            outputs.append(h)
        inputs = np.stack(outputs)
        expected_last.append(h)
    np.testing.assert_allclose(out.detach().numpy(), inputs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_last.detach().numpy(), np.stack(expected_last), rtol=1e-12, atol=1e-12)


def test_tied_head_is_the_embedding():
    args = candidates._parse(["corpus.txt", "--updates", "1", "--hidden", "8", "--embed", "3"])
    tied, wide = candidates.build("tied", args, 11), candidates.build("wide-embed", args, 11)
    assert tied["head"].weight is tied["embed"].weight and tied["embed"].weight.shape == (11, 8)
    count = lambda m: sum(p.numel() for p in m.parameters())          # noqa: E731
    assert count(wide) - count(tied) == 11 * 8                        # the head's own weight is gone
    assert candidates.build("base", args, 11)["embed"].weight.shape == (11, 3)


def test_each_variant_trains_and_is_scored(tmp_path):
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abcd" * 3000, encoding="utf-8")
    out = tmp_path / "rows.json"
    threads = torch.get_num_threads()          # main sets PyTorch's threads for the whole process
    try:
        rows = candidates.main([str(corpus), "--updates", "60", "--hidden", "8", "--embed", "4", "--layers", "2",
                                "--batch-size", "4", "--seq-len", "16", "--warmup", "5", "--lr", "0.02",
                                "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert [r["variant"] for r in rows] == list(candidates.VARIANTS)
    for row in rows:                # a cycle of 4 characters: every variant learns well below log2(4)
        assert math.isfinite(row["bpc"]) and row["bpc"] < 1.0, row
        assert row["ms_per_update"] > 0 and row["updates"] == 60
    assert json.loads(out.read_text(encoding="utf-8"))["rows"] == rows
