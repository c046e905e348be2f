"""Two checkouts' kernels side by side in one process: is a kernel change faster, and by how much?

    python -m tinyrnn.bench.ab OLD_CHECKOUT [--new CHECKOUT] [--config d] [--rounds 41] [--only products]
    python -m tinyrnn.bench.ab OLD_CHECKOUT --config b --only sampling
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES='' python -m tinyrnn.bench.ab /tmp/old   # AVX2 build

On a shared VM the same command drifts by 10-20% from one process to the next (BENCHMARKS.md), so
a change of 2-5% is lost between an old run and a new one. Here both packages are imported into
one process under names of their own (``tinyrnn_ab_old``, ``tinyrnn_ab_new``), and every
measurement alternates old and new call by call, so drift hits both alike; the ratio of the two
medians is the change. Measured: the products and sequence kernels of one training step of a
benchmark config (``configs.CONFIGS``), float32, on this process's threads:

    tn  dW     (G*H) x (B*T) x H     a layer's weight gradient, dgates.T @ inputs
    nt  xproj  (B*T) x H x (G*H)     a layer's input projection x @ W_ih.T
    nn  dx     (B*T) x (G*H) x H     its input's gradient, dgates @ W_ih (these two: layers after the
                                     first, whose projection is a table; configs a and e have none)
    nt, nn, tn head                  the logits (vocab 65), their input's and weights' gradients
    sequence forward / backward      the cell's fused recurrent kernels over T steps

or, with ``--only sampling``, batch-1 sampling from the config's model (a, b, c or d, weights
seeded) in each weight format, f32, bf16 and int8, 2,000 characters a call (ms a call / 2 = us a
character). E.g. an AVX2 build's bfloat16 firsts by shift against ``vpshufb`` on an Intel CPU:
``git worktree add /tmp/old ae811b4~1``, then the AVX2 command above with ``--config b --only
sampling``.

(Products as M x K x N, in the layouts ``ops/primitives.py`` and ``ops/recurrent.py`` call them with.)

A checkout is a directory holding ``tinyrnn/`` (e.g. ``git worktree add /tmp/old <commit>``).
Each copy's kernels are compiled into a cache of their own under ``--workdir``, kept between runs
(keyed by their sources, like the package's own cache), so the first run compiles twice.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tinyrnn.nn.cells import GATES

from .configs import CONFIGS, VOCAB, median

NAMES = ("tinyrnn_ab_old", "tinyrnn_ab_new")


def load(checkout: Path, name: str, workdir: Path):
    """Import ``checkout/tinyrnn`` as package ``name`` (a copy of its sources under workdir)."""
    source = Path(checkout) / "tinyrnn"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"error: {checkout} holds no tinyrnn/ package: give a checkout's root directory")
    target = workdir / name
    if target.exists():
        for path in target.rglob("*.py"):
            path.unlink()                    # keep __pycache__ (the compiled kernels), renew sources
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    return importlib.import_module(name)


def cpu_kernels(package):
    """The CPU kernel module of a loaded copy: its own (``backend.kernels`` would give tinyrnn's)."""
    return importlib.import_module(package.__name__ + ".kernels.cpu")


def step_cases(package, cfg_name, only=None):
    """(label, callable) pairs for one training step of a config: its products and sequence kernels
    (``only``: "products" or "sequence" for one kind)."""
    cfg = CONFIGS[cfg_name]
    cpu = cpu_kernels(package)
    G = GATES[cfg["cell"]]
    H, BT, T, B = cfg["hidden"], cfg["batch"] * cfg["seq"], cfg["seq"], cfg["batch"]
    rng = np.random.default_rng(0)

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def product(variant, M, K, N):
        a = normal(K, M) if variant == "tn" else normal(M, K)
        b = normal(N, K) if variant == "nt" else normal(K, N)
        out = np.empty((M, N), np.float32)
        fn = getattr(cpu, "matmul_" + variant)
        return f"{variant} {M}x{K}x{N}", lambda: fn(a, b, out, False)

    cases = []
    if only != "sequence":
        cases += [product("tn", G * H, BT, H), product("nt", BT, H, G * H), product("nn", BT, G * H, H),
                  product("nt", BT, H, VOCAB), product("nn", BT, VOCAB, H), product("tn", VOCAB, BT, H)]
    if only != "products":
        cases += _sequence_cases(cpu, cfg["cell"], T, B, H, G, normal)
    return cases


def _sequence_cases(cpu, cell, T, B, H, G, normal):
    """The fused sequence kernels of ``cell`` at T x B x H, forward then backward (which reads
    the forward's outputs)."""
    if cell not in ("lstm", "gru"):
        return []
    w = (normal(G * H, H) / np.sqrt(H)).astype(np.float32)
    xproj, dhs, zeros = normal(T, B, G * H), normal(T, B, H), np.zeros((B, H), np.float32)
    lengths = np.full(T, B, np.int64)
    # from 2026-12-06 the forward kernels take xproj packed, (T*B, G*H) for a full batch; before, (T, B, G*H)
    packed = hasattr(importlib.import_module(cpu.__name__ + ".sequence"), "_packed_starts")
    x_in = xproj.reshape(T * B, G * H) if packed else xproj
    hs, acts = np.empty((T + 1, B, H), np.float32), np.empty_like(xproj)
    dgates, dh0 = np.empty_like(xproj), np.empty((B, H), np.float32)
    cs, dc0 = np.empty_like(hs), np.empty_like(dh0)                            # LSTM only
    b_hh, ghn, dgh = normal(G * H), np.empty((T, B, H), np.float32), np.empty_like(xproj)  # GRU only

    def forward():
        if cell == "lstm":
            cpu.lstm_sequence_forward(x_in, w, zeros, zeros, lengths, hs, cs, acts)
        else:
            cpu.gru_sequence_forward(x_in, w, b_hh, zeros, lengths, hs, acts, ghn)

    def backward():
        if cell == "lstm":
            cpu.lstm_sequence_backward(w, hs, cs, acts, dhs, zeros, zeros, lengths, dgates, dh0, dc0)
        else:
            cpu.gru_sequence_backward(w, hs, acts, ghn, dhs, zeros, lengths, dgates, dgh, dh0)

    forward()                                # the backward reads what the forward wrote
    return [(f"{cell} sequence forward", forward), (f"{cell} sequence backward", backward)]


SAMPLED = 2000      # characters a sampling call: ~15-50 ms at b, past the call's own ~30 us


def sampling_cases(package, cfg_name):
    """(label, callable) pairs: batch-1 sampling from a config's model (its weights seeded, so
    both checkouts sample from the same model) in each weight format, SAMPLED characters a call,
    the weights converted once (``generate.run_generation``, the kernels alone)."""
    cfg = CONFIGS[cfg_name]
    if cfg["bidir"]:
        raise SystemExit(f"error: config {cfg_name} is bidirectional, and a bidirectional model does not "
                         "sample: choose a, b, c or d")
    generate = importlib.import_module(package.__name__ + ".generate")
    models = importlib.import_module(package.__name__ + ".models")
    kernels = cpu_kernels(package)
    package.manual_seed(0)
    L, H = cfg["layers"], cfg["hidden"]
    model = models.CharRNN(VOCAB, cell=cfg["cell"], hidden=H, layers=L, embed=H)
    model.eval()
    uniforms = np.random.default_rng(0).random(SAMPLED)

    def case(fmt):
        w = generate.generation_weights(model, fmt)
        h, c, out = np.zeros((L, H), np.float32), np.zeros((L, H), np.float32), np.zeros(SAMPLED, np.int64)
        generate.run_generation(kernels, model, w, h, c, np.array([0]), uniforms, 1.0, 0, 1.0, out)

        def call():         # continues from the last character drawn
            generate.run_generation(kernels, model, w, h, c, out[-1:].copy(), uniforms, 1.0, 0, 1.0, out)
        return f"sampling {fmt}, {SAMPLED:,} chars", call

    return [case(fmt) for fmt in ("f32", "bf16", "int8")]


def compare(old_case, new_case, rounds):
    """(old median, new median) in seconds: the two called alternately, rounds times each."""
    (_, old), (_, new) = old_case, new_case
    old(), new()                             # compiled (or loaded) before timing
    times = ([], [])
    for _ in range(rounds):
        for i, fn in enumerate((old, new)):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return median(times[0]), median(times[1])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinyrnn.bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path, help="the checkout to compare against (holds tinyrnn/)")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the checkout measured (default: this package's)")
    parser.add_argument("--config", default="d", choices=sorted(CONFIGS), help="whose training step (default d)")
    parser.add_argument("--rounds", type=int, default=41, help="calls of each, alternating (default 41)")
    parser.add_argument("--only", choices=("products", "sequence", "sampling"), default=None,
                        help="the products only, or the sequence kernels only (default: both); or "
                             "batch-1 sampling from the config's model in each weight format")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tinyrnn-ab"),
                        help="where the copies and their compiled kernels live (default /tmp/tinyrnn-ab)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: give at least 1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    old, new = (load(root, name, args.workdir) for root, name in zip((args.old, args.new), NAMES))
    from ..kernels import isa

    print(f"machine: {isa.describe()} | config {args.config} | {args.rounds} alternating calls, medians", flush=True)
    cases = sampling_cases if args.only == "sampling" else (lambda package, cfg: step_cases(package, cfg, args.only))
    for old_case, new_case in zip(cases(old, args.config), cases(new, args.config)):
        t_old, t_new = compare(old_case, new_case, args.rounds)
        print(f"{old_case[0]:<26} old {t_old * 1e3:8.3f} ms   new {t_new * 1e3:8.3f} ms   new/old {t_new / t_old:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
