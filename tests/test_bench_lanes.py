"""``python -m tinyrnn.bench.lanes``: benchmarks side by side, each pinned to its own cores."""
import os
import sys

from tinyrnn.bench import lanes


def _topology(tmp_path, cores):
    """A fake /sys/devices/system/cpu: cores[cpu] = (package, core) of each logical CPU."""
    for cpu, (package, core) in enumerate(cores):
        d = tmp_path / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{package}\n")
        (d / "core_id").write_text(f"{core}\n")
    return tmp_path


def test_one_logical_cpu_per_physical_core(tmp_path, monkeypatch):
    """SMT siblings (CPUs 0 and 4 are one core, and so on) count once; only CPUs this process may
    use count; an unreadable topology gives every allowed CPU."""
    topology = _topology(tmp_path, [(0, 0), (0, 1), (0, 2), (0, 3), (0, 0), (0, 1), (0, 2), (0, 3)])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 4, 5, 6, 7})
    assert lanes.physical_cores(topology) == [0, 1, 2, 7]
    assert lanes.physical_cores(tmp_path / "missing") == [0, 1, 2, 4, 5, 6, 7]


def test_lanes_run_pinned_in_turn_and_stop_at_the_limit(tmp_path):
    """Each lane's commands run one after another on its CPUs; a failing command ends its lane;
    a lane still running at the limit is stopped (its output so far kept); with fewer CPUs than
    lanes want, a lane waits for a free slot."""
    py = [sys.executable, "-c"]
    plan = {"pinned": [py + ["import os; print('cpus', sorted(os.sched_getaffinity(0)))"], py + ["print('second')"]],
            "fails": [py + ["import sys; sys.exit(3)"], py + ["print('never')"]],
            "slow": [py + ["print('started', flush=True); import time; time.sleep(120)"]]}
    status = lanes.run_lanes(plan, tmp_path, [0], per_lane=1, limit_s=6)
    assert status == {"pinned": "done", "fails": "failed (exit 3)", "slow": "stopped at the time limit"}
    pinned = (tmp_path / "pinned.txt").read_text()
    assert "cpus [0]" in pinned and "second" in pinned
    assert "never" not in (tmp_path / "fails.txt").read_text()
    slow = (tmp_path / "slow.txt").read_text()
    assert "started" in slow and "stopped at the 6 s limit" in slow
