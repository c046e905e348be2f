"""``python -m tinyrnn.bench.overhead``: the share of a step outside the kernels, and with ``--kernels``
each kernel's ms a step (the per-kernel tables of BENCHMARKS.md)."""
import re
import subprocess
import sys


def test_each_kernel_is_reported_and_they_add_up():
    """Run in its own process: measuring wraps the kernels of the module it runs in. Config a twice:
    the second measurement wraps the kernels afresh, not the first one's timers."""
    out = subprocess.run([sys.executable, "-m", "tinyrnn.bench.overhead", "--config", "a,a", "--steps", "1",
                          "--threads", "1", "--kernels"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = re.split(r"\n(?=config )", out.stdout.strip())
    assert len(blocks) == 2, out.stdout
    names = []
    for block in blocks:
        head, *rows = block.splitlines()
        step = re.match(r"config a \(1 threads\): step ([\d.]+) ms = kernels ([\d.]+) \+ numpy array ops ([\d.]+) ",
                        head)
        assert step, head
        step_ms, kernels_ms, numpy_ms = map(float, step.groups())
        per = {}
        for row in rows:
            name, ms, calls = re.fullmatch(r"  (\w+) +([\d.]+) ms +(\d+) calls", row).groups()
            per[name] = (float(ms), int(calls))
        assert per["lstm_sequence_forward"][1] == per["lstm_sequence_backward"][1] == 1    # one layer, one call each
        assert per["matmul_tn"][1] >= 1 and "clone" in per                               # a kernel, an array helper
        assert list(per) == sorted(per, key=lambda name: -per[name][0])                   # largest first
        assert abs(sum(ms for ms, _ in per.values()) - (kernels_ms + numpy_ms)) < 0.002 * len(per) + 0.01
        assert kernels_ms <= step_ms
        names.append(sorted(per))
    assert names[0] == names[1]
