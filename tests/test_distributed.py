"""Data-parallel training over MPI (``tinyrnn/distributed.py``).

The MPI tests launch ``mpiexec -n 2 tinyrnn train ...`` and compare with a plain one-process run
on the same global batch; they skip (with the reason) where mpiexec or mpi4py is missing
(``pip install -e ".[test]"`` brings both). Models are tiny: a few seconds per run.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyrnn import checkpoint, distributed
from tinyrnn.errors import TinyRNNError
from _cli import CLI_MODULE, ROOT                  # the CLI under test

TEXT = ("the quick brown fox jumps over the lazy dog. a lamp burns by the harbour wall, "
        "and the boats come home when the tide turns.\n") * 20
TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--seq-len", "16", "--eval-every", "4",
        "--save-every", "4", "--threads", "1", "--quiet"]
LAUNCHER_VARS = distributed.SIZE_VARS + distributed.RANK_VARS + distributed.LOCAL_SIZE_VARS


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason="MPI tests need mpiexec and mpi4py: pip install 'tinyrnn[mpi]' (or the test extra)")


def env(**extra):
    """The environment of a plain run: no launcher variables (even if pytest itself runs under one)."""
    e = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def mpirun(n):
    """The launcher's command line for n local processes (Open MPI needs a few more flags)."""
    cmd = [MPIEXEC, "-n", str(n)]
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        cmd += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return cmd


def train(args, processes=None, timeout=180, **extra_env):
    """Run ``tinyrnn train`` (under mpiexec when ``processes`` is given) -> CompletedProcess."""
    cmd = [sys.executable, "-m", CLI_MODULE, "train", *map(str, args)]
    if processes is not None:
        cmd = mpirun(processes) + cmd
    return subprocess.run(cmd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)


def ok(args, processes=None):
    r = train(args, processes)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def losses(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    return [(r["step"], r.get("loss_bpc"), r.get("val_bpc")) for r in rows]


def assert_same_run(a, b, rtol=1e-5, atol=1e-6):
    """Two run directories hold the same weights, optimizer state, carried state and metrics."""
    (meta_a, arr_a), (meta_b, arr_b) = checkpoint.load(os.path.join(a, "last")), checkpoint.load(os.path.join(b, "last"))
    assert meta_a["step"] == meta_b["step"] and sorted(arr_a) == sorted(arr_b)
    worst = 0.0
    for k in arr_a:
        assert arr_a[k].shape == arr_b[k].shape, k
        np.testing.assert_allclose(arr_b[k], arr_a[k], rtol=rtol, atol=atol, err_msg=k)
        worst = max(worst, float(np.abs(arr_a[k].astype(np.float64) - arr_b[k]).max()))
    for (step_a, loss_a, val_a), (step_b, loss_b, val_b) in zip(losses(a), losses(b), strict=True):
        assert step_a == step_b
        for x, y in ((loss_a, loss_b), (val_a, val_b)):
            assert (x is None) == (y is None) and (x is None or abs(x - y) <= 2e-5), (x, y)
    return worst


# ----------------------------------------------------------------------------- no MPI

def test_rows_split_the_batch_exactly():
    for batch in (1, 5, 8, 13):
        for size in range(1, batch + 1):
            parts = [distributed.rows(batch, r, size) for r in range(size)]
            covered = [i for p in parts for i in range(batch)[p]]
            assert covered == list(range(batch))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
    assert distributed.rows(5, 0, 2) == slice(0, 3) and distributed.rows(5, 1, 2) == slice(3, 5)
    with pytest.raises(TinyRNNError, match="smaller than the 4 MPI processes"):
        distributed.rows(3, 0, 4)


def test_launch_detection(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and isinstance(distributed.world(), distributed.Single)
    monkeypatch.setenv("PMI_SIZE", "1")
    assert not distributed.launched()               # mpirun -n 1: nothing to split
    monkeypatch.setenv("PMI_SIZE", "2")
    assert distributed.launched()
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # as if mpi4py were not installed
    with pytest.raises(TinyRNNError, match=r"mpi4py cannot be imported.*tinyrnn\[mpi\]"):
        distributed.world()


def test_plain_run_never_imports_mpi4py(tmp_path, corpus):
    code = ("import sys\n"
            "from tinyrnn.train import TrainConfig, train\n"
            f"cfg = TrainConfig(corpus={corpus!r}, hidden=16, layers=1, embed=8, batch_size=4, seq_len=16, steps=2)\n"
            f"s = train(cfg, out={str(tmp_path / 'run')!r}, progress=False)\n"
            "assert s['step'] == 2 and s['root']\n"
            "print('mpi4py' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


# ----------------------------------------------------------------------------- 1 process == 2 processes

@needs_mpi
@pytest.mark.parametrize("batch", [8, 5])          # equal shards, and unequal ones (3 + 2 streams)
def test_two_processes_train_the_same_model_as_one(tmp_path, corpus, batch):
    args = [corpus, *TINY, "--batch-size", batch, "--steps", 6]
    one, two = tmp_path / "one", tmp_path / "two"
    ok([*args, "--out", one])
    r = ok([*args, "--out", two], processes=2)
    assert r.stdout.count("done: step 6/6") == 1        # rank 0 alone reports
    worst = assert_same_run(one, two)
    print(f"batch {batch}: max |w1 - w2| = {worst:.3g}")
    assert checkpoint.load(two / "last")[0]["processes"] == 2

    # resuming on another number of processes is allowed, says so, and continues the same run
    ok(["--resume", "--out", one, "--steps", 8, "--quiet"])
    r = ok(["--resume", "--out", two, "--steps", 8, "--quiet"])
    assert "trained on 2 processes, continuing on 1 process" in r.stderr
    assert_same_run(one, two)


# ----------------------------------------------------------------------------- failure

@needs_mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job(tmp_path, corpus, how):
    out = tmp_path / "run"
    args = [corpus, *TINY, "--batch-size", 4, "--steps", 1000, "--save-every", 2, "--eval-every", 1000,
            "--out", out]
    start = time.perf_counter()
    r = train(args, processes=2, timeout=60, TINYRNN_TEST_FAIL_RANK="1", TINYRNN_TEST_FAIL_STEP="3",
              TINYRNN_TEST_FAIL_HOW=how)
    took = time.perf_counter() - start
    print(f"{how}: the job ended in {took:.1f} s with code {r.returncode}")
    assert r.returncode != 0 and took < 60
    if how == "raise":
        assert "error: rank 1 failed: RuntimeError: TINYRNN_TEST_FAIL_RANK" in r.stderr, r.stderr
    meta, arrays = checkpoint.load(out / "last")            # rank 0's last checkpoint is whole
    assert meta["step"] == 2 and all(np.isfinite(v).all() for v in arrays.values())
    assert arrays["state/h"].shape == (1, 4, 16)              # the whole batch's state


# ----------------------------------------------------------------------------- stopping together

@needs_mpi
def test_threads_default_to_the_cores_shared_among_local_ranks(tmp_path):
    code = ("import sys\n"
            "from tinyrnn import distributed\n"
            "w = distributed.world()\n"
            "row = (w.rank, w.size, w.local_size(), w.threads(None), w.threads(3), distributed.cores())\n"
            "open(f'{sys.argv[1]}/{w.rank}', 'w').write(' '.join(map(str, row)))\n")   # not stdout: ranks interleave
    r = subprocess.run(mpirun(2) + [sys.executable, "-c", code, str(tmp_path)], env=env(), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = [tuple(map(int, (tmp_path / str(rank)).read_text().split())) for rank in (0, 1)]
    cores = rows[0][5]
    assert rows == [(0, 2, 2, max(1, cores // 2), 3, cores), (1, 2, 2, max(1, cores // 2), 3, cores)]


@needs_mpi
def test_time_limit_stops_every_rank_at_the_same_step(tmp_path, corpus):
    out = tmp_path / "run"
    r = train([corpus, *TINY, "--batch-size", 4, "--time-limit", 2, "--out", out], processes=2, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("time limit: step") == 1, r.stdout
    assert checkpoint.load(out / "last")[0]["step"] >= 1


def ranks_train(tmp_path, corpus, settings, trainer_args, body):
    """Run a tiny Trainer on 2 ranks under mpirun: ``settings`` and ``trainer_args`` go into the
    TrainConfig and Trainer calls, ``body`` (its lines) trains ``t`` and sets ``row``. -> each rank's
    row, as the list of its words, after a CRC of its weights."""
    code = ("import sys, time, zlib\n"
            "from tinyrnn import distributed\n"
            "from tinyrnn.train import CharTask, TrainConfig, budget_pace_rule\n"
            "from tinyrnn.trainer import Trainer\n"
            "w = distributed.world()\n"
            "cfg = TrainConfig(corpus=sys.argv[1], hidden=16, layers=1, embed=8, batch_size=4, seq_len=16,\n"
            f"                  eval_every=10**6, save_every=10**6, threads=1, {settings})\n"
            f"t = Trainer(CharTask, cfg, out=sys.argv[2], progress=False, {trainer_args})\n"
            f"{body}"
            "weights = b''.join(v.tobytes() for _, v in sorted(t.model.state_dict().items()))\n"
            "row = (zlib.crc32(weights), *row)\n"
            "open(f'{sys.argv[3]}/{w.rank}', 'w').write(' '.join(map(str, row)))\n")
    r = subprocess.run(mpirun(2) + [sys.executable, "-c", code, corpus, str(tmp_path / "run"), str(tmp_path)],
                       env=env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [(tmp_path / str(rank)).read_text().split() for rank in (0, 1)]


@needs_mpi
def test_a_time_limit_run_keeps_one_schedule_on_every_rank(tmp_path, corpus):
    """The budget's schedule follows rank 0's clock: a rank that started half a second later (its
    own clock would leave it more steps) keeps the same learning rate, and so the same weights."""
    rows = ranks_train(tmp_path, corpus, "time_limit=3.0, log_every=5", "",
                       "t.setup()\ntime.sleep(0.5 * w.rank)\nt._loop()\nrow = (t.step, repr(t.opt.lr))\n")
    assert rows[0] == rows[1], rows


@needs_mpi
def test_a_budget_capped_on_its_pace_saves_on_every_rank_and_stops_together(tmp_path, corpus):
    """The budget's pace rule runs on every rank (rank 0's count of steps) and its change is saved at
    once: the save's state gather is a collective, so every rank must take part, and then stop after
    the same 8 passes with the same weights."""
    rows = ranks_train(tmp_path, corpus, "time_limit=60.0, log_every=10",
                       "pace_rule=budget_pace_rule, pace={'user_dropout': False}",
                       "summary = t.run()\nrow = (summary['stopped'], t.step, t.cfg.epochs, t.cfg.dropout)\n")
    assert rows[0] == rows[1] and rows[0][1] == "done" and rows[0][3:] == ["8.0", "0.2"], rows
    meta = checkpoint.load(tmp_path / "run" / "last")[0]
    assert meta["step"] == int(rows[0][2]) and "pace" not in meta and meta["train_config"]["epochs"] == 8.0


_COUNTED_CHILDREN = f"""
import json, subprocess, sys
from tinyrnn import distributed
from tinyrnn.kernels import precompile
started, popen = [], subprocess.Popen
def counted(*args, **kws):
    started.append(args[0])
    return popen(*args, **kws)
precompile.subprocess.Popen = counted
from {CLI_MODULE} import cli
code = cli.main(args=json.loads(sys.argv[1]), standalone_mode=False)
open(sys.argv[2] + "/" + str(distributed.world().rank), "w").write(json.dumps([code, len(started)]))
"""


@needs_mpi
def test_a_cold_cache_compiles_once_a_machine_and_trains_the_bits_of_a_warm_one(tmp_path, corpus):
    """Under mpirun on an empty cache the machine's first rank compiles the step's kernels in child
    processes while the other waits; both then load them from the cache, and the run trains the same
    weights, bit for bit, as the same command run again on the warm cache."""
    cache = dict(NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    runs = {}
    for run in ("cold", "warm"):
        args = ["train", corpus, *map(str, TINY), "--hidden", "32", "--cell", "gru", "--batch-size", "4", "--steps",
                "3", "--out", str(tmp_path / run)]
        r = subprocess.run(mpirun(2) + [sys.executable, "-c", _COUNTED_CHILDREN, json.dumps(args), str(tmp_path)],
                           env=env(**cache), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        runs[run] = [json.loads((tmp_path / str(rank)).read_text()) for rank in (0, 1)]
        runs[run + " weights"] = checkpoint.load(tmp_path / run / "last")[1]
    assert runs["cold"][0][0] == runs["cold"][1][0] == 0
    assert runs["cold"][0][1] >= 1 and runs["cold"][1][1] == 0          # children of the first rank only
    assert runs["warm"] == [[0, 0], [0, 0]]                              # all cached: none started
    cold, warm = runs["cold weights"], runs["warm weights"]
    assert sorted(cold) == sorted(warm) and [k for k in cold if cold[k].tobytes() != warm[k].tobytes()] == []


_NOISE_FROM_120 = f"""
import json, sys
sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
from tinyrnn import trainer
from test_rollback import noisy    # test_rollback.py's injected rise, until the first roll-back
trainer.Trainer.train_step = noisy(trainer.Trainer.train_step, once=True)
from {CLI_MODULE} import cli
sys.exit(cli.main(args=json.loads(sys.argv[1]), standalone_mode=False))
"""


@needs_mpi
def test_a_roll_back_under_mpirun_is_the_one_process_roll_back(tmp_path, corpus):
    """Every rank decides on the same (averaged) loss, reads ``best`` and goes back together; rank 0
    alone trims metrics.jsonl and says so; the save after it is a collective all ranks join."""
    runs = {}
    for n in (None, 2):
        out = tmp_path / f"run{n}"
        args = ["train", corpus, *map(str, TINY), "--batch-size", "4", "--lr", "0.03", "--eval-every", "10",
                "--save-every", "1000", "--steps", "170", "--out", str(out)]
        cmd = [sys.executable, "-c", _NOISE_FROM_120, json.dumps(args)]
        r = subprocess.run(cmd if n is None else mpirun(n) + cmd, env=env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and r.stderr.count("back to the best checkpoint (step 120)") == 1, r.stderr
        rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
        runs[n] = ([row["step"] for row in rows], [row for row in rows if "rolled_back_from" in row],
                   checkpoint.load(out / "last"))
    (steps_1, events_1, (_, arrays_1)), (steps_2, events_2, (meta_2, arrays_2)) = runs[None], runs[2]
    assert steps_1 == steps_2 and events_1 == events_2 and len(events_2) == 1
    assert meta_2["metrics"]["rollbacks"] == 1 and meta_2["train_config"]["lr"] == 0.015
    # 170 steps, 50 of them after the rise: the sums' order (1e-7) has grown, not the run's course
    for k in arrays_1:
        np.testing.assert_allclose(arrays_2[k], arrays_1[k], rtol=1e-2, atol=1e-3, err_msg=k)


@needs_mpi
def test_ctrl_c_on_mpiexec_saves_and_stops_every_rank(tmp_path, corpus):
    out = tmp_path / "run"
    cmd = mpirun(2) + [sys.executable, "-m", CLI_MODULE, "train", corpus, *TINY, "--batch-size", 4,
                       "--steps", 1000000, "--eval-every", 1000000, "--save-every", 1000000, "--out", out]
    proc = subprocess.Popen(list(map(str, cmd)), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and metrics.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)          # MPICH's mpiexec passes it on to every rank
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout.count("interrupted: step") == 1 and stderr.count("interrupted at step") == 1, (stdout, stderr)
    meta, arrays = checkpoint.load(out / "last")
    assert meta["step"] >= 20 and arrays["state/h"].shape == (1, 4, 16)


# ----------------------------------------------------------------------------- the tagger

@needs_mpi
def test_two_processes_train_the_same_tagger_as_one(tmp_path):
    """``tinyrnn tag train`` shards each batch of sentences the same way (no dropout, so the only
    difference between 1 and 2 processes is the order of floating-point sums)."""
    from test_tagger import sentences, write_conllu

    train_file = write_conllu(tmp_path / "train.conllu", sentences(24))
    dev_file = write_conllu(tmp_path / "dev.conllu", sentences(6, seed=3))
    args = ["tag", "train", train_file, "--dev", dev_file, "--hidden", "8", "--layers", "1", "--word-dim", "8",
            "--char-hidden", "4", "--dropout", "0", "--word-dropout", "0", "--batch-size", "5", "--steps", "5",
            "--eval-every", "5", "--threads", "1", "--quiet"]
    runs = {}
    for n in (None, 2):
        out = tmp_path / f"run{n}"
        cmd = [sys.executable, "-m", CLI_MODULE, *map(str, args), "--out", str(out)]
        r = subprocess.run(cmd if n is None else mpirun(n) + cmd, env=env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("done: step 5/5") == 1
        runs[n] = checkpoint.load(out / "last")[1]
    for k, v in runs[None].items():
        np.testing.assert_allclose(runs[2][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
