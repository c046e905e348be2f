"""Issue 12: no run is ever lost, and no input gets an unexpected error.

Failures are injected, not only read about: a kill at every write and rename of a save (simulated
in-process for every position, and with a real ``os._exit`` in a subprocess for some), two
processes on one run directory, SIGTERM and double Ctrl-C, every field of a checkpoint's metadata
corrupted in turn, and every bad option. Models are tiny (hidden 16, 1 layer, a few steps).
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from tinyrnn import checkpoint

from _cli import CLI_MODULE, ROOT, env, ok, one_line_error, run   # the CLI under test
from test_cli import TEXT                                             # the shared corpus

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
        "--eval-every", "2", "--save-every", "2", "--quiet"]


def fails(args, *needles):
    """The command fails with one error line mentioning every needle; other lines may come before it."""
    return one_line_error(run(*args), *needles, alone=False)


def snapshot(directory):
    """{name: bytes} of a run directory's files (the lock file aside: it records the last pid)."""
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))
            if n != ".lock"}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture
def trained(tmp_path, corpus):
    out = tmp_path / "run"
    ok("train", corpus, *TINY, "--steps", "4", "--out", out)
    return out


# ----------------------------------------------------------------------------- 1. kills during a save

class Killed(BaseException):
    """Unwinds the training process at the simulated kill (after the disk state was copied)."""


def kill_at(monkeypatch, k, run_dir, snap_dir):
    """Make the k-th ``os.write``/``os.replace``/``os.rename`` of the checkpoint code copy the run
    directory as it is on disk at that instant (what a kill would leave) to ``snap_dir``, then raise."""
    calls = [0]
    fake = types.ModuleType("os")
    fake.__dict__.update(os.__dict__)

    def wrap(real):
        def patched(*a, **kw):
            calls[0] += 1
            if calls[0] == k:
                shutil.copytree(run_dir, snap_dir)
                raise Killed
            return real(*a, **kw)
        return patched

    for name in ("write", "replace", "rename"):
        setattr(fake, name, wrap(getattr(os, name)))
    monkeypatch.setattr(checkpoint, "os", fake)
    return calls


def assert_recoverable(snap, corpus, resume_steps):
    """A run left by a kill resumes (or, killed before its first save, starts again) and samples."""
    if checkpoint.exists(os.path.join(snap, "last")):
        ok("train", "--resume", "--out", snap, "--steps", str(resume_steps), "--quiet")
    else:
        fails(["train", "--resume", "--out", snap], "nothing to resume", "without --resume")
        ok("train", corpus, *TINY, "--steps", "1", "--out", snap)
    ok("sample", snap, "--length", "5", "--seed", "1")
    assert not [n for n in os.listdir(snap) if n.endswith(".tmp")], os.listdir(snap)   # temp files cleaned


@pytest.mark.parametrize("phase", ["fresh", "resume"])
def test_a_kill_at_every_write_and_rename_leaves_a_run_that_resumes(tmp_path, corpus, monkeypatch, phase):
    base = tmp_path / "base"
    if phase == "resume":
        ok("train", corpus, *TINY, "--steps", "2", "--out", base)
    args = (["train", corpus, *TINY, "--steps", "2"] if phase == "fresh"
            else ["train", "--resume", "--steps", "4", "--quiet"])
    k, positions = 1, 0
    while True:
        run_dir, snap = tmp_path / f"run{k}", tmp_path / f"snap{k}"
        if phase == "resume":
            shutil.copytree(base, run_dir)
        with monkeypatch.context() as m:
            calls = kill_at(m, k, run_dir, snap)
            try:
                r = run(*args, "--out", run_dir)
            except Killed:
                r = None
        if not snap.exists():                   # the run finished before the k-th call: every point covered
            assert r is not None and r.exit_code == 0 and calls[0] < k, r and r.output
            break
        assert r is None
        assert_recoverable(snap, corpus, 6)
        k, positions = k + 1, positions + 1
    assert positions >= 10                      # step-0 save, periodic/best saves, the final save (+ metrics)


@pytest.mark.parametrize("k", [1, 2, 6])
def test_a_real_kill_in_a_subprocess(tmp_path, corpus, k):
    """The same with a real process death (``os._exit`` at the k-th write/rename: no cleanup at all)."""
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "tests", "_inject.py"), str(k), "train", corpus, *TINY,
           "--steps", "2", "--out", str(out)]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 137, r.stderr
    assert_recoverable(out, corpus, 4)


def test_concurrent_reads_never_fail(trained):
    """Loads while another thread saves over and over: every one succeeds (one read of one file)."""
    import threading

    meta, arrays = checkpoint.load(trained / "last")
    stop, errors, loads = threading.Event(), [], [0]

    def writer():
        i = 0
        while not stop.is_set():
            checkpoint.save(str(trained / "last"), arrays, {**meta, "step": i})
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                checkpoint.load(trained / "last")
                loads[0] += 1
            except Exception as e:               # noqa: BLE001
                errors.append(e)
    finally:
        stop.set()
        t.join()
    assert loads[0] > 20 and not errors, errors[:3]


def test_temp_files_from_a_kill_are_removed_and_ignored(trained):
    junk = trained / ".last.npz.abc123.tmp"
    junk.write_bytes(b"half a checkpoint")
    ok("sample", trained, "--length", "3")                 # a reader ignores it
    ok("train", "--resume", "--out", trained, "--steps", "6", "--quiet")
    assert not junk.exists()


def test_sample_falls_back_to_last_when_best_is_unreadable(trained):
    (trained / "best.npz").write_bytes(b"garbage")
    r = ok("sample", trained, "--length", "5")
    assert "warning:" in r.stderr and "last" in r.stderr and "best" in r.stderr
    r = ok("eval", trained / "best", trained.parent / "corpus.txt")
    assert "using" in r.stderr
    (trained / "last.npz").write_bytes(b"garbage too")
    fails(["sample", trained], "corrupt")


def test_old_two_file_runs_still_load_and_resume(trained):
    """A run written by the old layout (arrays-only .npz + .json with its SHA-256) samples and resumes."""
    import hashlib
    import io

    for name in ("last", "best"):
        meta, arrays = checkpoint.load(trained / name)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        meta.update(version=1, weights_sha256=hashlib.sha256(data).hexdigest())
        (trained / f"{name}.npz").write_bytes(data)
        (trained / f"{name}.json").write_text(json.dumps(meta))
    ok("sample", trained, "--length", "5")
    ok("train", "--resume", "--out", trained, "--steps", "6", "--quiet")
    assert checkpoint.load(trained / "last")[0]["version"] == checkpoint.VERSION


def test_files_follow_the_umask(tmp_path, corpus):
    for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            out = tmp_path / f"run{mask:o}"
            ok("train", corpus, *TINY, "--steps", "2", "--out", out)
        finally:
            os.umask(old)
        for name in ("last.npz", "last.json", "best.npz", "metrics.jsonl", ".lock"):
            assert os.stat(out / name).st_mode & 0o777 == mode, (name, oct(os.stat(out / name).st_mode))


# ----------------------------------------------------------------------------- 2. one run per directory

def start_training(corpus, out, *extra):
    cmd = [sys.executable, "-m", CLI_MODULE, "train", corpus, *TINY, "--steps", "1000000", "--save-every",
           "1000000", "--eval-every", "1000000", "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.communicate())


def test_two_runs_in_one_directory_and_sigterm(tmp_path, corpus):
    out = tmp_path / "same"
    a = start_training(corpus, out)
    try:
        fails(["train", corpus, *TINY, "--steps", "2", "--out", out], "in use", f"process {a.pid}")
        fails(["train", "--resume", "--out", out, "--steps", "2"], "in use", f"process {a.pid}")
        a.send_signal(signal.SIGTERM)                     # what kill / timeout / schedulers send
        stdout, stderr = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 143, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    meta, _ = checkpoint.load(out / "last")
    assert meta["step"] >= 10
    ok("train", "--resume", "--out", out, "--steps", str(meta["step"] + 1), "--quiet")   # the lock went with A


def test_a_second_signal_during_the_save_does_not_lose_it(tmp_path, corpus, monkeypatch):
    from tinyrnn import trainer
    from tinyrnn.train import TrainConfig, train

    real_save, calls, messages = checkpoint.save, [], []

    def save_with_a_signal(stem, arrays, meta):
        calls.append(meta["step"])
        if meta["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)          # the user presses Ctrl-C twice, fast
            time.sleep(0.05)
        return real_save(stem, arrays, meta)

    def step_with_a_signal(self):
        result = real_step(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        return result

    real_step = trainer.Trainer.train_step
    monkeypatch.setattr(checkpoint, "save", save_with_a_signal)
    monkeypatch.setattr(trainer.Trainer, "train_step", step_with_a_signal)
    cfg = TrainConfig(corpus=corpus, hidden=16, layers=1, embed=8, batch_size=4, seq_len=16, steps=100,
                      eval_every=100, save_every=100)
    summary = train(cfg, out=str(tmp_path / "run"), progress=False, log=messages.append)
    assert summary["stopped"] == "interrupted" and summary["exit_code"] == 130
    assert any("still saving" in m for m in messages), messages
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.load(tmp_path / "run" / "last")[0]["step"] == 3


def test_a_signal_that_lands_while_the_ranks_agree_is_not_dropped(tmp_path, corpus, monkeypatch):
    """The race behind a Ctrl-C on mpiexec that was lost 1 run in 8: the signal arrives while the
    ranks agree on stopping (its handler ran inside the allreduce, after the input was taken), the
    agreement says "go on", and the loop used to overwrite the flag the handler had just set."""
    from tinyrnn import distributed
    from tinyrnn.train import TrainConfig, train

    calls = []

    def agree_with_a_signal_inside(self, stop, elapsed):
        calls.append(stop)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)          # handled before this returns the old answer
            time.sleep(0.05)
        return stop, elapsed

    monkeypatch.setattr(distributed.Single, "agree", agree_with_a_signal_inside)
    cfg = TrainConfig(corpus=corpus, hidden=16, layers=1, embed=8, batch_size=4, seq_len=16, steps=100,
                      eval_every=100, save_every=100)
    summary = train(cfg, out=str(tmp_path / "run"), progress=False, log=lambda m: None)
    assert calls[:3] == [False, False, False] and calls[3] is True     # agreed on at the next step
    assert summary["stopped"] == "interrupted" and summary["exit_code"] == 130
    assert checkpoint.load(tmp_path / "run" / "last")[0]["step"] == 4


def test_a_second_signal_outside_a_save_says_nothing_was_saved(tmp_path, corpus, monkeypatch):
    from tinyrnn import trainer

    real_step = trainer.Trainer.train_step

    def step_with_two_signals(self):
        result = real_step(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        return result

    monkeypatch.setattr(trainer.Trainer, "train_step", step_with_two_signals)
    r = run("train", corpus, *TINY, "--steps", "100", "--out", tmp_path / "run")
    line = one_line_error(r, "interrupted again", "without saving", "(step 2)", "--resume", alone=False)
    assert r.exit_code == 130, line


# ----------------------------------------------------------------------------- 3. resume on other data

def test_resume_on_changed_data_stops_unless_allowed(trained, corpus):
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("the tide turns. ")
    before = snapshot(trained)
    fails(["train", "--resume", "--out", trained, "--steps", "6"], "not the text the run was trained on",
          "--allow-changed-data")
    assert snapshot(trained) == before
    r = ok("train", "--resume", "--out", trained, "--steps", "6", "--allow-changed-data", "--quiet")
    assert "warning:" in r.stderr
    meta, _ = checkpoint.load(trained / "last")
    assert meta["data"]["bytes"] == os.path.getsize(corpus) and "allow_changed_data" not in meta["train_config"]
    ok("train", "--resume", "--out", trained, "--steps", "8", "--quiet")     # the new text is now the run's


# ----------------------------------------------------------------------------- 4. names that are not UTF-8

@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in a name")
def test_a_corpus_name_that_is_not_utf8(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9-\xff.txt")
    with open(name, "w", encoding="utf-8") as f:
        f.write(TEXT)
    out = tmp_path / "run"
    ok("train", name, *TINY, "--steps", "2", "--out", out)
    meta, _ = checkpoint.load(out / "last")
    assert os.fsencode(meta["train_config"]["corpus"]) == os.fsencode(os.path.abspath(name))   # round-trips
    json.loads((out / "last.json").read_bytes().decode("utf-8"))                  # the copy is valid UTF-8
    ok("train", "--resume", "--out", out, "--steps", "4", "--quiet")
    ok("sample", out, "--length", "5")


# ----------------------------------------------------------------------------- 5. every input, one line

TRAIN_BAD = [
    (["--seed", "-1"], "--seed"), (["--threads", "1000000"], "--threads"), (["--epochs", "inf"], "--epochs"),
    (["--epochs", "nan"], "--epochs"), (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"),
    (["--clip", "inf"], "--clip"), (["--dropout", "nan"], "--dropout"), (["--val-frac", "1"], "--val-frac"),
    (["--time-limit", "-3"], "--time-limit"), (["--hidden", "200000"], "needs about"),
    (["--hidden", "0"], "--hidden"), (["--warmup", "-1"], "--warmup"), (["--steps", "0"], "--steps"),
    (["--save-every", "0"], "--save-every"), (["--layers", "-1"], "--layers"),
]


@pytest.mark.parametrize("extra,needle", TRAIN_BAD, ids=[" ".join(e) for e, _ in TRAIN_BAD])
def test_bad_train_options(tmp_path, corpus, extra, needle):
    out = tmp_path / "run"
    fails(["train", corpus, *TINY, "--steps", "2", *extra, "--out", out], needle)
    assert not out.exists()                               # no empty run directory left behind


def test_threads_beyond_the_machine(tmp_path, corpus):
    fails(["train", corpus, *TINY, "--steps", "2", "--threads", "1000", "--out", tmp_path / "r"], "--threads")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,needle", [
    (["sample", "{run}", "--temperature", "nan"], "--temperature"), (["sample", "{run}", "--seed", "-1"], "--seed"),
    (["sample", "{run}", "--temperature", "-1"], "--temperature"), (["sample", "{run}", "--top-p", "nan"], "--top-p"),
    (["sample", "{run}", "--top-k", "0"], "--top-k"), (["sample", "{run}", "--length", "-2"], "--length"),
    (["fill", "{run}", "a_c", "--temperature", "-1"], "--temperature"),
    (["fill", "{run}", "a_c", "--temperature", "nan"], "--temperature"),
    (["fill", "{run}", "a_c", "--sweeps", "0"], "--sweeps"), (["fill", "{run}", "a_c", "--sweeps", "-3"], "--sweeps"),
    (["fill", "{run}", "a_c", "--seed", "-1"], "--seed"),
    (["eval", "{run}", "{corpus}", "--seq-len", "0"], "--seq-len"),
])
def test_bad_sample_eval_fill_options(trained, corpus, args, needle):
    fails([a.format(run=trained, corpus=corpus) for a in args], needle)


def test_prime_with_unseen_characters_prints_nothing(trained):
    r = run("sample", trained, "--prime", "the Zebra", "--length", "5")
    one_line_error(r, "never saw", "'Z'", alone=False)
    assert r.stdout == ""


def test_an_exploding_loss_is_caught(tmp_path, corpus):
    fails(["train", corpus, *TINY, "--lr", "1e6", "--warmup", "0", "--steps", "200", "--out", tmp_path / "r"],
          "exploded", "uniform guess", "--lr")


def test_an_explosion_stopped_half_way_is_caught_at_the_same_step_after_resuming(tmp_path, corpus, monkeypatch):
    """The exploding windows counted before a Ctrl-C are in the checkpoint: the resumed run stops
    where the straight run did, not after three more windows."""
    from test_resume import interrupt_at

    args = ["train", corpus, *TINY, "--lr", "1e6", "--warmup", "0", "--steps", "200", "--out"]
    straight = fails([*args, tmp_path / "straight"], "exploded")
    at = int(straight.split(" at step ")[1].split(",")[0])
    assert at >= 30, straight                            # three log windows of 10
    restore = interrupt_at(monkeypatch, at - 15)         # one exploding window counted, the next half run
    r = run(*args, tmp_path / "split")
    restore()
    assert r.exit_code == 130, (r.stdout, r.stderr)
    resumed = fails(["train", "--resume", "--out", tmp_path / "split"], "exploded")
    assert resumed == straight.replace(str(tmp_path / "straight"), str(tmp_path / "split"))


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: None, "Not a directory"),
])
def test_out_that_cannot_be_a_directory(tmp_path, corpus, make, needle):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if needle == "is a file" else blocker / "run"
    fails(["train", corpus, *TINY, "--steps", "2", "--out", out], needle, str(out))


@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "free some disk space"), (errno.EROFS, "writable")])
def test_a_full_or_read_only_disk_is_one_line(tmp_path, corpus, monkeypatch, code, needle):
    def broken(path, data):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(checkpoint, "atomic_write", broken)
    fails(["train", corpus, *TINY, "--steps", "2", "--out", tmp_path / "r"], "cannot write checkpoint",
          errno.errorcode[code], needle)

    def no_dirs(path, *a, **k):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(os, "makedirs", no_dirs)
    fails(["train", corpus, *TINY, "--steps", "2", "--out", tmp_path / "r2"], "cannot create the run directory")


def test_resume_below_the_current_step_changes_nothing(trained):
    before = snapshot(trained)
    fails(["train", "--resume", "--out", trained, "--steps", "2"], "at step 4", "--steps 4 or more")
    assert snapshot(trained) == before


def test_train_from_a_pipe(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", CLI_MODULE, "train", "/dev/stdin", *TINY, "--steps", "2", "--out", str(out)]
    r = subprocess.run(cmd, input=TEXT, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert checkpoint.load(out / "last")[0]["data"]["bytes"] == len(TEXT.encode())
    r = subprocess.run(cmd[:5] + [*TINY, "--steps", "2", "--out", str(tmp_path / "r2")], input="", env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "is empty" in r.stderr and "unexpected" not in r.stderr


def rewrite_meta(stem, change):
    """Apply ``change(meta)`` to the metadata inside ``stem.npz`` (a hand edit)."""
    meta, arrays = checkpoint.load(stem)
    change(meta)
    meta.pop("format"), meta.pop("version")
    data, _ = checkpoint.build(arrays, meta)
    open(str(stem) + ".npz", "wb").write(data)


def corruptions(meta):
    """(label, change) for every field of the metadata (top level and the training config): missing,
    of the wrong type, negative, huge."""
    out = []
    keys = [(k,) for k in meta if k not in ("format", "version", "weights", "note")]
    keys += [("train_config", k) for k in meta["train_config"]]
    keys += [("optimizer", k) for k in meta["optimizer"]] + [("schedule", "t"), ("model", "vocab_size"),
                                                              ("model", "hidden"), ("metrics", "best"),
                                                              ("metrics", "best", "scored_on")]
    for path in keys:
        original = meta
        for key in path:
            original = original.get(key) if isinstance(original, dict) else None
        other_type = 5 if isinstance(original, str) else "text"
        for label, value in (("missing", KeyError), ("wrong type", other_type), ("negative", -5),
                             ("huge", 10 ** 30)):
            out.append((f"{'.'.join(path)} {label}", path, value))
    return out


def test_every_corrupted_field_is_one_line_and_changes_nothing(tmp_path, corpus):
    base = tmp_path / "base"
    ok("train", corpus, *TINY, "--steps", "4", "--out", base)
    meta, _ = checkpoint.load(base / "last")
    accepted = []
    for i, (label, path, value) in enumerate(corruptions(meta)):
        out = tmp_path / f"r{i}"
        shutil.copytree(base, out)

        def change(m, path=path, value=value):
            parent = m
            for key in path[:-1]:
                parent = parent[key]
            if value is KeyError:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = value

        rewrite_meta(out / "last", change)
        before = snapshot(out)
        r = run("train", "--resume", "--out", out, "--steps", "6", "--quiet")
        if r.exit_code == 0:
            accepted.append(label)
            continue
        try:
            line = one_line_error(r, alone=False)
        except AssertionError as e:
            raise AssertionError(f"{label}: {e}") from None
        if "Try a lower --lr" in line:          # a valid (if absurd) learning rate: training ran, and diverged
            accepted.append(label)
            continue
        assert snapshot(out) == before, label
    # Only fields whose every value here is a valid setting may be accepted (a seed of 10**30 is a seed;
    # the informational data block is not needed to continue).
    allowed = {"train_config.seed huge", "train_config.warmup huge", "train_config.eval_every huge",
               "train_config.log_every huge", "train_config.save_every huge", "train_config.eval_chars huge",
               "train_config.time_limit huge", "train_config.steps huge", "train_config.epochs huge",
               "train_config.threads huge", "metrics.best missing", "train_config.clip huge",
               "metrics.best.scored_on missing",      # saved before the scoring was recorded
               "train_config.lr huge", "family missing",    # a checkpoint without a family is an old char model
               "processes missing"}     # nor one without a process count: it was trained on one process
    assert set(accepted) <= allowed, sorted(set(accepted) - allowed)


def test_vocabulary_longer_or_shorter_than_the_model(trained):
    for vocab in ("abcdefghijklmnopqrstuvwxyz .,\n!?", "abc"):
        rewrite_meta(trained / "best", lambda m, v=vocab: m.__setitem__("vocab", "".join(sorted(set(v)))))
        fails(["sample", trained / "best", "--length", "5"], "vocabulary")
        rewrite_meta(trained / "last", lambda m, v=vocab: m.__setitem__("vocab", "".join(sorted(set(v)))))
        fails(["sample", trained / "last", "--length", "5"], "vocabulary")


def test_step_minus_five_does_not_empty_metrics(trained):
    rewrite_meta(trained / "last", lambda m: m.__setitem__("step", -5))
    before = snapshot(trained)
    fails(["train", "--resume", "--out", trained, "--steps", "6"], "step is -5")
    assert snapshot(trained) == before and before["metrics.jsonl"]


# ----------------------------------------------------------------------------- 7. the library

def test_backward_twice_without_retain_graph_raises():
    import tinyrnn

    x = tinyrnn.tensor(np.ones(3, np.float32), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        loss.backward()
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()                                  # retained: a second pass is fine
    assert np.allclose(x.grad, 2 + 2 * 2 * np.ones(3))


def test_load_state_dict_checks_everything_before_assigning():
    from tinyrnn import nn

    m = nn.LSTM(3, 4, 2)
    state = {k: v.copy() for k, v in m.state_dict().items()}
    before = {k: v.copy() for k, v in state.items()}
    bad = {k: np.full_like(v, 7.0) for k, v in state.items()}
    last = sorted(bad)[-1]
    bad[last] = np.zeros((9, 9), np.float32)      # a wrong shape on a later key
    with pytest.raises(ValueError, match="shape"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k    # nothing was overwritten


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_recurrent_layers_name_a_dtype_mismatch(cell, dtype):
    import tinyrnn
    from tinyrnn import nn

    layer = getattr(nn, cell)(4, 8)
    with pytest.raises(TypeError, match=f"{np.dtype(dtype).name}.*float32"):
        layer(tinyrnn.Tensor(np.zeros((3, 2, 4), dtype)))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_optimizers_reject_non_finite_hyperparameters(name, bad):
    from tinyrnn import nn, optim

    params = nn.Linear(2, 2).parameters()
    with pytest.raises(ValueError, match="lr|learning rate"):
        getattr(optim, name)(params, lr=bad)
    if name in ("Adam", "AdamW"):
        with pytest.raises(ValueError, match="finite"):
            getattr(optim, name)(params, lr=0.1, eps=float("nan"))
    opt = getattr(optim, name)(params, lr=0.1)
    for make in (lambda: optim.CosineLR(opt, 10, min_lr=float("nan")),
                 lambda: optim.StepLR(opt, 5, gamma=float("inf"))):
        with pytest.raises(ValueError, match="finite"):
            make()
