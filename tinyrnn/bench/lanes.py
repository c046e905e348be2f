"""Several benchmarks at once on a many-core machine, each pinned to its own two cores.

    python -m tinyrnn.bench.lanes OUT_DIR                    # issue 13's CPU measurements
    python -m tinyrnn.bench.lanes OUT_DIR --limit-s 420 --only train-native,sampling

For a machine lent for minutes (the device machine's 16-core CPU): run one after another, issue
13's measurements (both builds' training tables twice, sampling, the per-kernel profile, the
matmul against BLAS) take about 20 minutes on two cores (the Zen 4 VM); as lanes side by side,
about as long as the longest lane (~4 minutes there). Each lane is a
list of commands run in turn, its processes (and their benchmark workers) pinned to two
physical cores (one logical CPU of each, so no lane shares a core with another through SMT), its
output in ``OUT_DIR/<lane>.txt``; ``OUT_DIR/machine.txt`` says what ran where. Lanes share the
last-level cache and the memory bus: compare tinyrnn with PyTorch within a lane (the benchmark
interleaves them), not absolute numbers across lanes. With fewer cores than lanes need, the
rest wait for a lane to finish. At ``--limit-s`` every lane still running is stopped, and its
file says so: what it printed by then is kept.
"""
import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = [sys.executable, "-m", "tinyrnn.bench"]
TRAIN = BENCH + ["--only", "train,overhead", "--repeats", "3"]

# name -> commands, run in turn: issue 13's measurements (BENCHMARKS.md names each table's command),
# the most wanted first (with fewer free cores than lanes, the last ones wait)
LANES = {
    "train-native": [TRAIN],
    "train-avx2": [TRAIN + ["--avx2"]],
    "sampling": [BENCH + ["--only", "sampling", "--repeats", "3"], BENCH + ["--only", "sampling", "--repeats", "3", "--avx2"]],
    "kernels": [[sys.executable, "-m", "tinyrnn.bench.overhead", "--config", "a,b", "--kernels"],
                [sys.executable, "-m", "tinyrnn.bench.overhead", "--config", "a,b", "--kernels", "--threads", "1"]],
    "matmul": [[sys.executable, "-m", "tinyrnn.bench.matmul", "--threads", "2", "--repeats", "3"]],
    "train-native-2": [TRAIN],
    "train-avx2-2": [TRAIN + ["--avx2"]],
}


def physical_cores(topology=Path("/sys/devices/system/cpu")) -> list:
    """One logical CPU per physical core this process may run on (the lowest-numbered of each
    core's SMT siblings), in order; every allowed CPU where the topology cannot be read."""
    allowed = sorted(os.sched_getaffinity(0))
    first = {}
    for cpu in allowed:
        try:
            core = (topology / f"cpu{cpu}/topology/physical_package_id").read_text().strip(), \
                   (topology / f"cpu{cpu}/topology/core_id").read_text().strip()
        except OSError:
            return allowed
        first.setdefault(core, cpu)
    return sorted(first.values())


def run_lanes(lanes: dict, out_dir, cpus: list, per_lane: int = 2, limit_s: float = 480.0) -> dict:
    """Run each lane's commands in turn, lanes side by side on ``per_lane`` CPUs each; returns
    {lane: 'done' | 'failed (exit N)' | 'stopped at the time limit' | 'not started'}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slots = [cpus[k:k + per_lane] for k in range(0, len(cpus) - per_lane + 1, per_lane)] or [cpus]
    waiting, running, status = list(lanes), {}, {name: "not started" for name in lanes}
    deadline = time.monotonic() + limit_s
    while (waiting or running) and time.monotonic() < deadline:
        for name, lane in list(running.items()):
            code = lane["process"].poll()
            if code is None:
                continue
            lane["file"].write(f"\n[exit {code}]\n")
            lane["file"].flush()
            if code != 0 or not lane["commands"]:
                status[name] = "done" if code == 0 else f"failed (exit {code})"
                lane["file"].close()
                slots.append(running.pop(name)["cpus"])
            else:
                lane["process"] = _start(lane["commands"].pop(0), lane["cpus"], lane["file"])
        while waiting and slots:
            name, cores = waiting.pop(0), slots.pop(0)
            commands = list(lanes[name])
            f = open(out_dir / f"{name}.txt", "w")
            f.write(f"lane {name} on CPUs {cores}\n")
            running[name] = dict(cpus=cores, file=f, commands=commands[1:],
                                 process=_start(commands[0], cores, f))
        time.sleep(0.2)
    for name, lane in running.items():
        os.killpg(lane["process"].pid, signal.SIGKILL)
        lane["process"].wait()
        lane["file"].write(f"\n[stopped at the {limit_s:.0f} s limit]\n")
        lane["file"].close()
        status[name] = "stopped at the time limit"
    return status


def _start(command, cpus, f):
    f.write(f"$ {' '.join(command)}\n")
    f.flush()
    return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus))


def describe_machine(cpus: list) -> str:
    from tinyrnn.kernels.isa import describe

    lines = [describe(), f"python {platform.python_version()}, {os.cpu_count()} logical CPUs, "
             f"physical cores used: {cpus}"]
    for module in ("numpy", "numba", "torch"):
        try:
            lines.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            lines.append(f"{module}: not installed")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--limit-s", type=float, default=480.0, help="stop every lane still running after this")
    parser.add_argument("--only", default="", help=f"comma-separated lanes: {','.join(LANES)}")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(LANES)
    unknown = sorted(set(names) - set(LANES))
    if unknown:
        parser.error(f"unknown lanes {', '.join(unknown)}: use some of {', '.join(LANES)}")
    cpus = physical_cores()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "machine.txt").write_text(describe_machine(cpus))
    status = run_lanes({n: LANES[n] for n in names}, out_dir, cpus, limit_s=args.limit_s)
    with open(out_dir / "machine.txt", "a") as f:
        f.writelines(f"lane {name}: {state}\n" for name, state in status.items())
    print("\n".join(f"{name}: {state}" for name, state in status.items()))


if __name__ == "__main__":
    main()
