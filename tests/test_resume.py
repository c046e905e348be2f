"""Exact resume, as the README promises it: a run stopped part-way and continued with
``tinyrnn train --resume`` ends with the same weights, bit for bit, and the same metrics.jsonl rows
(apart from timing fields) as a straight run of the same total steps.

Stopping part-way is a real Ctrl-C: SIGINT raised in-process at a chosen step (deterministic), or
sent to a ``tinyrnn train`` subprocess as soon as its progress bar shows the run is going.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from tinyrnn import checkpoint
from _cli import CLI_MODULE, env, ok, run
from test_cli import TEXT

TIMING = {"time", "chars_per_s"}
BASE = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
        "--eval-every", "10", "--save-every", "1000", "--warmup", "4"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def model_arrays(run_dir):
    with np.load(os.path.join(run_dir, "last.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith("model/")}


def metric_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def assert_same_run(straight, resumed, drop=()):
    a, b = model_arrays(straight), model_arrays(resumed)
    assert sorted(a) == sorted(b) and a
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs after resuming"
    rows_a, rows_b = metric_rows(straight), [r for r in metric_rows(resumed) if r not in drop]
    assert rows_a == rows_b
    assert checkpoint.load(os.path.join(resumed, "last"))[0]["step"] == checkpoint.load(
        os.path.join(straight, "last"))[0]["step"]


def interrupt_at(monkeypatch, at_step):
    """Ctrl-C (a real SIGINT to this process) right after update ``at_step``."""
    from tinyrnn import progress

    original = progress.Progress.update

    def update(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == at_step:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(progress.Progress, "update", update)
    return lambda: monkeypatch.setattr(progress.Progress, "update", original)


@pytest.mark.parametrize("variant", [
    [],                                                      # the defaults: adam, cosine after warm-up
    ["--layers", "2", "--dropout", "0.3", "--cell", "gru"],  # dropout: the library RNG is restored
    ["--bidir"],                                             # fill-in model
], ids=["defaults", "dropout", "bidir"])
@pytest.mark.parametrize("stop_at", [20, 25], ids=["at-a-log-line", "mid-window"])
def test_resume_after_ctrl_c_equals_a_straight_run(tmp_path, corpus, monkeypatch, variant, stop_at):
    """Stopped at a log line, or in the middle of a log window (the loss of steps 21-25 is in the
    checkpoint: the row at step 30 averages steps 21-30, as the straight run's does)."""
    args = [corpus, *BASE, *variant, "--steps", "30", "--quiet"]
    ok("train", *args, "--out", tmp_path / "straight")
    restore = interrupt_at(monkeypatch, stop_at)
    r = run("train", *args, "--out", tmp_path / "split")
    restore()
    assert r.exit_code == 130, (r.stdout, r.stderr)
    assert f"interrupted at step {stop_at}" in r.stderr
    assert checkpoint.load(tmp_path / "split" / "last")[0]["step"] == stop_at
    r = ok("train", "--resume", "--out", tmp_path / "split", "--quiet")   # same --steps: from the checkpoint
    assert "resuming" in r.stderr and "step 30/30" in r.stdout
    assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_straight_runs_are_repeatable_and_resume_is_not_trivially_equal(tmp_path, corpus, monkeypatch):
    """The check above has teeth: a run resumed with the wrong schedule position differs."""
    args = [corpus, *BASE, "--steps", "30", "--quiet"]
    ok("train", *args, "--out", tmp_path / "a")
    ok("train", *args, "--out", tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")
    # a fresh 10-step run continued to 30 restarts the cosine over another length: not the same run
    ok("train", *args[:-3], "--steps", "10", "--quiet", "--out", tmp_path / "c")
    ok("train", "--resume", "--out", tmp_path / "c", "--steps", "30", "--quiet")
    a, c = model_arrays(tmp_path / "a"), model_arrays(tmp_path / "c")
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def _stderr_lines(proc):
    lines = queue.Queue()

    def pump():
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_resume_after_sigint_to_a_subprocess(tmp_path, corpus):
    """SIGINT to `tinyrnn train` mid-run (as soon as the progress bar's first line shows), then
    --resume: the same weights and metrics as an uninterrupted run of the same length."""
    steps = 400
    args = [corpus, *BASE, "--eval-every", "50", "--steps", str(steps)]
    out = tmp_path / "split"
    # no --quiet: the progress bar prints its first line at the first update, also to a pipe
    proc = subprocess.Popen([sys.executable, "-m", CLI_MODULE, "train", *args, "--out", str(out)], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, seen = _stderr_lines(proc), []
        while True:
            line = lines.get(timeout=600)            # a safety net only: the first step's line comes first
            assert line is not None, ("train ended before it showed progress", seen)
            seen.append(line)
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
        stderr = "".join(seen) + "".join(iter(lambda: lines.get(timeout=60) or "", ""))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    stopped = checkpoint.load(out / "last")[0]["step"]
    assert 1 <= stopped < steps and f"interrupted at step {stopped}" in stderr
    # The straight run and the resume are processes of their own too, like the interrupted run, as a
    # user runs them. (With those two inside this test process, a clean-clone CI run once saw
    # embed.weight differ in its last bits after a stop at step 5; not reproduced in 8 runs here. The
    # suspected cause, not established: kernels this process compiled or loaded early in a fresh
    # cache's session differing from the entries a later process loads.)
    straight = [*args, "--quiet", "--out", str(tmp_path / "straight")]
    for command in (straight, ["--resume", "--out", str(out), "--quiet"]):
        done = subprocess.run([sys.executable, "-m", CLI_MODULE, "train", *map(str, command)], env=env(),
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
    # Stopped at an arbitrary step (mostly inside a log window, whose loss so far the checkpoint
    # holds), the resumed run's rows are the straight run's.
    a, b = model_arrays(tmp_path / "straight"), model_arrays(out)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after resuming at step {stopped}"
    assert metric_rows(out) == metric_rows(tmp_path / "straight")


# ----------------------------------------------------------------------------- a best scored otherwise

def _tiny_config(corpus, steps, eval_chars=96):
    from tinyrnn.train import TrainConfig

    return TrainConfig(corpus=corpus, hidden=16, layers=1, embed=8, batch_size=4, seq_len=16, steps=steps,
                       eval_every=10, save_every=1000, warmup=4, eval_chars=eval_chars)


def _set_best(run_dir, change):
    """Hand-edit ``metrics.best`` in both checkpoints, as an older tinyrnn would have saved it."""
    from test_reliability import rewrite_meta

    for name in ("last", "best"):
        rewrite_meta(os.path.join(run_dir, name), lambda meta: change(meta["metrics"]["best"]))


def _best_score(run_dir, eval_chars):
    """val bits/char of the ``best`` checkpoint on the sample the trainer scores."""
    import math

    from tinyrnn.data import load_corpus
    from tinyrnn.generate import evaluate

    model, _, meta = checkpoint.load_model(os.path.join(run_dir, "best"))
    val_ids = load_corpus(meta["data"]["corpus"]).split(0.1)[1]
    return evaluate(model, val_ids, batch_size=16, seq_len=16, max_chars=eval_chars)[0] / math.log(2)


def test_a_best_scored_on_the_old_prefix_is_rescored_when_the_run_resumes(tmp_path, corpus):
    """A run saved before the trainer recorded how it scores (its best scored on the held-out text's
    prefix, which reads low) must not keep that best forever: resuming scores it again."""
    from tinyrnn.train import train

    run_dir = str(tmp_path / "run")
    train(_tiny_config(corpus, 20), out=run_dir, progress=False, log=lambda m: None)
    saved = checkpoint.load(os.path.join(run_dir, "last"))[0]["metrics"]["best"]
    assert saved["scored_on"].startswith("96 characters spread over the ")
    old_step = saved["step"]

    def old_prefix_score(best):
        best.pop("scored_on")
        best["val_bpc"] = 0.01                   # far below anything the model scores
    _set_best(run_dir, old_prefix_score)
    rescored = _best_score(run_dir, 96)
    logs = []
    summary = train(_tiny_config(corpus, 30), out=run_dir, resume=True, explicit=("steps",), progress=False,
                    log=logs.append)
    line = next(m for m in logs if "rescored" in m)
    assert f"best (step {old_step}) rescored on 96 characters spread over the" in line
    assert "it was val 0.010 bpc on the first 96 held-out characters" in line
    final = [json.loads(r) for r in open(os.path.join(run_dir, "metrics.jsonl"))][-1]
    want = min((rescored, old_step), (final["val_bpc"], 30))
    assert summary["best"]["val_bpc"] == pytest.approx(want[0], abs=1e-5) and summary["best"]["step"] == want[1]
    assert summary["best"]["val_bpc"] > 1.0
    assert summary["best"]["scored_on"] == saved["scored_on"]
    assert checkpoint.load(os.path.join(run_dir, "last"))[0]["metrics"]["best"] == summary["best"]


def test_a_best_scored_as_now_is_kept_and_another_eval_chars_is_rescored(tmp_path, corpus):
    from tinyrnn.train import train

    run_dir = str(tmp_path / "run")
    train(_tiny_config(corpus, 20), out=run_dir, progress=False, log=lambda m: None)
    logs = []
    train(_tiny_config(corpus, 21), out=run_dir, resume=True, explicit=("steps",), progress=False, log=logs.append)
    assert not any("rescored" in m for m in logs)
    train(_tiny_config(corpus, 22, eval_chars=48), out=run_dir, resume=True, explicit=("steps", "eval_chars"),
          progress=False, log=logs.append)
    assert any("rescored on 48 characters spread over the" in m and "on 96 characters spread" in m for m in logs)


def test_an_unmarked_best_that_scores_the_same_again_is_marked_quietly(tmp_path, corpus):
    """Runs saved between the spread sample (83547e8) and its marker: rescoring finds their own score."""
    from tinyrnn.train import train

    run_dir = str(tmp_path / "run")
    train(_tiny_config(corpus, 20), out=run_dir, progress=False, log=lambda m: None)
    before = checkpoint.load(os.path.join(run_dir, "last"))[0]["metrics"]["best"]
    _set_best(run_dir, lambda best: best.pop("scored_on"))
    logs = []
    summary = train(_tiny_config(corpus, 20), out=run_dir, resume=True, progress=False, log=logs.append)
    assert not any("rescored" in m for m in logs)
    assert summary["best"] == before == checkpoint.load(os.path.join(run_dir, "last"))[0]["metrics"]["best"]
    assert any(m == "note: the run has already trained its 20 steps (--steps 20); give a larger --steps to train "
                    "it further" for m in logs)


def test_an_unreadable_best_is_replaced_by_the_next_validation(tmp_path, corpus):
    from tinyrnn.train import train

    run_dir = str(tmp_path / "run")
    train(_tiny_config(corpus, 20), out=run_dir, progress=False, log=lambda m: None)
    _set_best(run_dir, lambda best: best.pop("scored_on"))
    with open(os.path.join(run_dir, "best.npz"), "r+b") as f:
        f.write(b"garbage" * 8)
    logs = []
    summary = train(_tiny_config(corpus, 30), out=run_dir, resume=True, explicit=("steps",), progress=False,
                    log=logs.append)
    assert any(m.startswith("warning: cannot rescore the best checkpoint (") for m in logs)
    assert summary["best"]["step"] == 30
    assert checkpoint.load(os.path.join(run_dir, "best"))[0]["step"] == 30
