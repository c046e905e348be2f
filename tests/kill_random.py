"""Kill a real ``tinyrnn train`` with SIGKILL at random moments, again and again, and count the runs
that could not be continued. Not part of the test suite (it takes minutes):

    python tests/kill_random.py --kills 200 --out /tmp/killtest

One run directory is trained in a chain: each round starts ``tinyrnn train`` (fresh the first time,
``--resume`` afterwards), kills it with SIGKILL after a random delay, then checks the run: its
``last`` checkpoint loads and passes the resume checks (or, killed before the first save, there is
no checkpoint and a fresh start is allowed), ``sample`` works, and no temp file is read. A round
whose process exits on its own with an error (instead of being killed or finishing) counts as a
failure too. Prints one summary line: rounds, kills, could-not-resume.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch-size", "4", "--seq-len", "16",
        "--eval-every", "3", "--save-every", "2", "--quiet", "--threads", "1"]


def check(out):
    """'' if the run can be continued (or started again), else why not."""
    from tinyrnn import checkpoint
    from tinyrnn.errors import TinyRNNError
    from tinyrnn.train import CharTask, TrainConfig
    from tinyrnn.trainer import Trainer

    class Probe(Trainer):
        """The whole resume set-up (checks, model, optimizer, state restored in memory), no file touched."""

        def _prepare_directory(self):
            pass

    if not checkpoint.exists(os.path.join(out, "last")):
        return ""                                            # killed before its first save: starts again
    probe = Probe(CharTask, TrainConfig(), out=out, resume=True, log=lambda m: None)
    try:
        probe.setup()
        checkpoint.load_model(out, log=lambda m: None)
    except TinyRNNError as e:
        return str(e)
    finally:
        if probe.lock is not None:
            probe.lock.release()
    return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--out", default="/tmp/tinyrnn-killtest")
    ap.add_argument("--max-delay", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    corpus = os.path.join(args.out, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("the quick brown fox jumps over the lazy dog. a lamp burns by the harbour wall.\n" * 40)
    run = os.path.join(args.out, "run")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    kills = failures = rounds = 0
    steps = 10 ** 6
    while kills < args.kills:
        from tinyrnn import checkpoint

        resume = checkpoint.exists(os.path.join(run, "last"))
        cmd = [sys.executable, "-m", "cli.main", "train"] + (
            ["--resume", "--out", run, "--quiet", "--threads", "1"] if resume else
            [corpus, *TINY, "--steps", str(steps), "--out", run])
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = rng.uniform(0.0, args.max_delay)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        rounds += 1
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        elif proc.returncode != 0:
            failures += 1
            print(f"round {rounds}: exited {proc.returncode} on its own: {err[-300:]}", flush=True)
        why = check(run)
        if why:
            failures += 1
            print(f"round {rounds} (after {delay:.2f}s): cannot resume: {why}", flush=True)
            shutil.rmtree(run)                                # start a new chain
        if rounds % 20 == 0:
            print(f"... {rounds} rounds, {kills} kills, {failures} could not resume", flush=True)
    print(f"kill test: {rounds} rounds, {kills} SIGKILLs at random moments, {failures} runs could not resume")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
