"""The speed benchmark: tinyrnn and PyTorch side by side, in one run, on the same thread count.

    python -m tinyrnn.bench                 # everything (PyTorch columns when torch is installed)
    python -m tinyrnn.bench --configs a,b --repeats 5 --threads 2
    python -m tinyrnn.bench --skip sampling,help,startup,rss   # training throughput only
    python -m tinyrnn.bench --only tagger   # the tagger rows only (issue 11; see bench/tagger.py)
    python -m tinyrnn.bench --avx2          # the same table from the AVX2 build of both frameworks
    python -m tinyrnn.bench --avx512        # ... from their AVX-512 build without BF16/VNNI/AMX (Skylake-SP)
    tinyrnn bench ...                       # the same, from the CLI

Every config is a character model: vocab 65, embedding size = hidden size, a full softmax head;
one training step = forward, backward, clip_grad_norm(1.0), Adam. Throughput is chars/s =
B*T / (median seconds per step). The FLOP limit is the chars/s reachable at this machine's
measured float32 matmul peak, with training FLOPs per char ~ 3x the forward FLOPs:
    recurrent layer: 3 * 2 * G*H * (I + H)      (G = 4 for LSTM, 3 for GRU; x2 if bidirectional)
    head:            3 * 2 * H_out * V
The ``overhead`` rows (configs a and b) say how much of a training step is spent outside the
compiled kernels (Python, the tape, allocation: ``overhead.py``). Run it on a quiet machine; it
prints medians of --repeats timed blocks. ``--avx2`` runs every measurement with tinyrnn compiled
for Haswell and PyTorch held to AVX2 (``configs.AVX2_BUILD``), so one machine with AVX-512 gives
both tables: its own, and what an AVX2 laptop of the same clock would see. ``--avx512`` does the same
for a Skylake-SP server (``configs.AVX512_BUILD``: AVX-512 without BF16, VNNI or AMX).

The package, one module per idea: ``configs`` (the models, FLOPs per char), ``training``
(one timed training step, the matmul peak), ``sampling``, ``startup`` (``--help``, first step, first sample,
peak RSS), ``tagger`` (the tagger's training, predict and ``tag predict`` tokens/s, issue 11),
``workers`` (every measurement in a fresh process) and ``main`` below. The
micro-benchmarks of single kernels run on their own, their results in ``benchmarks/``::

    python -m tinyrnn.bench.matmul --threads 2 --repeats 9     # the matmuls against numpy's BLAS
    python -m tinyrnn.bench.recurrent                          # the fused sequence kernels
    python -m tinyrnn.bench.gpu                                # CUDA training and sampling
    python -m tinyrnn.bench.ab /tmp/old                        # two checkouts' kernels, in one process
"""
from __future__ import annotations

import argparse
import json
import os

from .configs import AVX2_BUILD, AVX512_BUILD, BUILDS, CONFIGS, default_steps, median, thread_env, train_flops_per_char
from .startup import first_sample_time, first_step_time, help_time, peak_rss_mb
from .training import matmul_peak_gflops
from .workers import run_worker

ITEMS = ("train", "overhead", "sampling", "help", "startup", "rss", "tagger")
OVERHEAD_CONFIGS = ("a", "b")   # the small configs, where the share outside the kernels decides


def _parse(argv):
    parser = argparse.ArgumentParser(prog="tinyrnn bench", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--steps", type=int, default=0, help="steps per timed run (default: by config size)")
    parser.add_argument("--sample-length", type=int, default=3000)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    parser.add_argument("--skip", default="", help=f"comma-separated: {','.join(ITEMS)}")
    parser.add_argument("--only", default="", help="comma-separated: run only these items (e.g. tagger)")
    parser.add_argument("--tagger-data", default=None, metavar="PATH",
                        help="tagger rows: a CoNLL-U file to train and tag (default: a synthetic EWT-like set)")
    parser.add_argument("--tagger-tokens", type=int, default=0,
                        help="tagger rows: tokens to tag (default: ~25,000, EWT dev's size)")
    parser.add_argument("--avx2", action="store_true",
                        help="the AVX2 build of both: tinyrnn compiled for Haswell, PyTorch held to AVX2 ("
                             + _recipe(AVX2_BUILD) + ")")
    parser.add_argument("--avx512", action="store_true",
                        help="the AVX-512 build of both without BF16, VNNI or AMX (a Skylake-SP server): tinyrnn "
                             "compiled for Skylake-AVX512, PyTorch held to AVX-512 core (" + _recipe(AVX512_BUILD) + ")")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.avx2 and args.avx512:
        parser.error("--avx2 and --avx512 are two builds: give one of them (or neither, for this CPU's own)")
    for build, (_, needs) in BUILDS.items():
        if getattr(args, build) and not _host_has(needs):
            parser.error(f"--{build} needs an x86 CPU with {', '.join(f.upper() for f in needs)}; "
                         f"this one lacks some: run without --{build}")
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    unknown = (skip | only) - set(ITEMS)
    if unknown:
        parser.error(f"unknown item(s) {', '.join(sorted(unknown))}: use {', '.join(ITEMS)}")
    args.skip = skip | (set(ITEMS) - only if only else set())
    return args


def _recipe(build) -> str:
    return " ".join(f"{k}={v or repr('')}" for k, v in build.items())


def _host_has(features) -> bool:
    """Whether this CPU has every one of ``features`` (LLVM's names)."""
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    return all(host.get(feature, False) for feature in features)


def use_build(build):
    """Set a build's recipe (``configs.BUILDS``) for this process and every worker it starts (they
    inherit os.environ). Numba reads its settings when first imported: re-read them in case it already was."""
    os.environ.update(build)
    import sys

    if "numba.core.config" in sys.modules:
        sys.modules["numba.core.config"].reload_config()


def machine_line(have_torch) -> dict:
    """Print and return what the numbers come from: CPU model, the SIMD level and Numba target the
    kernels are compiled for (``NUMBA_CPU_NAME`` changes it), the instructions sampling's compact
    weights use, and the ISA PyTorch dispatches to (``ATEN_CPU_CAPABILITY`` changes that; the MKL
    path its matrix products take is shown when ``MKL_ENABLE_INSTRUCTIONS`` caps it)."""
    from ..kernels import isa

    torch_isa = "not installed"
    if have_torch:
        import torch

        torch_isa = torch.backends.cpu.get_cpu_capability()
        if os.environ.get("MKL_ENABLE_INSTRUCTIONS"):
            torch_isa += f" (MKL held to {os.environ['MKL_ENABLE_INSTRUCTIONS']})"
    tile = isa.choose_tile()        # what the workers will compile: this process may predate --avx2's setting
    line = f"{isa.describe(tile)} | PyTorch {torch_isa}"
    print(f"machine: {line}", flush=True)
    name, features = isa.target()
    numba_target = name if features in ("", "host") else f"{name} {features}"
    return dict(cpu=isa.cpu_model(), simd=isa.simd_level(), numba_target=numba_target, matmul_tile=tile,
                sampling_dots=isa.sampling_dots(), torch_isa=torch_isa)


def train_rows(args, have_torch) -> tuple:
    """(numpy matmul peak, {config: row}): training chars/s of configs a-e, tinyrnn and PyTorch
    interleaved, medians, against the FLOP cap."""
    peak = max(matmul_peak_gflops(args.threads) for _ in range(3))
    print(f"matmul peak (numpy float32 2048^3, best of 3, {args.threads} threads): {peak:.0f} GFLOP/s")
    print(f"{'cfg':<4}{'model':<22}{'tinyrnn c/s':>12}{'torch c/s':>12}{'ratio':>8}{'FLOP cap':>10}{'% cap':>7}")
    rows = {}
    for name in filter(None, args.configs.split(",")):
        cfg = CONFIGS[name]
        steps = args.steps or default_steps(cfg)
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so slow drifts in machine load hit both alike
            ours.append(run_worker("train", "tinyrnn", name, args.threads, steps))
            if have_torch:
                theirs.append(run_worker("train", "torch", name, args.threads, steps))
        ours, theirs = median(ours), (median(theirs) if theirs else float("nan"))
        cap = peak * 1e9 / train_flops_per_char(cfg)
        desc = f"{'bi-' if cfg['bidir'] else ''}{cfg['cell'].upper()} {cfg['layers']}x{cfg['hidden']} B{cfg['batch']} T{cfg['seq']}"
        print(f"{name:<4}{desc:<22}{ours:>12.0f}{theirs:>12.0f}{ours / theirs:>8.2f}{cap:>10.0f}{100 * ours / cap:>6.0f}%",
              flush=True)
        rows[name] = dict(tinyrnn=ours, torch=theirs, ratio=ours / theirs, flop_cap=cap)
    return peak, rows


def overhead_rows(args) -> dict:
    """Share of a training step outside the kernels at configs a and b (``overhead.measure``, one
    fresh worker per repeat; the worker with the median share is reported)."""
    rows = {}
    for config in filter(None, args.configs.split(",")):
        if config not in OVERHEAD_CONFIGS:
            continue
        runs = sorted((run_worker("overhead", "tinyrnn", config, args.threads, args.steps or 30)
                       for _ in range(args.repeats)), key=lambda r: r["outside_share"])
        r = runs[len(runs) // 2]
        shares = ", ".join(f"{100 * x['outside_share']:.1f}%" for x in runs)
        print(f"outside the kernels ({config}): {100 * r['outside_share']:.1f}% of a {r['step_ms']:.2f} ms step "
              f"(Python {r['python_ms']:.2f} ms, numpy array ops {r['numpy_ms']:.2f} ms; all runs: {shares})", flush=True)
        rows[config] = dict(r, runs=[x["outside_share"] for x in runs])
    return rows


def sampling_rows(args, have_torch) -> dict:
    """Batch-1 sampling chars/s at configs b and c: float32, bfloat16 and int8 weights (``tinyrnn
    sample --weights``), PyTorch's loop; medians of interleaved workers."""
    rows = {}
    for config in ("b", "c"):
        rates = {"f32": [], "bf16": [], "int8": [], "torch": []}
        for _ in range(args.repeats):
            for weights in ("f32", "bf16", "int8"):
                kind = "sample" if weights == "f32" else f"sample_{weights}"
                rates[weights].append(run_worker(kind, "tinyrnn", config, args.threads, 0, args.sample_length))
            if have_torch:
                rates["torch"].append(run_worker("sample", "torch", config, args.threads, 0, min(args.sample_length, 500)))
        f32, bf16, int8 = median(rates["f32"]), median(rates["bf16"]), median(rates["int8"])
        theirs = median(rates["torch"]) if rates["torch"] else float("nan")
        print(f"batch-1 sampling ({config}): tinyrnn f32 {f32:.0f} chars/s, bf16 {bf16:.0f} ({bf16 / f32:.2f}x f32), "
              f"int8 {int8:.0f} ({int8 / f32:.2f}x f32), torch {theirs:.0f}, ratio bf16/torch {bf16 / theirs:.1f}",
              flush=True)
        rows[config] = dict(tinyrnn=f32, tinyrnn_bf16=bf16, tinyrnn_int8=int8, torch=theirs, ratio=f32 / theirs,
                            ratio_bf16=bf16 / theirs, ratio_int8=int8 / theirs, bf16_speedup=bf16 / f32,
                            int8_speedup=int8 / f32)
    return rows


def startup_rows(args, have_torch, results):
    """--help time, time to the first training step and to the first sampled characters (warm and cold
    JIT cache), peak memory."""
    if "help" not in args.skip:
        results["help_seconds"] = t = help_time()
        print(f"tinyrnn --help: {t:.3f} s (median of 5)")
    if "startup" not in args.skip:
        import tempfile

        with tempfile.TemporaryDirectory() as cold:
            cold_t = first_step_time(cold)
            cold_sample_t = first_sample_time(cold)     # after training's kernels, as a user meets it
        with tempfile.TemporaryDirectory() as cold:   # as `tinyrnn train` does: the sampler's kernel too
            parallel_t = first_step_time(cold, parallel=True)
            parallel_sample_t = first_sample_time(cold)
        first_step_time(None)  # make sure the default cache is filled
        warm_t = median([first_step_time(None) for _ in range(3)])
        print(f"time to first training step (b): warm JIT cache {warm_t:.2f} s, cold cache {cold_t:.2f} s, "
              f"cold with the kernels compiled in parallel as `tinyrnn train` does {parallel_t:.2f} s")
        first_sample_time(None)
        warm_sample_t = median([first_sample_time(None) for _ in range(3)])
        print(f"time to first sampled characters (b, bf16): warm JIT cache {warm_sample_t:.2f} s, "
              f"after a cold first step {cold_sample_t:.2f} s, after a parallel one {parallel_sample_t:.2f} s")
        results["first_step"] = dict(warm=warm_t, cold=cold_t, cold_parallel=parallel_t)
        results["first_sample"] = dict(warm=warm_sample_t, after_cold_step=cold_sample_t,
                                       after_parallel_step=parallel_sample_t)
    if "rss" not in args.skip:
        ours = peak_rss_mb("tinyrnn", args.threads)
        theirs = peak_rss_mb("torch", args.threads) if have_torch else float("nan")
        print(f"peak RSS (c, 3 steps): tinyrnn {ours:.0f} MB, torch {theirs:.0f} MB")
        results["peak_rss_mb"] = dict(tinyrnn=ours, torch=theirs)


def main(argv=None):
    args = _parse(argv)
    os.environ.update(thread_env(args.threads))
    for build, (recipe, _) in BUILDS.items():
        if getattr(args, build):
            use_build(recipe)
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            have_torch = True
        except ImportError:
            print("PyTorch not installed: tinyrnn columns only")
    results = {"threads": args.threads, "machine": machine_line(have_torch), "configs": {}}
    if "train" not in args.skip:
        results["matmul_peak_gflops"], results["configs"] = train_rows(args, have_torch)
    if "overhead" not in args.skip:
        results["overhead"] = overhead_rows(args)
    if "sampling" not in args.skip:
        results["sampling"] = sampling_rows(args, have_torch)
    startup_rows(args, have_torch, results)
    if "tagger" not in args.skip:
        from .tagger import run_rows

        results["tagger"] = run_rows(args.threads, args.repeats, have_torch, args.steps, args.tagger_data,
                                     args.tagger_tokens)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results
