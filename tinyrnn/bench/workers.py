"""Isolated measurements: each runs in a fresh worker process.

Numba's OpenMP threads and PyTorch's spin-wait after their parallel regions, so two frameworks
in one process slow each other down.
"""
import json
import subprocess
import sys

from .configs import CONFIGS, thread_env


def run_worker(kind: str, framework: str, config: str, threads: int, steps: int = 0, sample_length: int = 0,
               **options):
    """``measure`` in a fresh Python process with the thread count set; returns its result (a
    number; a dict for ``overhead``), passed back as JSON on the worker's last line of output.

    options: keyword arguments (plain literals) for the tagger rows' ``tagger.measure``."""
    code = (f"import json; from tinyrnn.bench.workers import measure; print(json.dumps(measure("
            f"{kind!r}, {framework!r}, {config!r}, {threads}, {steps}, {sample_length}, **{options!r})))")
    out = subprocess.run([sys.executable, "-c", code], env=thread_env(threads), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker {kind}:{framework}:{config} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(kind, framework, config, threads, steps, sample_length, **options):
    """Inside the worker: chars/s of one training block, or of sampling; tokens/s of the tagger;
    for ``overhead``, where a step's time goes (``overhead.measure``: a dict)."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        from tinyrnn import set_num_threads

        set_num_threads(threads)
    if kind.startswith("tagger"):
        from .tagger import measure as measure_tagger

        return measure_tagger(kind, framework, steps, **options)
    if kind == "overhead":
        from .overhead import measure as measure_overhead

        return measure_overhead(config, steps, threads)
    cfg = CONFIGS[config]
    if kind.startswith("sample"):       # sample (float32 weights), sample_bf16, sample_int8
        from .sampling import tinyrnn_sampling_rate, torch_sampling_rate

        if framework == "torch":
            return torch_sampling_rate(cfg, sample_length)
        return tinyrnn_sampling_rate(cfg, sample_length, kind.partition("_")[2] or "f32")
    from .training import time_steps, tinyrnn_step_fn, torch_step_fn

    step = (tinyrnn_step_fn if framework == "tinyrnn" else torch_step_fn)(cfg)
    return cfg["batch"] * cfg["seq"] / time_steps(step, steps, repeats=1)
