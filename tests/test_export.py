"""``tinyrnn export``: the files are checked by the runtimes themselves.

ONNX Runtime runs the exported graph, PyTorch runs the safetensors weights (in torch.nn.Embedding /
RNN / LSTM / GRU / Linear, and in the generated module), and both must give tinyrnn's logits within
1e-5 relative (float32) on random input: every cell, 1 and 2 layers, the language model and the
fill-in model. Models are tiny and untrained (``CharRNN`` + ``checkpoint.save_model``); one run is
trained through the CLI to exercise ``tinyrnn export RUN``.
"""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tinyrnn import checkpoint
from tinyrnn.data import Vocab
from tinyrnn.export import export
from tinyrnn.export import safetensors as st
from tinyrnn.models import CharRNN
from tinyrnn.tensor import Tensor

from _cli import fails, run as run_cli                                            # the CLI under test
from _references import needs_onnx, needs_safetensors, needs_torch, onnx, ort, torch    # what runs the files

CHARS = "\n .abcdehlmnorst"
V, E, H = len(CHARS), 5, 8
CELLS = ["rnn", "lstm", "gru"]
MODELS = [(cell, layers, bidir) for cell in CELLS for layers in (1, 2) for bidir in (False, True)]
IDS = lambda m: "{}-{}l-{}".format(m[0], m[1], "fill" if m[2] else "lm")  # noqa: E731
TEXT = "the lamp burns by the harbour wall, and the boats come home.\n" * 30


def close(got, want):
    """Float32 agreement: elementwise rtol 1e-5 / atol 1e-6, and max |diff| / max |want| < 1e-5."""
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def make_run(tmp_path, cell, layers, bidir, seed=0):
    """A random tiny model saved as a checkpoint -> (model, run directory)."""
    model = CharRNN(V, cell=cell, hidden=H, layers=layers, embed=E, bidir=bidir)
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: rng.uniform(-0.6, 0.6, v.shape) for k, v in model.state_dict().items()})
    model.eval()
    run = tmp_path / f"{cell}{layers}{'fill' if bidir else 'lm'}"
    checkpoint.save_model(str(run / "best"), model, Vocab(CHARS))
    return model, run


def tinyrnn_logits(model, x, state=None):
    """tinyrnn's own answer: (logits, state as numpy) for a language model, logits for a fill-in model."""
    if model.bidir:
        return model.fill_logits(Tensor(x)).numpy()
    logits, state = model(Tensor(x), state)
    state = tuple(s.numpy() for s in state) if isinstance(state, tuple) else (state.numpy(),)
    return logits.numpy(), state


def random_state(cell, layers, batch, rng):
    n = 2 if cell == "lstm" else 1
    return [rng.standard_normal((layers, batch, H)).astype(np.float32) * 0.5 for _ in range(n)]


def feeds(x, state):
    names = ("h0", "c0")
    return {"ids": np.asarray(x, dtype=np.int64), **{names[k]: s for k, s in enumerate(state)}}


# ----------------------------------------------------------------------------- ONNX

@needs_onnx
@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_onnx_runtime_matches_tinyrnn(tmp_path, spec):
    cell, layers, bidir = spec
    model, run = make_run(tmp_path, cell, layers, bidir)
    out = str(tmp_path / "model.onnx")
    assert export(run, "onnx", out) == [out]
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 8 and proto.opset_import[0].version == 17
    assert {n.op_type for n in proto.graph.node} >= {"Gather", {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]}
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["T", "batch"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["vocab"]) == CHARS and json.loads(props["config"]) == model.config()
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for T, B in ((9, 3), (1, 1), (4, 2)):                      # dynamic sequence length and batch
        x = rng.integers(0, V, (T, B))
        if bidir:
            (logits,) = session.run(None, feeds(x, []))
            close(logits, tinyrnn_logits(model, x))
            continue
        state = random_state(cell, layers, B, rng)
        got = session.run(None, feeds(x, state))
        want, want_state = tinyrnn_logits(model, x, tuple(state) if cell == "lstm" else state[0])
        close(got[0], want)
        for g, w in zip(got[1:], want_state):
            close(g, w)


@needs_onnx
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_streamed_one_step_at_a_time_matches_one_call(tmp_path, cell):
    _, run = make_run(tmp_path, cell, 2, False)
    out = str(tmp_path / "model.onnx")
    export(run, "onnx", out)
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).integers(0, V, (12, 2))
    state = [np.zeros((2, 2, H), np.float32) for _ in range(2 if cell == "lstm" else 1)]
    whole = session.run(None, feeds(x, state))
    steps = []
    for t in range(len(x)):
        logits, *state = session.run(None, feeds(x[t:t + 1], state))
        steps.append(logits[0])
    close(np.stack(steps), whole[0])
    for s, w in zip(state, whole[1:]):
        close(s, w)


# ----------------------------------------------------------------------------- safetensors

class TorchChar(torch.nn.Module if torch else object):
    """The reference PyTorch model of the tests: plain torch.nn layers under tinyrnn's names."""

    def __init__(self, cell, layers, bidir):
        super().__init__()
        Stack = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.embed, self.rnn = torch.nn.Embedding(V, E), Stack(E, H, layers)
        if bidir:
            self.rnn_backward = Stack(E, H, layers)
        self.head = torch.nn.Linear(H * (2 if bidir else 1), V)

    def forward(self, x):
        e = self.embed(x)
        fwd = self.rnn(e)[0]
        if not hasattr(self, "rnn_backward"):
            return self.head(fwd)
        bwd = self.rnn_backward(e.flip(0))[0].flip(0)
        zero = torch.zeros_like(fwd[:1])
        return self.head(torch.cat([torch.cat([zero, fwd[:-1]]), torch.cat([bwd[1:], zero])], dim=2))


@needs_safetensors
@needs_torch
@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_pytorch_runs_the_safetensors_weights(tmp_path, spec):
    import safetensors.torch

    cell, layers, bidir = spec
    model, run = make_run(tmp_path, cell, layers, bidir)
    out = str(tmp_path / "model.safetensors")
    export(run, "safetensors", out)
    weights = safetensors.torch.load_file(out)
    assert set(weights) == set(model.state_dict())
    net = TorchChar(cell, layers, bidir)
    net.load_state_dict(weights)                        # strict: the names and shapes are PyTorch's
    x = np.random.default_rng(3).integers(0, V, (10, 3))
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    close(got, tinyrnn_logits(model, x) if bidir else tinyrnn_logits(model, x)[0])
    if not bidir:                                       # a bare torch.nn layer takes its part of the file
        layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](E, H, layers)
        layer.load_state_dict({k[4:]: v for k, v in weights.items() if k.startswith("rnn.")})


@needs_safetensors
@needs_torch
def test_safetensors_files_agree_with_the_safetensors_package(tmp_path):
    import safetensors.numpy
    import safetensors.torch
    from safetensors import safe_open

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2, 3], np.int64),
              "c": np.zeros((0, 4), np.float32), "d": np.array([[True, False]]), "e": np.float64(2.5) * np.ones(3)}
    ours = str(tmp_path / "ours.safetensors")
    st.save(ours, arrays, {"k": "v", "vocab": json.dumps("ab")})
    theirs = safetensors.numpy.load_file(ours)
    with safe_open(ours, framework="numpy") as f:
        assert f.metadata() == {"k": "v", "vocab": json.dumps("ab")}
    for name, a in arrays.items():
        np.testing.assert_array_equal(theirs[name], a)
    written = str(tmp_path / "theirs.safetensors")
    safetensors.numpy.save_file(arrays, written, metadata={"x": "y"})
    back, meta = st.load(written)
    assert meta == {"x": "y"} and set(back) == set(arrays)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype
        np.testing.assert_array_equal(back[name], a)
    bf16 = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    safetensors.torch.save_file({"w": bf16}, written)
    np.testing.assert_array_equal(st.load(written)[0]["w"], bf16.float().numpy())


@pytest.mark.parametrize("bidir", [False, True], ids=["lm", "fill"])
def test_tinyrnn_loads_safetensors_back(tmp_path, bidir):
    model, run = make_run(tmp_path, "gru", 2, bidir)
    out = str(tmp_path / "model.safetensors")
    export(run, "safetensors", out)
    again, vocab, meta = checkpoint.load_model(out)
    assert vocab.chars == CHARS and again.config() == model.config()
    x = np.random.default_rng(4).integers(0, V, (6, 2))
    close(tinyrnn_logits(again, x) if bidir else tinyrnn_logits(again, x)[0],
          tinyrnn_logits(model, x) if bidir else tinyrnn_logits(model, x)[0])
    r = run_cli("fill" if bidir else "sample", out, *(["th_ harbo_r"] if bidir else ["--length", "10", "--seed", "1"]))
    assert r.exit_code == 0, r.output


@needs_safetensors
@needs_torch
def test_a_pytorch_state_dict_with_a_vocabulary_loads(tmp_path):
    import safetensors.torch

    net = TorchChar("lstm", 2, False)
    path = str(tmp_path / "torch.safetensors")
    safetensors.torch.save_file(net.state_dict(), path, metadata={"vocab": json.dumps(CHARS)})
    model, vocab, _ = checkpoint.load_model(path)                 # config inferred from the shapes
    assert model.config() == dict(vocab_size=V, cell="lstm", hidden=H, layers=2, embed=E, dropout=0.0, bidir=False)
    x = np.random.default_rng(5).integers(0, V, (7, 2))
    with torch.no_grad():
        close(tinyrnn_logits(model, x)[0], net(torch.from_numpy(x)).numpy())
    safetensors.torch.save_file(net.state_dict(), path)
    fails(["sample", path], "no vocabulary", "metadata")


# ----------------------------------------------------------------------------- the generated torch module

def import_file(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_torch
@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_generated_torch_module_matches_tinyrnn(tmp_path, spec):
    cell, layers, bidir = spec
    model, run = make_run(tmp_path, cell, layers, bidir)
    out = str(tmp_path / "charmodel.py")
    assert export(run, "torch", out) == [out, str(tmp_path / "charmodel.safetensors")]
    net, chars = import_file(out).load()
    assert chars == CHARS
    x = np.random.default_rng(6).integers(0, V, (8, 2))
    with torch.no_grad():
        if bidir:
            close(net.fill_logits(torch.from_numpy(x)).numpy(), tinyrnn_logits(model, x))
            return
        logits, state = net(torch.from_numpy(x[:5]))                # carried state, as when sampling
        more, state = net(torch.from_numpy(x[5:]), state)
    want, want_state = tinyrnn_logits(model, x)
    close(np.concatenate([logits.numpy(), more.numpy()]), want)
    close((state[0] if cell == "lstm" else state).numpy(), want_state[0])


# ----------------------------------------------------------------------------- the command line

@needs_onnx
def test_export_a_trained_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    run = tmp_path / "run"
    r = run_cli("train", corpus, "--cell", "lstm", "--hidden", "16", "--layers", "1", "--embed", "8",
                "--batch-size", "4", "--seq-len", "16", "--steps", "3", "--eval-every", "3", "--quiet", "--out", run)
    assert r.exit_code == 0, r.output
    for fmt, name in (("onnx", "m.onnx"), ("safetensors", "m.safetensors"), ("torch", "m.py")):
        r = run_cli("export", run, "--format", fmt, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        assert f"wrote {tmp_path / name}" in r.stdout
    model, vocab, _ = checkpoint.load_model(run)
    x = vocab.encode("the harbour")[:, None]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    zeros = [np.zeros((1, 1, 16), np.float32)] * 2
    close(session.run(None, feeds(x, zeros))[0], tinyrnn_logits(model, x)[0])
    close(tinyrnn_logits(checkpoint.load_model(tmp_path / "m.safetensors")[0], x)[0], tinyrnn_logits(model, x)[0])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@needs_onnx
def test_bad_input_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    _, run = make_run(tmp_path, "lstm", 1, False)
    out = tmp_path / "out"
    out.mkdir()
    fails(["export", tmp_path / "missing", "--format", "onnx", "--out", out / "m.onnx"], "no checkpoint")
    fails(["export", run, "--format", "tflite", "--out", out / "m.onnx"], "--format", "tflite")
    fails(["export", run, "--format", "onnx", "--out", tmp_path / "nowhere" / "m.onnx"], "does not exist")
    fails(["export", run, "--format", "onnx", "--out", out], "is a directory")
    fails(["export", run, "--format", "torch", "--out", out / "my-model.txt"], "NAME.py")
    monkeypatch.setitem(sys.modules, "onnx", None)                 # onnx not installed
    fails(["export", run, "--format", "onnx", "--out", out / "m.onnx"], "pip install", "tinyrnn[onnx]")
    monkeypatch.undo()
    npz = run / "best.npz"
    npz.write_bytes(npz.read_bytes()[:-10])                        # a truncated checkpoint
    fails(["export", run, "--format", "safetensors", "--out", out / "m.safetensors"], "best.npz")
    other = tmp_path / "other"                                    # a family tinyrnn export does not know
    other.mkdir()
    checkpoint.save(str(other / "best"), {"model/w": np.zeros(2, np.float32)}, {"family": "parser", "model": {}})
    fails(["export", other, "--format", "onnx", "--out", out / "m.onnx"], "'parser'", "character model", "tagger")
    assert os.listdir(out) == [] and not (tmp_path / "nowhere").exists()


def test_corrupt_safetensors_files_are_one_line(tmp_path):
    model, run = make_run(tmp_path, "rnn", 1, False)
    good = tmp_path / "good.safetensors"
    export(run, "safetensors", str(good))
    data = good.read_bytes()
    for name, content, needle in (("short", data[:5], "not a safetensors file"),
                                  ("cut", data[:-7], "truncated"),
                                  ("text", b"hello world, this is not one" * 4, "not a safetensors file")):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        fails(["sample", path], needle, str(path))
        fails(["export", path, "--format", "safetensors", "--out", tmp_path / "x.safetensors"], needle)
    assert not (tmp_path / "x.safetensors").exists()


@needs_onnx
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_readme_sampling_snippet_runs(tmp_path, monkeypatch, capsys, cell):
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme.split("## Export", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    vocab = Vocab("The harbour lamp.\n")
    model = CharRNN(len(vocab), cell=cell, hidden=H, layers=2, embed=E)
    checkpoint.save_model(str(tmp_path / "run" / "best"), model, vocab)
    export(tmp_path / "run", "onnx", str(tmp_path / "harbour.onnx"))
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    text = capsys.readouterr().out.removesuffix("\n")
    assert text.startswith("The ") and len(text) == 204 and set(text) <= set(vocab.chars)


def test_a_broken_onnx_install_is_one_line(tmp_path, monkeypatch):
    """onnx >= 1.17 with an ml_dtypes too old for it (what pip picks next to numpy 1.23) raises
    AttributeError on import: one TinyRNNError naming the fix, not a traceback."""
    from tinyrnn.errors import TinyRNNError
    from tinyrnn.export.onnx import require_onnx

    fake = tmp_path / "onnx"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise AttributeError(\"module 'ml_dtypes' has no attribute 'float8_e4m3fnuz'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(TinyRNNError, match="does not import .*float8_e4m3fnuz.*pip install -U onnx ml_dtypes"):
        require_onnx()
