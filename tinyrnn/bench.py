"""The speed benchmark: tinyrnn and PyTorch side by side, in one run, on the same thread count.

    python -m tinyrnn.bench                 # everything (PyTorch columns when torch is installed)
    python -m tinyrnn.bench --configs a,b --repeats 5 --threads 2
    python -m tinyrnn.bench --skip sampling,help,startup,rss   # training throughput only
    tinyrnn bench ...                       # the same, from the CLI

Every config is a character model: vocab 65, embedding size = hidden size, a full softmax head;
one training step = forward, backward, clip_grad_norm(1.0), Adam. Throughput is chars/s =
B*T / (median seconds per step). The FLOP limit is the chars/s reachable at this machine's
measured float32 matmul peak, with training FLOPs per char ~ 3x the forward FLOPs:
    recurrent layer: 3 * 2 * G*H * (I + H)      (G = 4 for LSTM, 3 for GRU; x2 if bidirectional)
    head:            3 * 2 * H_out * V
Run it on a quiet machine; it prints medians of --repeats timed blocks.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tinyrnn.nn.cells import GATES

CONFIGS = {
    "a": dict(cell="lstm", layers=1, hidden=128, batch=32, seq=64, bidir=False),
    "b": dict(cell="lstm", layers=2, hidden=256, batch=32, seq=64, bidir=False),
    "c": dict(cell="lstm", layers=2, hidden=512, batch=64, seq=128, bidir=False),
    "d": dict(cell="gru", layers=2, hidden=256, batch=32, seq=64, bidir=False),
    "e": dict(cell="gru", layers=1, hidden=256, batch=32, seq=64, bidir=True),
}
VOCAB = 65


def train_flops_per_char(cfg) -> float:
    H, G, D = cfg["hidden"], GATES[cfg["cell"]], 2 if cfg["bidir"] else 1
    flops = 0.0
    for layer in range(cfg["layers"]):
        I = H if layer == 0 else H * D
        flops += D * 3 * 2 * G * H * (I + H)
    return flops + 3 * 2 * H * D * VOCAB


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _batch(cfg, rng, np):
    x = rng.integers(0, VOCAB, size=(cfg["seq"], cfg["batch"]))
    y = rng.integers(0, VOCAB, size=(cfg["seq"], cfg["batch"]))
    return x, y


# ---- tinyrnn -------------------------------------------------------------------------------------
def tinyrnn_model(cfg):
    from tinyrnn import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            H = cfg["hidden"]
            self.embed = nn.Embedding(VOCAB, H)
            layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg["cell"]]
            self.rnn = layer(H, H, num_layers=cfg["layers"], bidirectional=cfg["bidir"])
            self.head = nn.Linear(H * (2 if cfg["bidir"] else 1), VOCAB)

        def forward(self, x):
            out, _ = self.rnn(self.embed(x))
            return self.head(out)

    return Model()


def tinyrnn_step_fn(cfg):
    import numpy as np

    from tinyrnn import functional as F
    from tinyrnn import manual_seed, optim

    manual_seed(0)
    model = tinyrnn_model(cfg)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def step():
        x, y = _batch(cfg, rng, np)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


# ---- PyTorch -------------------------------------------------------------------------------------
def torch_step_fn(cfg):
    import numpy as np
    import torch

    torch.manual_seed(0)
    H, D = cfg["hidden"], 2 if cfg["bidir"] else 1
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cfg["cell"]]
    embed = torch.nn.Embedding(VOCAB, H)
    rnn = layer(H, H, num_layers=cfg["layers"], bidirectional=cfg["bidir"])
    head = torch.nn.Linear(H * D, VOCAB)
    params = list(embed.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(0)

    def step():
        x, y = _batch(cfg, rng, np)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        out, _ = rnn(embed(x))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    return step


def time_steps(step, steps: int, repeats: int, warmup: int = 2) -> float:
    """Median seconds per step over ``repeats`` blocks of ``steps`` steps."""
    for _ in range(warmup):
        step()
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        blocks.append((time.perf_counter() - t0) / steps)
    return _median(blocks)


_PEAK = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
b = a.copy(); a @ b
times = []
for _ in range(7):
    t0 = time.perf_counter(); a @ b; times.append(time.perf_counter() - t0)
print(2 * 2048 ** 3 / sorted(times)[3] / 1e9)
"""


def matmul_peak_gflops(threads: int) -> float:
    """The machine's float32 GEMM rate: numpy's BLAS at 2048^3, in a fresh process.

    OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed for this one measurement: some environments
    pin OpenBLAS to an older kernel (e.g. Haswell's AVX2) for safety, which understates the peak.
    """
    env = _thread_env(threads)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, "-c", _PEAK], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


# ---- sampling --------------------------------------------------------------------------------------
def tinyrnn_sampling_rate(cfg, length: int) -> float:
    """Batch-1 generation through the fused generation kernel (what `tinyrnn sample` runs)."""
    from tinyrnn import manual_seed
    from tinyrnn.generate import sample_indices
    from tinyrnn.models import CharRNN

    manual_seed(0)
    model = CharRNN(VOCAB, cell=cfg["cell"], hidden=cfg["hidden"], layers=cfg["layers"], embed=cfg["hidden"])
    model.eval()
    for _ in sample_indices(model, [0], 10, temperature=1.0, seed=0):  # compile / warm up
        pass
    t0 = time.perf_counter()
    n = sum(len(chunk) for chunk in sample_indices(model, [0], length, temperature=1.0, seed=0))
    return n / (time.perf_counter() - t0)


def torch_sampling_rate(cfg, length: int) -> float:
    import torch

    torch.manual_seed(0)
    H = cfg["hidden"]
    embed = torch.nn.Embedding(VOCAB, H)
    rnn = torch.nn.LSTM(H, H, num_layers=cfg["layers"])
    head = torch.nn.Linear(H, VOCAB)

    def run(n):
        with torch.no_grad():
            idx, state = torch.zeros((1, 1), dtype=torch.long), None
            for _ in range(n):
                out, state = rnn(embed(idx), state)
                probs = torch.softmax(head(out[-1]), dim=-1)
                idx = torch.multinomial(probs, 1)

    run(10)
    t0 = time.perf_counter()
    run(length)
    return length / (time.perf_counter() - t0)


# ---- start-up and memory (each in a fresh process) -------------------------------------------------
def help_time(repeats=5) -> float:
    """Seconds for `tinyrnn --help` in a fresh interpreter (median)."""
    import importlib.util

    module = "tinyrnn_cli.main" if importlib.util.find_spec("tinyrnn_cli") else "cli.main"  # installed, or a checkout
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return _median(times)


_FIRST_STEP = """
import time, sys
t0 = time.perf_counter()
from tinyrnn.bench import CONFIGS, tinyrnn_step_fn
step = tinyrnn_step_fn(CONFIGS['b'])
step()
print(time.perf_counter() - t0)
"""


def first_step_time(cache_dir: str | None) -> float:
    """Seconds from interpreter start-up to the end of the first training step of config b."""
    env = dict(os.environ)
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _FIRST_STEP], env=env, capture_output=True, check=True)
    return time.perf_counter() - t0


_PEAK_RSS = """
import resource, sys
from tinyrnn.bench import CONFIGS, tinyrnn_step_fn, torch_step_fn
which = sys.argv[1]
step = (tinyrnn_step_fn if which == 'tinyrnn' else torch_step_fn)(CONFIGS['c'])
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(which: str, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, which], env=_thread_env(threads),
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _thread_env(threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


# ---- isolated measurements --------------------------------------------------------------------------
# Each measurement runs in a fresh worker process: Numba's OpenMP threads and PyTorch's spin-wait
# after their parallel regions, so two frameworks in one process slow each other down.

def run_worker(kind: str, framework: str, config: str, threads: int, steps: int = 0, sample_length: int = 0) -> float:
    code = (f"import sys; from tinyrnn.bench import _measure; "
            f"print(_measure({kind!r}, {framework!r}, {config!r}, {threads}, {steps}, {sample_length}))")
    out = subprocess.run([sys.executable, "-c", code], env=_thread_env(threads), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker {kind}:{framework}:{config} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def _measure(kind, framework, config, threads, steps, sample_length) -> float:
    cfg = CONFIGS[config]
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        from tinyrnn import set_num_threads

        set_num_threads(threads)
    if kind == "sample":
        return (tinyrnn_sampling_rate if framework == "tinyrnn" else torch_sampling_rate)(cfg, sample_length)
    step = (tinyrnn_step_fn if framework == "tinyrnn" else torch_step_fn)(cfg)
    return cfg["batch"] * cfg["seq"] / time_steps(step, steps, repeats=1)


def default_steps(cfg) -> int:
    """Enough steps for a timed block of roughly a second or two."""
    seconds_per_step = train_flops_per_char(cfg) * cfg["batch"] * cfg["seq"] / 100e9
    return int(min(20, max(3, 1.5 / seconds_per_step)))


# ---- main ------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(prog="tinyrnn bench", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--steps", type=int, default=0, help="steps per timed run (default: by config size)")
    parser.add_argument("--sample-length", type=int, default=3000)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    parser.add_argument("--skip", default="", help="comma-separated: train,sampling,help,startup,rss")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    os.environ.update(_thread_env(args.threads))
    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401

            have_torch = True
        except ImportError:
            print("PyTorch not installed: tinyrnn columns only")
    skip = set(filter(None, args.skip.split(",")))
    results = {"threads": args.threads, "configs": {}}
    nan = float("nan")

    def median_of(kind, framework, config, steps=0, length=0):
        return _median([run_worker(kind, framework, config, args.threads, steps, length) for _ in range(args.repeats)])

    peak = max(matmul_peak_gflops(args.threads) for _ in range(3))
    results["matmul_peak_gflops"] = peak
    print(f"matmul peak (numpy float32 2048^3, best of 3, {args.threads} threads): {peak:.0f} GFLOP/s")
    if "train" not in skip:
        print(f"{'cfg':<4}{'model':<22}{'tinyrnn c/s':>12}{'torch c/s':>12}{'ratio':>8}{'FLOP cap':>10}{'% cap':>7}")
    for name in ([] if "train" in skip else args.configs.split(",")):
        cfg = CONFIGS[name]
        steps = args.steps or default_steps(cfg)
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so slow drifts in machine load hit both alike
            ours.append(run_worker("train", "tinyrnn", name, args.threads, steps))
            if have_torch:
                theirs.append(run_worker("train", "torch", name, args.threads, steps))
        ours, theirs = _median(ours), (_median(theirs) if theirs else nan)
        cap = peak * 1e9 / train_flops_per_char(cfg)
        desc = f"{'bi-' if cfg['bidir'] else ''}{cfg['cell'].upper()} {cfg['layers']}x{cfg['hidden']} B{cfg['batch']} T{cfg['seq']}"
        print(f"{name:<4}{desc:<22}{ours:>12.0f}{theirs:>12.0f}{ours / theirs:>8.2f}{cap:>10.0f}{100 * ours / cap:>6.0f}%",
              flush=True)
        results["configs"][name] = dict(tinyrnn=ours, torch=theirs, ratio=ours / theirs, flop_cap=cap)

    if "sampling" not in skip:
        ours = median_of("sample", "tinyrnn", "b", length=args.sample_length)
        theirs = median_of("sample", "torch", "b", length=min(args.sample_length, 500)) if have_torch else nan
        print(f"batch-1 sampling (b): tinyrnn {ours:.0f} chars/s, torch {theirs:.0f} chars/s, ratio {ours / theirs:.1f}")
        results["sampling"] = dict(tinyrnn=ours, torch=theirs, ratio=ours / theirs)
    if "help" not in skip:
        t = help_time()
        print(f"tinyrnn --help: {t:.3f} s (median of 5)")
        results["help_seconds"] = t
    if "startup" not in skip:
        import tempfile

        with tempfile.TemporaryDirectory() as cold:
            cold_t = first_step_time(cold)
        first_step_time(None)  # make sure the default cache is filled
        warm_t = _median([first_step_time(None) for _ in range(3)])
        print(f"time to first training step (b): warm JIT cache {warm_t:.2f} s, cold cache {cold_t:.2f} s")
        results["first_step"] = dict(warm=warm_t, cold=cold_t)
    if "rss" not in skip:
        ours = peak_rss_mb("tinyrnn", args.threads)
        theirs = peak_rss_mb("torch", args.threads) if have_torch else nan
        print(f"peak RSS (c, 3 steps): tinyrnn {ours:.0f} MB, torch {theirs:.0f} MB")
        results["peak_rss_mb"] = dict(tinyrnn=ours, torch=theirs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
