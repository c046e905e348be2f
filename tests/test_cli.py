"""The command line end to end: train / sample / eval / fill round trips, resume, Ctrl-C, bad input.

Models are tiny (hidden 16, a handful of steps) so the whole file runs in well under a few minutes.
"""
import json
import math
import os
import signal
import subprocess
import queue
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from tinyrnn import checkpoint
from _cli import CLI_MODULE, ROOT, climain, env, fails, ok   # the CLI under test

CHINESE = os.path.join(ROOT, "samples", "corpora", "chinese.txt")
TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
        "--eval-every", "4", "--save-every", "4", "--quiet"]
TEXT = ("the quick brown fox jumps over the lazy dog. a lamp burns by the harbour wall, "
        "and the boats come home when the tide turns.\n") * 20


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- startup

def test_import_does_not_load_numba():
    code = f"import {CLI_MODULE}, sys; assert 'numba' not in sys.modules; assert 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env())


def test_help_does_not_load_numba():
    code = (f"import sys, time; t = time.perf_counter(); from {CLI_MODULE} import cli\n"
            "from click.testing import CliRunner\n"
            "for args in (['--help'], ['train', '--help'], ['sample', '--help']):\n"
            "    r = CliRunner().invoke(cli, args); assert r.exit_code == 0, r.output\n"
            "assert 'numba' not in sys.modules and 'tinyrnn' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env())
    # (how long --help takes is measured by `tinyrnn bench`, not asserted in a test)


def test_cli_defaults_match_train_config():
    from tinyrnn.train import DEFAULT_STEPS, TrainConfig

    cfg = TrainConfig()
    for name, value in climain.DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert climain.DEFAULT_STEPS == DEFAULT_STEPS
    from tinyrnn.train import BUDGET_DEFAULTS

    for name, value in BUDGET_DEFAULTS.items():       # the help's copy of a budget's own settings
        assert f"--{name.replace('_', '-')} {value if isinstance(value, str) else format(value, 'g')}" \
            in climain.TRAIN_TIME_LIMIT_HELP, name
    from tinyrnn.train import BUDGET_CHARS_PER_S, BUDGET_DROPOUT, BUDGET_DROPOUT_FROM, BUDGET_PASSES

    assert (f"would read the text {BUDGET_DROPOUT_FROM:g} times or more (foreseen from the text's size at the "
            f"{BUDGET_CHARS_PER_S // 1000}K chars/s that GRU trains at on 2 cores, and decided again on the pace it "
            f"measures in its first seconds), it adds --dropout {BUDGET_DROPOUT:g} and stops after "
            f"{BUDGET_PASSES:g} passes" in climain.TRAIN_TIME_LIMIT_HELP)
    from tinyrnn.train import BUDGET_LONG_FROM, BUDGET_LONG_LR

    assert (f"When it would train {BUDGET_LONG_FROM:,} updates or more (foreseen, then measured, likewise), it "
            f"trains at --lr {BUDGET_LONG_LR:g}" in climain.TRAIN_TIME_LIMIT_HELP)
    from tinyrnn.generate import WEIGHT_FORMATS

    assert sorted(climain.WEIGHT_FORMATS) == sorted(WEIGHT_FORMATS)        # the CLI's copy of the formats


def test_train_help_groups_options():
    r = ok("train", "--help")
    for section in ("Model options", "Optimisation options", "Bookkeeping options"):
        assert section in r.stdout


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_round_trip_unidirectional(tmp_path, corpus, cell):
    out = tmp_path / "run"
    r = ok("train", corpus, "--cell", cell, *TINY, "--steps", "6", "--out", out)
    assert "val" in r.stdout and "bits/char" in r.stdout
    for name in ("last.json", "last.npz", "best.json", "best.npz", "metrics.jsonl"):
        assert (out / name).exists()
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert any("val_bpc" in row for row in rows) and any("loss_bpc" in row for row in rows)
    r = ok("sample", out, "--prime", "the ", "--length", "40", "--seed", "1")
    text = r.stdout.removesuffix("\n")  # the one newline sample adds at the end
    assert text.startswith("the ") and len(text) == 44 and set(text) <= set(TEXT)
    assert ok("sample", out, "--length", "20", "--seed", "1").stdout == ok("sample", out, "--length", "20",
                                                                            "--seed", "1").stdout
    ok("sample", out, "--length", "10", "--argmax")
    ok("sample", out / "last.npz", "--length", "10", "--top-k", "3", "--top-p", "0.9", "--temperature", "0.5")
    r = ok("eval", out, corpus)
    bpc = float(r.stdout.split(":")[1].split()[0])
    assert 0 < bpc < 8 and "perplexity" in r.stdout and "fill-in" not in r.stdout


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_round_trip_bidirectional(tmp_path, corpus, cell):
    out = tmp_path / "run"
    ok("train", corpus, "--cell", cell, *TINY, "--layers", "2", "--bidir", "--steps", "6", "--out", out)
    r = ok("fill", out, "th_ qu_ck br_wn f_x")
    filled = r.stdout.removesuffix("\n")
    assert len(filled) == len("th_ qu_ck br_wn f_x") and "_" not in filled
    assert filled[:2] == "th" and filled[4:6] == "qu" and set(filled) <= set(TEXT)
    r = ok("fill", out, "th* qu*ck", "--mask", "*")
    assert "*" not in r.stdout
    r = ok("eval", out, corpus)
    assert "fill-in bits/char" in r.stdout
    line = fails(["sample", out], "bidirectional", "fill")
    assert "unidirectional" in line


def test_default_corpus(tmp_path):
    r = ok("train", *TINY, "--steps", "2", "--out", tmp_path / "run")
    meta, _ = checkpoint.load(tmp_path / "run" / "last")
    assert meta["data"]["corpus"].endswith("harbour.txt") and meta["data"]["chars"] > 60_000
    assert "step 2/2" in r.stdout


def test_chinese_round_trip(tmp_path):
    out = tmp_path / "zh"
    ok("train", CHINESE, "--cell", "gru", "--hidden", "48", "--layers", "1", "--embed", "16", "--batch-size", "8",
       "--seq-len", "32", "--steps", "40", "--lr", "0.01", "--eval-every", "20", "--quiet", "--out", out)
    meta, _ = checkpoint.load(out / "last")
    vocab = set(meta["vocab"])
    assert {"的", "山", "。"} <= vocab
    text = ok("sample", out, "--prime", "春天", "--length", "60", "--seed", "3").stdout.removesuffix("\n")
    assert text.startswith("春天") and len(text) == 62
    assert set(text) <= vocab
    assert sum("\u4e00" <= c <= "\u9fff" for c in text) > 20
    r = ok("eval", out, CHINESE)
    assert float(r.stdout.split(":")[1].split()[0]) < math.log2(len(vocab))


# ----------------------------------------------------------------------------- resume and Ctrl-C

def weights(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != checkpoint.META_MEMBER}


def test_resume_continues_exactly(tmp_path, corpus):
    args = [corpus, "--hidden", "16", "--layers", "2", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
            "--dropout", "0.2", "--lr-schedule", "constant", "--eval-every", "4", "--save-every", "100",
            "--threads", "1", "--quiet"]
    ok("train", *args, "--steps", "12", "--out", tmp_path / "straight")
    ok("train", *args, "--steps", "5", "--out", tmp_path / "split")
    r = ok("train", "--resume", "--out", tmp_path / "split", "--steps", "12", "--quiet")
    assert "resuming" in r.stderr and "step 12/12" in r.stdout
    a, b = weights(tmp_path / "straight" / "last.npz"), weights(tmp_path / "split" / "last.npz")
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in open(tmp_path / "split" / "metrics.jsonl")]
    assert steps == sorted(steps)


def test_ctrl_c_saves_a_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    # no --quiet: the progress bar's first line (at the first update, also to a pipe) says the run is
    # going; wait for it rather than for a wall-clock time (no warm compilation cache needed)
    cmd = [sys.executable, "-m", CLI_MODULE, "train", corpus, *[a for a in TINY if a != "--quiet"], "--steps",
           "1000000", "--save-every", "1000000", "--eval-every", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr] + [lines.put(None)],
                         daemon=True).start()
        seen = []
        while not (seen and seen[-1].startswith("step ")):
            line = lines.get(timeout=600)                 # a safety net only
            assert line is not None, ("train ended before its first step", seen, proc.communicate())
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
        stderr = "".join(seen) + "".join(iter(lambda: lines.get(timeout=60) or "", ""))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stderr and "--resume" in stderr
    meta, arrays = checkpoint.load(out / "last")
    assert f"interrupted at step {meta['step']}:" in stderr
    assert meta["step"] >= 1 and all(np.isfinite(v).all() for v in arrays.values())
    r = ok("train", "--resume", "--out", out, "--steps", str(meta["step"] + 2), "--quiet")
    assert f"step {meta['step'] + 2}" in r.stdout


# ----------------------------------------------------------------------------- bidirectional: no leak

def test_bidirectional_does_not_leak(tmp_path):
    """On i.i.d. random text nothing predicts a character but itself: a fill-in model that can see
    the character it predicts would drive the loss far below log2(V); a correct one stays near it."""
    from tinyrnn.train import TrainConfig, train

    rng = np.random.default_rng(0)
    alphabet = "abcdefghijklmnop"                       # V = 16: log2(V) = 4 bits
    path = tmp_path / "random.txt"
    path.write_text("".join(rng.choice(list(alphabet), 20000)), encoding="utf-8")
    cfg = TrainConfig(corpus=str(path), cell="lstm", layers=2, hidden=32, embed=16, bidir=True, batch_size=16,
                      seq_len=32, steps=120, lr=1e-2, eval_every=60, save_every=1000)
    summary = train(cfg, out=str(tmp_path / "run"), progress=False, log=lambda m: None)
    assert summary["train_bpc"] > 3.8 and summary["val_bpc"] > 3.8, summary
    # The same model does learn when the neighbours do tell: on "abcdabcd..." the fill-in loss collapses.
    path2 = tmp_path / "periodic.txt"
    path2.write_text("abcdefgh" * 2500, encoding="utf-8")
    cfg.corpus, cfg.steps = str(path2), 60
    summary = train(cfg, out=str(tmp_path / "run2"), progress=False, log=lambda m: None)
    assert summary["val_bpc"] < 1.0, summary


# ----------------------------------------------------------------------------- bad input

def test_bad_corpus_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(["train", tmp_path / "missing.txt"], "no such file", code=1)
    (tmp_path / "empty.txt").write_bytes(b"")
    fails(["train", tmp_path / "empty.txt"], "empty")
    (tmp_path / "bin.dat").write_bytes(b"\x7fELF\x02\x01\x00\x00binary")
    fails(["train", tmp_path / "bin.dat"], "binary", "NUL")
    fails(["train", tmp_path], "directory")
    assert not (tmp_path / "runs").exists()          # bad input leaves no empty run directory


def test_invalid_utf8(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(TEXT.encode() + "caf\xe9 au lait".encode("latin-1") + TEXT.encode())
    offset = len(TEXT.encode()) + 3
    fails(["train", bad, *TINY, "--steps", "2", "--out", tmp_path / "r"], f"byte offset {offset}",
          "--encoding-errors replace")
    ok("train", bad, *TINY, "--steps", "2", "--encoding-errors", "replace", "--out", tmp_path / "r")


def test_short_corpus(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a tiny poem about the sea, " * 2, encoding="utf-8")     # 54 characters
    r = ok("train", short, *TINY, "--steps", "2", "--out", tmp_path / "r")
    assert "using --batch-size" in r.stderr                                 # shrunk with a warning
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("sea", encoding="utf-8")
    fails(["train", tiny, *TINY, "--out", tmp_path / "r2"], "too short", "at least 19 characters")


@pytest.mark.parametrize("option,value,needle", [
    ("--hidden", "0", "'--hidden': 0 is not in the range"), ("--layers", "-1", "'--layers': -1 is not in the range"),
    ("--seq-len", "0", "'--seq-len'"), ("--batch-size", "0", "'--batch-size'"),
    ("--steps", "0", "'--steps'"), ("--lr", "-1", "'--lr': -1 is not in the range"),
    ("--dropout", "1.5", "--dropout"), ("--cell", "transformer", "'transformer' is not one of"),
    ("--hidden", "many", "'many' is not a valid integer")])
def test_bad_options(tmp_path, corpus, option, value, needle):
    fails(["train", corpus, option, value, "--out", tmp_path / "r"], needle)


def test_bad_sampling_options(tmp_path, corpus):
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "2", "--out", out)
    fails(["sample", out, "--prime", "the 🙂 Zebra"], "never saw", "'🙂'", "'Z'")
    fails(["sample", out, "--length", "-1"], "--length")
    fails(["sample", out, "--top-p", "2"], "--top-p")
    fails(["fill", out, "th_ qu_ck"], "bidirectional")


def test_bad_checkpoints(tmp_path, corpus):
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "2", "--out", out)
    fails(["sample", tmp_path / "nowhere"], "no checkpoint")
    meta, arrays = checkpoint.load(out / "best")
    data, _ = checkpoint.build(arrays, {**meta, "version": 999})
    (out / "best.npz").write_bytes(data)
    (out / "last.npz").write_bytes(data)
    fails(["eval", out / "best", corpus], "format version 999")
    (out / "best.json").write_text("{not json")               # the readable copy is never read
    fails(["eval", out / "best", corpus], "format version 999")
    data = (out / "last.npz").read_bytes()
    (out / "last.npz").write_bytes(data[:100])
    (out / "best.npz").write_bytes(data[:100])
    fails(["sample", out / "last"], "truncated")


def test_eval_reports_unknown_characters(tmp_path, corpus):
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "2", "--out", out)
    other = tmp_path / "other.txt"
    other.write_text("the Zebra ate crème brûlée 🙂 by the sea", encoding="utf-8")
    r = ok("eval", out, other)
    assert "bits/char" in r.stdout and "skipped" in r.stdout and "'Z'" in r.stdout and "'🙂'" in r.stdout


def test_existing_run_and_resume_conflicts(tmp_path, corpus):
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "2", "--out", out)
    fails(["train", corpus, *TINY, "--out", out], "already holds a run", "--resume")
    fails(["train", "--resume", "--out", out, "--hidden", "32"], "--hidden 32 conflicts", "hidden = 16")
    fails(["train", "--resume", "--out", out, "--bidir"], "--bidir")
    fails(["train", "--resume", "--out", tmp_path / "none"], "nothing to resume")
    fails(["train", "--resume", "--out", out, "--steps", "1"], "at step 2", "--steps 2 or more")
    fails(["train", "--resume"], "--resume needs --out")


def test_resuming_a_finished_run_says_how_to_train_further(tmp_path, corpus):
    """A run stopped by its --epochs (as a budget run on a small text is) gains nothing from a new
    --time-limit: the resume says so, and a larger --epochs continues it."""
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--epochs", "1", "--out", out)
    step = checkpoint.load(out / "last")[0]["step"]
    r = ok("train", "--resume", "--out", out, "--time-limit", "30", "--quiet")
    assert f"note: the run has already trained its {step} steps (--epochs 1); give a larger --epochs" in r.stderr
    assert checkpoint.load(out / "last")[0]["step"] == step
    r = ok("train", "--resume", "--out", out, "--epochs", "2", "--quiet")
    assert "already trained" not in r.stderr and checkpoint.load(out / "last")[0]["step"] == 2 * step
    r = ok("train", "--resume", "--out", out, "--quiet")
    assert f"already trained its {2 * step} steps (--epochs 2); give a larger --epochs" in r.stderr


def test_resuming_a_run_finished_at_its_default_length_says_so(tmp_path, corpus, monkeypatch):
    from tinyrnn.train import TrainConfig, train

    monkeypatch.setattr(TrainConfig, "DEFAULT_STEPS", 3)        # neither --steps nor --epochs: the default
    cfg = TrainConfig(corpus=corpus, hidden=16, layers=1, embed=8, batch_size=4, seq_len=16)
    train(cfg, out=str(tmp_path / "run"), progress=False, log=lambda m: None)
    said = []
    train(cfg, out=str(tmp_path / "run"), resume=True, progress=False, log=said.append)
    assert "note: the run has already trained its 3 steps (the default length); give a larger --steps to train " \
           "it further" in said


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    line = fails(["train", corpus, *TINY, "--optimizer", "sgd", "--lr", "1e38", "--clip", "0", "--warmup", "0",
                  "--steps", "50", "--save-every", "1", "--out", out], "loss became", "at step", "last good")
    step = int(line.split("at step ")[1].split(";")[0])
    meta, arrays = checkpoint.load(out / "last")
    assert meta["step"] < step
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("model/"))


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(climain.cli, ["train", str(tmp_path / "missing.txt"), "--debug"])
    assert r.exit_code != 0 and type(r.exception).__name__ == "TinyRNNError"
    out = subprocess.run([sys.executable, "-m", CLI_MODULE, "train", str(tmp_path / "missing.txt"), "--debug"],
                         env=env(), capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr


# ----------------------------------------------------------------------------- devices

def test_device_cuda_without_a_gpu_is_one_clear_line(corpus, tmp_path):
    e = env()
    e.update(NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")   # no simulator, no GPU
    for args in (["train", corpus, "--device", "cuda", "--steps", "1", "--out", str(tmp_path / "r")] + TINY,):
        r = subprocess.run([sys.executable, "-m", CLI_MODULE] + args, env=e, capture_output=True, text=True)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "no CUDA GPU found" in lines[0] and "--device cpu" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
