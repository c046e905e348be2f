"""``tinyrnn export`` of a tagger: the files are checked by the runtimes themselves.

ONNX Runtime runs the exported graph, PyTorch runs the generated module (``pack_padded_sequence``
for the character and the sentence BiRNN) on the safetensors weights, and both must give the
emissions of ``Tagger.forward`` within 1e-5 relative (float32), and the same tags as
``Tagger.predict`` (argmax, or Viterbi with the CRF). Batches mix sentence lengths (1 to 7 words)
and word lengths (1 to 12 characters), unknown words and characters. Models are tiny and
untrained (random weights through the constructor, saved as a tagger checkpoint); one run is
trained through ``tinyrnn tag train`` to exercise ``tinyrnn export RUN``.
"""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tinyrnn import checkpoint
from tinyrnn.export import export
from tinyrnn.tagging.batch import encode_batch
from tinyrnn.tagging.conll import Sentence
from tinyrnn.tagging.crf import viterbi_decode
from tinyrnn.tagging.model import Tagger
from tinyrnn.tagging.task import build_vocabs

from _cli import fails, run as run_cli                                            # the CLI under test
from _references import needs_onnx, needs_safetensors, needs_torch, onnx, ort, torch    # what runs the files

TRAIN = [Sentence(w.split(), t.split()) for w, t in (
    ("The cat sat on the mat .", "DET NOUN VERB ADP DET NOUN PUNCT"),
    ("Dogs bark loudly", "NOUN VERB ADV"),
    ("A quick brown fox jumped", "DET ADJ ADJ NOUN VERB"),
    ("I walked home slowly", "PRON VERB NOUN ADV"),
)]
# Lengths 7, 1, 4, 2 words; words of 1 to 12 characters; unknown words (extraordinary, Zebra) and
# unknown characters (Z, x, !) map to <unk>; case differs from training (the, CAT).
BATCH = [["the", "CAT", "sat", "on", "an", "extraordinary", "mat"], ["Hi!"], ["Zebra", "jumped", "home", "."],
         ["I", "walked"]]
OTHER = [["A"], ["quick", "dogs", "bark"]]                 # another T, B and W: the axes are dynamic
TINY = dict(hidden=6, word_dim=5, char_dim=4, char_hidden=3, dropout=0.0)
# (cell, char_cell, sentence layers, crf, overrides)
MODELS = [("lstm", "lstm", 1, False, {}), ("lstm", "lstm", 2, True, {}), ("gru", "gru", 1, True, {}),
          ("gru", "gru", 2, False, {}), ("lstm", "gru", 1, True, {}), ("gru", "lstm", 2, True, {}),
          ("rnn", "rnn", 1, False, {}), ("lstm", "lstm", 1, False, {"word_dim": 0}), ("gru", "gru", 1, True, {"char_hidden": 0})]
IDS = lambda m: "{}-char{}-{}l{}{}".format(m[0], m[1], m[2], "-crf" if m[3] else "",  # noqa: E731
                                           "".join(f"-no-{k.split('_')[0]}s" for k in m[4]))


def close(got, want):
    """Float32 agreement: elementwise rtol 1e-5 / atol 1e-6, and max |diff| / max |want| < 1e-5."""
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error < 1e-5
    return error


def make_run(tmp_path, cell, char_cell, layers, crf, overrides=None, seed=0):
    """A random tiny tagger saved as a tagger checkpoint -> (model, run directory)."""
    vocabs = build_vocabs(TRAIN)
    model = Tagger(vocabs, cell=cell, char_cell=char_cell, layers=layers, crf=crf, **{**TINY, **(overrides or {})})
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: rng.uniform(-0.6, 0.6, v.shape) for k, v in model.state_dict().items()})
    model.eval()
    run = tmp_path / "run"
    run.mkdir()
    meta = {"family": "tagger", "model": model.config(), "column": "upos", "step": 0,
            "vocab": {k: v.to_json() for k, v in vocabs._asdict().items()}}
    checkpoint.save(str(run / "best"), {f"model/{k}": v for k, v in model.state_dict().items()}, meta)
    return model, run


def tinyrnn_emissions(model, sentences):
    return model(encode_batch(model.vocabs, sentences)).numpy()


def feeds(vocabs, sentences):
    """What a caller of the ONNX file passes: word ids (T, B), characters (T, B, W), their lengths, lengths (B,)."""
    T, B, W = max(map(len, sentences)), len(sentences), max(len(w) for s in sentences for w in s)
    words, chars, char_lengths = np.zeros((T, B), np.int64), np.zeros((T, B, W), np.int64), np.zeros((T, B), np.int64)
    for b, sentence in enumerate(sentences):
        words[:len(sentence), b] = vocabs.words.encode(sentence)          # lower-cased, <unk> = 1
        for t, w in enumerate(sentence):
            chars[t, b, :len(w)] = vocabs.chars.encode(w)
            char_lengths[t, b] = len(w)
    return {"word_ids": words, "char_ids": chars, "char_lengths": char_lengths,
            "lengths": np.array([len(s) for s in sentences], np.int64)}


def decode(emissions, lengths, crf=None):
    """Tag ids per sentence: Viterbi with (transitions, start, end), else argmax."""
    if crf is not None:
        return viterbi_decode(emissions, lengths, *crf)
    return [emissions[:n, b].argmax(1).tolist() for b, n in enumerate(lengths)]


def import_file(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- ONNX

@needs_onnx
@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_onnx_runtime_matches_tinyrnn(tmp_path, spec):
    cell, char_cell, layers, crf, overrides = spec
    model, run = make_run(tmp_path, *spec)
    out = str(tmp_path / "tagger.onnx")
    assert export(run, "onnx", out) == [out]
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 8 and proto.opset_import[0].version == 17
    ops, OPS = {n.op_type for n in proto.graph.node}, {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
    assert {"Gather", "MatMul", OPS[cell]} <= ops
    if model.char_hidden:
        assert OPS[char_cell] in ops
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    want_inputs = ({"word_ids": ["T", "batch"]} if model.word_dim else {}) | (
        {"char_ids": ["T", "batch", "W"], "char_lengths": ["T", "batch"]} if model.char_hidden else {})
    assert dims == {**want_inputs, "lengths": ["batch"]}
    K = len(model.vocabs.tags)
    assert [o.name for o in proto.graph.output] == ["emissions"] + (["transitions", "start", "end"] if crf else [])
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["family"] == "tagger" and json.loads(props["config"]) == model.config()
    assert json.loads(props["vocab"]) == {k: v.to_json() for k, v in model.vocabs._asdict().items()}
    assert props["column"] == "upos"
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    errors = []
    for sentences in (BATCH, OTHER, [["x"]]):
        f = feeds(model.vocabs, sentences)
        got = session.run(None, {n: f[n] for n in names})
        assert got[0].shape == (max(map(len, sentences)), len(sentences), K)
        errors.append(close(got[0], tinyrnn_emissions(model, sentences)))
        tags = decode(got[0], f["lengths"].tolist(), got[1:] if crf else None)
        assert [model.vocabs.tags.decode(t) for t in tags] == model.predict(sentences)
        if crf:
            for g, name in zip(got[1:], ("transitions", "start", "end")):
                np.testing.assert_array_equal(g, model.state_dict()[f"crf.{name}"])
    print(f"max relative error {max(errors):.2e}")


@needs_onnx
def test_onnx_padding_and_batch_neighbours_never_count(tmp_path):
    """A sentence's emissions do not depend on the batch around it, nor on junk in the padding."""
    model, run = make_run(tmp_path, "lstm", "gru", 2, True)
    out = str(tmp_path / "tagger.onnx")
    export(run, "onnx", out)
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    together = feeds(model.vocabs, BATCH)
    whole = session.run(["emissions"], together)[0]
    junk = {k: v.copy() for k, v in together.items()}
    T, B, W = junk["char_ids"].shape
    pad = np.arange(T)[:, None] >= junk["lengths"][None, :]
    junk["word_ids"][pad] = 3
    junk["char_ids"][pad] = 2
    junk["char_ids"][np.arange(W)[None, None, :] >= junk["char_lengths"][:, :, None]] = 4
    junk["char_lengths"][pad] = 2                   # padding tokens with characters of their own
    close(session.run(["emissions"], junk)[0][~pad], whole[~pad])
    for b, sentence in enumerate(BATCH):
        alone = session.run(["emissions"], feeds(model.vocabs, [sentence]))[0]
        close(alone[:, 0], whole[:len(sentence), b])


# ----------------------------------------------------------------------------- torch and safetensors

@needs_torch
@pytest.mark.parametrize("spec", MODELS, ids=IDS)
def test_generated_torch_module_matches_tinyrnn(tmp_path, spec):
    model, run = make_run(tmp_path, *spec)
    out = str(tmp_path / "tagmodel.py")
    assert export(run, "torch", out) == [out, str(tmp_path / "tagmodel.safetensors")]
    net, vocabs = import_file(out).load()
    assert vocabs == {k: v.to_json() for k, v in model.vocabs._asdict().items()}
    errors = []
    for sentences in (BATCH, OTHER, [["x"]]):
        inputs = net.encode(sentences)
        want = feeds(model.vocabs, sentences)
        for t, name in zip(inputs, ("word_ids", "char_ids", "char_lengths", "lengths")):
            np.testing.assert_array_equal(t.numpy(), want[name])        # the ONNX file's inputs too
        with torch.no_grad():
            errors.append(close(net(*inputs).numpy(), tinyrnn_emissions(model, sentences)))
        assert net.predict(sentences) == model.predict(sentences)
    print(f"max relative error {max(errors):.2e}")


@needs_safetensors
@needs_torch
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_pytorch_layers_take_the_safetensors_weights(tmp_path, cell):
    import safetensors.torch

    model, run = make_run(tmp_path, cell, cell, 2, True)
    out = str(tmp_path / "tagger.safetensors")
    assert export(run, "safetensors", out) == [out]
    weights = safetensors.torch.load_file(out)
    assert set(weights) == set(model.state_dict())
    Stack = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    parts = {"rnn": Stack(5 + 2 * 3, 6, 2, bidirectional=True), "char_rnn": Stack(4, 3, 1, bidirectional=True),
             "word_embed": torch.nn.Embedding(len(model.vocabs.words), 5),
             "char_embed": torch.nn.Embedding(len(model.vocabs.chars), 4),
             "head": torch.nn.Linear(2 * 6, len(model.vocabs.tags))}
    for prefix, layer in parts.items():                 # strict: PyTorch's names and shapes
        layer.load_state_dict({k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")})


@pytest.mark.parametrize("crf", [False, True])
def test_tinyrnn_loads_tagger_safetensors_back(tmp_path, crf):
    model, run = make_run(tmp_path, "gru", "lstm", 2, crf)
    out = str(tmp_path / "tagger.safetensors")
    export(run, "safetensors", out)
    again, vocabs, meta = checkpoint.load_model(out, family="tagger")
    assert again.config() == model.config() and vocabs == model.vocabs and meta["column"] == "upos"
    close(tinyrnn_emissions(again, BATCH), tinyrnn_emissions(model, BATCH))
    text = tmp_path / "input.txt"
    text.write_text("\n".join(" ".join(s) for s in BATCH) + "\n", encoding="utf-8")
    r = run_cli("tag", "predict", out, text)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [" ".join(f"{w}/{t}" for w, t in zip(s, tags))
                                     for s, tags in zip(BATCH, model.predict(BATCH))]
    fails(["sample", out], "tagger", "tinyrnn tag predict")


# ----------------------------------------------------------------------------- the command line

def write_conllu(path, sents):
    with open(path, "w", encoding="utf-8") as f:
        for s in sents:
            f.writelines(f"{i}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_\n" for i, (w, t) in enumerate(zip(s.words, s.tags), 1))
            f.write("\n")
    return path


@needs_onnx
@needs_torch
def test_export_a_trained_tagger_run(tmp_path):
    train = write_conllu(tmp_path / "train.conllu", TRAIN * 2)
    run = tmp_path / "run"
    r = run_cli("tag", "train", train, "--cell", "lstm", "--hidden", "8", "--layers", "1", "--word-dim", "6",
                "--char-dim", "4", "--char-hidden", "4", "--crf", "--batch-size", "4", "--steps", "2",
                "--quiet", "--out", run)
    assert r.exit_code == 0, r.output
    for fmt, name in (("onnx", "t.onnx"), ("safetensors", "t.safetensors"), ("torch", "t.py")):
        r = run_cli("export", run, "--format", fmt, "--out", tmp_path / name)
        assert r.exit_code == 0, r.output
        assert f"wrote {tmp_path / name}" in r.stdout
    model, vocabs, meta = checkpoint.load_model(run, family="tagger")
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds(vocabs, BATCH))
    close(got[0], tinyrnn_emissions(model, BATCH))
    assert [vocabs.tags.decode(t) for t in decode(got[0], [len(s) for s in BATCH], got[1:])] == model.predict(BATCH)
    back = checkpoint.load_model(tmp_path / "t.safetensors", family="tagger")
    assert back[0].predict(BATCH) == model.predict(BATCH)
    assert back[2]["data"]["max_length"] == meta["data"]["max_length"]
    assert import_file(str(tmp_path / "t.py")).load()[0].predict(BATCH) == model.predict(BATCH)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@needs_onnx
def test_bad_input_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    _, run = make_run(tmp_path, "lstm", "lstm", 1, True)
    out = tmp_path / "out"
    out.mkdir()
    fails(["export", run, "--format", "tflite", "--out", out / "m.onnx"], "--format", "tflite")
    fails(["export", run, "--format", "onnx", "--out", tmp_path / "nowhere" / "m.onnx"], "does not exist")
    fails(["export", run, "--format", "onnx", "--out", out], "is a directory")
    fails(["export", run, "--format", "torch", "--out", out / "my-tagger.txt"], "NAME.py")
    monkeypatch.setitem(sys.modules, "onnx", None)                 # onnx not installed
    fails(["export", run, "--format", "onnx", "--out", out / "m.onnx"], "pip install", "tinyrnn[onnx]")
    monkeypatch.undo()
    meta = json.loads((run / "best.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    kept = {k: meta[k] for k in ("family", "vocab", "column")}
    checkpoint.save(str(broken / "best"), {"model/w": np.zeros(2, np.float32)}, {**kept, "model": {}})
    fails(["export", broken, "--format", "onnx", "--out", out / "m.onnx"], "incomplete or inconsistent")
    npz = run / "best.npz"
    npz.write_bytes(npz.read_bytes()[:-10])                        # a truncated checkpoint
    for fmt, name in (("onnx", "m.onnx"), ("safetensors", "m.safetensors"), ("torch", "m.py")):
        fails(["export", run, "--format", fmt, "--out", out / name], "best.npz")
    assert os.listdir(out) == [] and not (tmp_path / "nowhere").exists()


def test_corrupt_tagger_safetensors_files_are_one_line(tmp_path):
    model, run = make_run(tmp_path, "gru", "gru", 1, False)
    good = tmp_path / "good.safetensors"
    export(run, "safetensors", str(good))
    from tinyrnn.export import safetensors as st

    arrays, metadata = st.load(str(good))
    for name, meta, needle in (("novocab", {k: v for k, v in metadata.items() if k != "vocab"}, "needs config and vocab"),
                               ("noconfig", {k: v for k, v in metadata.items() if k != "config"}, "needs config"),
                               ("badvocab", {**metadata, "vocab": json.dumps("abc")}, "needs config and vocab"),
                               ("notjson", {**metadata, "config": "{"}, "not valid")):
        path = tmp_path / f"{name}.safetensors"
        st.save(str(path), arrays, meta)
        fails(["tag", "predict", path, tmp_path / "missing.txt"], needle, str(path))
        if ort is not None:                # without onnx, export says that first
            fails(["export", path, "--format", "onnx", "--out", tmp_path / "x.onnx"], needle)
    assert not (tmp_path / "x.onnx").exists()


@needs_onnx
def test_the_readme_tagging_snippet_runs(tmp_path, monkeypatch, capsys):
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme.split("## Export", 1)[1].split("\n## ", 1)[0]
    snippet = section.split("```python\n", 2)[2].split("```", 1)[0]
    model, run = make_run(tmp_path, "lstm", "lstm", 1, True)
    export(run, "onnx", str(tmp_path / "tagger.onnx"))
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    sentence = "The cat sat on the mat .".split()
    assert capsys.readouterr().out.split() == [f"{w}/{t}" for w, t in zip(sentence, model.predict([sentence])[0])]
