"""A training loss that climbs away from its lowest: the run goes back to ``best`` with half the learning
rate (``Trainer.check_rise`` / ``roll_back``), at most ROLLBACKS times, then stops with one line.

The rise is injected, not waited for: from a chosen step every update is followed by Gaussian noise on
the weights (seeded by the step), which drives a tiny model's loss up within a few windows, as a
diverging run's does (measured on a real one: BENCHMARKS.md). ``once`` stops the injection after the
first roll-back, as a lower learning rate stops a real divergence.
"""
import json

import numpy as np
import pytest

from tinyrnn import checkpoint, trainer
from tinyrnn.trainer import ROLLBACKS
from _cli import ok, one_line_error, run
from test_cli import TEXT
from test_resume import assert_same_run, interrupt_at

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16", "--lr", "0.03",
        "--eval-every", "10", "--save-every", "1000", "--quiet"]
RISE_FROM = 120            # the model has learned by then (lowest window ~0.78 bits/char), best at step 120


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def noisy(real_step, once):
    """``Trainer.train_step`` followed, from update RISE_FROM + 1 on, by noise (sd 0.1, seeded by the
    step) on every weight; with ``once``, only until the run has rolled back. (Also installed by
    test_distributed.py's MPI run.)"""
    def train_step(self):
        out = real_step(self)
        if self.step > RISE_FROM and not (once and self.history.get("rollbacks", 0)):
            rng = np.random.default_rng(self.step)
            for p in self.params:
                p.numpy()[...] += rng.normal(0.0, 0.1, p.shape).astype(p.numpy().dtype)
        return out

    return train_step


def inject_rise(monkeypatch, once):
    monkeypatch.setattr(trainer.Trainer, "train_step", noisy(trainer.Trainer.train_step, once))


def rows(out):
    with open(out / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_a_rising_loss_goes_back_to_best_with_half_the_learning_rate(tmp_path, corpus, monkeypatch):
    inject_rise(monkeypatch, once=True)
    out = tmp_path / "run"
    r = ok("train", corpus, *TINY, "--steps", "240", "--out", out)
    said = [line for line in r.stderr.splitlines() if "back to the best checkpoint" in line]
    assert len(said) == 1 and "training loss rose to" in said[0] and "bits/char" in said[0], r.stderr
    assert f"(step {RISE_FROM})" in said[0] and "halved to 0.015" in said[0] and "1 of at most 3" in said[0]
    logged = rows(out)
    events = [row for row in logged if "rolled_back_from" in row]
    assert len(events) == 1 and events[0]["step"] == RISE_FROM and events[0]["new_lr"] == 0.015
    assert RISE_FROM < events[0]["rolled_back_from"] <= RISE_FROM + 10 * 4     # a few windows after the rise
    steps = [row["step"] for row in logged]
    assert steps == sorted(steps), steps              # the risen windows are gone: one history, from best on
    meta, _ = checkpoint.load(out / "last")
    assert meta["step"] == 240 and meta["train_config"]["lr"] == 0.015 and meta["metrics"]["rollbacks"] == 1
    losses = [row["loss_bpc"] for row in logged if "loss_bpc" in row]
    assert losses[-1] < 1.5 * meta["metrics"]["lowest_train_loss"]     # it trained on, healthy
    assert max(row["lr"] for row in logged if "lr" in row and row["step"] > RISE_FROM) <= 0.015


def test_a_run_that_rolled_back_resumes_exactly(tmp_path, corpus, monkeypatch):
    """Everything a roll-back changes is in the checkpoint: a run stopped after it (and one stopped in
    the middle of the rise, its risen windows counted so far) continues as the straight run does."""
    inject_rise(monkeypatch, once=True)
    args = [corpus, *TINY, "--steps", "240"]
    ok("train", *args, "--out", tmp_path / "straight")
    for stop_at in (200, 140, 145):                  # 145: in the middle of a log window, mid-rise
        split = tmp_path / f"split{stop_at}"
        restore = interrupt_at(monkeypatch, stop_at)
        r = run("train", *args, "--out", split)
        restore()
        assert r.exit_code == 130 and f"interrupted at step {stop_at}" in r.stderr, (r.stdout, r.stderr)
        ok("train", "--resume", "--out", split, "--quiet")
        assert_same_run(tmp_path / "straight", split)


def test_a_loss_that_keeps_rising_stops_after_the_last_roll_back(tmp_path, corpus, monkeypatch):
    inject_rise(monkeypatch, once=False)
    out = tmp_path / "run"
    r = run("train", corpus, *TINY, "--steps", "240", "--out", out)
    line = one_line_error(r, "training loss rose to", f"stopped after {ROLLBACKS} roll-backs",
                          f"{out / 'best'} (step {RISE_FROM})", "--lr", alone=False)
    went_back = [x for x in r.stderr.splitlines() if "back to the best checkpoint" in x]
    assert len(went_back) == ROLLBACKS, r.stderr
    assert "below 0.00375" in line                     # 0.03 halved three times, and it rose again
    assert checkpoint.load(out / "last")[0]["metrics"]["rollbacks"] == ROLLBACKS


def test_a_run_without_validation_has_no_best_to_go_back_to(tmp_path, corpus, monkeypatch):
    inject_rise(monkeypatch, once=False)
    r = run("train", corpus, *TINY, "--val-frac", "0", "--steps", "240", "--out", tmp_path / "run")
    one_line_error(r, "training loss rose to", "no best checkpoint to go back to", "--lr", alone=False)


def test_a_run_that_does_not_rise_is_unchanged(tmp_path, corpus):
    """The check only watches: a healthy run never rolls back, and its history says so."""
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "240", "--out", out)
    meta, _ = checkpoint.load(out / "last")
    assert "rollbacks" not in meta["metrics"] and meta["metrics"]["rise_windows"] == 0
    assert not any("rolled_back_from" in row for row in rows(out))


@pytest.mark.parametrize("field,value", [
    ("lowest_train_loss", "low"), ("rise_windows", -1), ("rollbacks", 1.5), ("explode_windows", True),
    ("window_loss", -0.5), ("window_loss", float("nan")), ("window_steps", "3")])
def test_a_damaged_loop_record_is_one_line(tmp_path, corpus, field, value):
    """The counts the loop keeps across steps (the checks' windows, the open log window), hand-edited."""
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "20", "--out", out)
    meta, arrays = checkpoint.load(out / "last")
    meta["metrics"][field] = value
    checkpoint.save(str(out / "last"), arrays, meta)
    one_line_error(run("train", "--resume", "--out", out, "--steps", "30"), f"metrics.{field}")
