"""A first run's kernels compiled in parallel processes (kernels/precompile.py, signatures.json)."""
import json
import os
import subprocess
import sys

import pytest

from tinyrnn.kernels import precompile


def _kernels(entries):
    return [entry[:3] for entry in entries]


@pytest.mark.parametrize("name", sorted(precompile.WORKLOADS))
def test_the_manifest_has_each_workloads_kernels_and_argument_types(name):
    """Each workload's commands call exactly the kernels the manifest lists for it, with those
    argument types, in that order: else its first run compiles them one at a time."""
    manifest = precompile.load_manifest()
    assert _kernels(precompile.record(name, cold=False)) == _kernels(manifest[name]), (
        f"signatures.json is out of date for {name}: run `python -m tinyrnn.kernels.precompile --record`")
    assert all(seconds >= 0 for *_, seconds in manifest[name])


def test_argument_types_round_trip_through_json():
    from numba import types

    sig = (types.Array(types.float32, 3, "A", readonly=True), types.int64, types.boolean,
           types.UniTuple(types.int64, 2), types.float64, types.Array(types.uint16, 2, "C"),
           types.Tuple([types.Array(types.float32, 2, "C"), types.Array(types.uint16, 1, "C")]))
    encoded = json.loads(json.dumps([precompile._encoded(t) for t in sig]))
    assert precompile._types(encoded) == sig
    with pytest.raises(TypeError, match="cannot record"):
        precompile._encoded(types.unicode_type)


def test_the_manifest_is_written_one_entry_a_line(tmp_path):
    manifest = {"w": [["m", "k", [["array", "float32", 2, "C", False], "int64"], 1.5], ["m", "j", [], 0.1]]}
    precompile.write_manifest(manifest, tmp_path / "s.json")
    assert precompile.load_manifest(tmp_path / "s.json") == manifest
    assert len((tmp_path / "s.json").read_text().splitlines()) == 6


def test_share_gives_each_process_about_equal_seconds():
    entries = [["m", name, [], seconds] for name, seconds in
               [("gemm", 17.0), ("forward", 11.0), ("backward", 8.0), ("a", 1.0), ("b", 0.5), ("c", 0.5)]]
    groups = precompile.share(entries, 2)
    assert sorted(sum(e[3] for e in g) for g in groups) == [19.0, 19.0]
    assert sorted(e[1] for g in groups for e in g) == sorted(e[1] for e in entries)
    assert [len(g) for g in precompile.share(entries[:1], 3)] == [1, 0, 0]


_COLD_FIRST_STEP = """
import json, subprocess, sys
from numba.core import event
from tinyrnn.kernels import precompile

started = []
popen = subprocess.Popen
def counted(*args, **kws):
    started.append(args[0])
    return popen(*args, **kws)
subprocess.Popen = counted
precompile.precompile(sys.argv[1], processes=2)
subprocess.Popen = popen
missing_after = len(precompile.missing(sys.argv[1]))

compiled = []
class Listener(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Listener())
from tinyrnn_cli.main import cli
for command in json.loads(sys.argv[2]):
    assert cli.main(args=command, standalone_mode=False) == 0, command
print(json.dumps({"children": len(started), "missing": missing_after, "compiled": compiled}))
"""


def test_a_cold_first_step_finds_every_kernel_compiled_by_the_processes(tmp_path):
    """With an empty cache, precompile shares the workload's kernels between two children; the
    first training step, and the sampling after it, then compile nothing, and train the same weights,
    bit for bit, as the same command run again on the now warm cache (kernels compiled in the
    process that ran them trained other last bits: their calls bound to other copies of helpers)."""
    corpus = precompile._write_data(tmp_path)["TEXT"]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), TINYRNN_PRECOMPILE="0")
    args = ["train", corpus, "--steps", "2", "--cell", "gru", "--hidden", "32", "--layers", "1"]
    cold = [args + ["--out", str(tmp_path / "cold")], ["sample", str(tmp_path / "cold"), "--length", "20"]]
    r = subprocess.run([sys.executable, "-c", _COLD_FIRST_STEP, "train-gru", json.dumps(cold)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report == {"children": 2, "missing": 0, "compiled": []}

    warm = subprocess.run([sys.executable, "-m", "tinyrnn_cli.main", *args, "--out", str(tmp_path / "warm")],
                          env=env, capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr[-3000:]
    from tinyrnn import checkpoint

    cold, warm = (checkpoint.load(tmp_path / run / "last")[1] for run in ("cold", "warm"))
    assert sorted(cold) == sorted(warm) and len(cold) > 10
    assert [name for name in cold if cold[name].tobytes() != warm[name].tobytes()] == []


def test_one_child_on_one_core_and_none_when_all_is_cached(monkeypatch):
    """On one core the kernels still compile in a child (this process then loads them, as any later
    run does); nothing starts for an unknown workload or when all is cached."""
    started = []
    monkeypatch.setattr(precompile.subprocess, "Popen", lambda *a, **k: started.append(a[0]) or Done())
    precompile.precompile("no-such-workload", processes=4)
    assert started == []
    cached = []
    monkeypatch.setattr(precompile, "missing", lambda name, manifest=None: [] if name in cached else
                        [["m", k, [], 10.0] for k in "ab"])
    precompile.precompile("w", processes=1)
    assert len(started) == 1 and [e[1] for e in json.loads(started[0][-1])] == ["a", "b"]
    cached.append("w")
    precompile.precompile("w", processes=4)
    assert len(started) == 1                                # all cached: nothing started


class Done:
    """A child that has already finished."""
    def wait(self):
        return 0

    def poll(self):
        return 0


def test_each_task_names_its_workload():
    from types import SimpleNamespace

    from tinyrnn.tagging.task import TaggerTask
    from tinyrnn.train import CharTask

    manifest = precompile.load_manifest()
    for Task, cfg, name in [(CharTask, dict(cell="gru", bidir=True), "fill-gru"),
                            (CharTask, dict(cell="lstm", bidir=False), "train-lstm"),
                            (TaggerTask, dict(cell="rnn"), "tag-rnn")]:
        task = Task.__new__(Task)
        task.cfg = SimpleNamespace(**cfg)
        assert task.kernel_workload() == name and name in manifest


def test_a_manifest_that_does_not_fit_the_code_is_passed_over(monkeypatch, tmp_path):
    """A head start, never a failure: an unreadable manifest, a kernel it names that is gone, types
    a kernel no longer takes: precompile returns, and the step compiles as without it."""
    started = []
    monkeypatch.setattr(precompile.subprocess, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.setattr(precompile, "MANIFEST", tmp_path / "missing.json")
    precompile.precompile("train-lstm", processes=2)
    assert started == []
    broken = {"w": [["tinyrnn.kernels.cpu.elementwise", "no_such_kernel", ["int64"], 9.0],
                    ["tinyrnn.kernels.cpu.elementwise", "scale_inplace", ["no_such_type"], 9.0]]}
    precompile.precompile("w", processes=2, manifest=broken)
    precompile.compile_entries([["tinyrnn.kernels.cpu.elementwise", "scale_inplace", ["bool", "bool"], 1.0]])


def test_a_second_ctrl_c_kills_the_children(monkeypatch):
    """The children run in sessions of their own (a Ctrl-C asks the trainer to stop after its first
    step, which needs their kernels); when this process gives up (a second Ctrl-C), they are killed."""
    children = []
    real_popen = subprocess.Popen

    class Interrupted(real_popen):
        def wait(self, timeout=None):
            if len(pressed) == 0:
                pressed.append(1)
                raise KeyboardInterrupt           # the second Ctrl-C, while this process waits
            return super().wait(timeout)

    pressed = []

    def sleeper(args, **kws):
        children.append(Interrupted([sys.executable, "-c", "import time; time.sleep(60)"], **kws))
        return children[-1]

    monkeypatch.setattr(precompile.subprocess, "Popen", sleeper)
    monkeypatch.setattr(precompile, "missing", lambda name, manifest: [["m", k, [], 10.0] for k in "abc"])
    with pytest.raises(KeyboardInterrupt):
        precompile.precompile("w", processes=3)
    assert len(children) == 3 and all(child.poll() is not None for child in children)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_the_kernels_compile(tmp_path, monkeypatch, presses):
    """Once: the run stops after its first step and saves it (exit 130), as a Ctrl-C during a cold
    first step always did. Twice: one line says nothing was saved, no traceback."""
    import signal

    from tinyrnn import checkpoint
    from tinyrnn.errors import TinyRNNError
    from tinyrnn.train import TrainConfig, train

    def press_ctrl_c(name, processes=None, manifest=None):
        assert name == "train-gru"
        for _ in range(presses):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(precompile, "precompile", press_ctrl_c)
    monkeypatch.delenv("TINYRNN_PRECOMPILE", raising=False)
    corpus = precompile._write_data(tmp_path)["TEXT"]
    cfg = TrainConfig(corpus=corpus, cell="gru", hidden=16, layers=1, embed=8, batch_size=4, seq_len=16,
                      steps=50, eval_every=100, save_every=100)
    if presses == 1:
        summary = train(cfg, out=str(tmp_path / "run"), progress=False, log=lambda line: None)
        assert summary["stopped"] == "interrupted" and summary["exit_code"] == 130
        assert checkpoint.load(tmp_path / "run" / "last")[0]["step"] == 1
    else:
        with pytest.raises(TinyRNNError, match="interrupted again at step 0: stopped without saving"):
            train(cfg, out=str(tmp_path / "run"), progress=False, log=lambda line: None)
