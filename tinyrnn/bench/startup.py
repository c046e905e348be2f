"""Start-up and memory, each measured in a fresh process: ``tinyrnn --help``, the first training
step and the first sampled characters (warm and cold JIT cache), peak RSS."""
import os
import subprocess
import sys
import time

from .configs import cli_module, median, thread_env


def help_time(repeats=5) -> float:
    """Seconds for `tinyrnn --help` in a fresh interpreter (median)."""
    module = cli_module()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return median(times)


_FIRST_STEP = """
import time, sys
t0 = time.perf_counter()
from tinyrnn.bench.configs import CONFIGS
from tinyrnn.bench.training import tinyrnn_step_fn
if sys.argv[1] == 'parallel':       # as `tinyrnn train` does: missing kernels compiled in processes
    from tinyrnn.backend import precompile
    precompile('train-lstm')
step = tinyrnn_step_fn(CONFIGS['b'])
step()
print(time.perf_counter() - t0)
"""


_FIRST_SAMPLE = """
from tinyrnn.bench.configs import CONFIGS
from tinyrnn.bench.sampling import tinyrnn_sampling_rate
tinyrnn_sampling_rate(CONFIGS['b'], 10, weights='bf16')     # bfloat16 weights, as tinyrnn sample
"""


def _time_in_fresh_process(script: str, cache_dir: str | None, *args: str) -> float:
    """Seconds a fresh interpreter takes to run script with args, with NUMBA_CACHE_DIR = cache_dir when given."""
    env = dict(os.environ)
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, check=True)
    return time.perf_counter() - t0


def first_step_time(cache_dir: str | None, parallel: bool = False) -> float:
    """Seconds from interpreter start-up to the end of the first training step of config b; parallel:
    the kernels the cache lacks compiled in parallel processes first, as ``tinyrnn train`` does
    (``kernels/precompile.py``), else one by one as the step meets them."""
    return _time_in_fresh_process(_FIRST_STEP, cache_dir, "parallel" if parallel else "serial")


def first_sample_time(cache_dir: str | None) -> float:
    """Seconds from interpreter start-up to the first characters sampled from a config b model (10 to
    warm up, 10 timed; bfloat16 weights). With a cold cache this is on top of what training compiles:
    cache_dir should hold a first step's kernels, as after ``tinyrnn train``."""
    return _time_in_fresh_process(_FIRST_SAMPLE, cache_dir)


_PEAK_RSS = """
import resource, sys
from tinyrnn.bench.configs import CONFIGS
from tinyrnn.bench.training import tinyrnn_step_fn, torch_step_fn
which = sys.argv[1]
step = (tinyrnn_step_fn if which == 'tinyrnn' else torch_step_fn)(CONFIGS['c'])
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(which: str, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, which], env=thread_env(threads),
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])
