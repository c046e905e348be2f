"""Benchmark tinyrnn's Numba matmuls against numpy's BLAS (np.matmul) at the same thread count.

    python -m tinyrnn.bench.matmul --threads 2 --repeats 9
    python -m tinyrnn.bench.matmul --shapes 512x200x1024,512x256x1024      # M x K x N, comma-separated
    TINYRNN_MATMUL_TILE=6x64 python -m tinyrnn.bench.matmul                # the AVX-512 tile, anywhere

Each library runs in its own worker process (numba's OpenMP threads and OpenBLAS's threads
both spin while idle, and in one process they slow each other down), and the workers
alternate: tinyrnn, numpy, numpy, tinyrnn, ... for --repeats rounds. A worker sets
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / NUMBA_NUM_THREADS from --threads *before* importing
numpy or numba, warms every case up, then times each case as the median of 3 batches of
calls (about 20 ms each). Reported: the median over rounds of the time per call, the GFLOP/s
it gives, and ratio = numpy_time / tinyrnn_time (above 1: tinyrnn is faster).

OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE and OMP_WAIT_POLICY are passed through from the
environment as they are, and printed: run with them set and unset to compare.
"""
import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = [(32, 256, 1024), (64, 512, 2048), (4096, 256, 1024)]   # (M, K, N)
ENV_SHOWN = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")


def worker(lib, threads, dtype_name, variants, shapes):
    """Time every (variant, shape) with one library; print {key: seconds per call} as JSON."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    import numpy as np
    dtype = np.dtype(dtype_name)
    if lib == "tinyrnn":
        import numba
        from tinyrnn.kernels.cpu import matmul as cpu
        numba.set_num_threads(threads)

    def fn(variant):
        if lib == "tinyrnn":
            kern = getattr(cpu, "matmul_" + variant)
            return lambda a, b, out: kern(a, b, out, False)
        if variant == "nn":
            return lambda a, b, out: np.matmul(a, b, out=out)
        if variant == "nt":
            return lambda a, b, out: np.matmul(a, b.T, out=out)
        return lambda a, b, out: np.matmul(a.T, b, out=out)

    def per_call(f, a, b, out, n):
        t = time.perf_counter()
        for _ in range(n):
            f(a, b, out)
        return (time.perf_counter() - t) / n

    rng = np.random.default_rng(0)
    result = {}
    for variant in variants:
        f = fn(variant)
        for M, K, N in shapes:
            a = rng.standard_normal((K, M) if variant == "tn" else (M, K)).astype(dtype)
            b = rng.standard_normal((N, K) if variant == "nt" else (K, N)).astype(dtype)
            out = np.empty((M, N), dtype)
            f(a, b, out)                                 # compile / load the cache
            # Spot-check 16 entries without BLAS: a BLAS call here would wake OpenBLAS's
            # threads in the tinyrnn worker, and they spin, taking cores from numba's.
            a_ = a.T if variant == "tn" else a
            b_ = b.T if variant == "nt" else b
            for i, j in zip(rng.integers(0, M, 16), rng.integers(0, N, 16)):
                exact = (a_[i].astype(np.float64) * b_[:, j].astype(np.float64)).sum()
                assert abs(out[i, j] - exact) < 1e-3 * K ** 0.5, (lib, variant, out[i, j], exact)
            n = max(1, int(0.02 / per_call(f, a, b, out, 2)))
            times = sorted(per_call(f, a, b, out, n) for _ in range(3))
            result[f"{variant} {M}x{K}x{N}"] = times[1]
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9, help="rounds per library")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--variants", default="nn,nt,tn")
    p.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES), help="MxKxN,...")
    p.add_argument("--worker", choices=["tinyrnn", "numpy"], help=argparse.SUPPRESS)
    args = p.parse_args()
    variants = args.variants.split(",")
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    if args.worker:
        worker(args.worker, args.threads, args.dtype, variants, shapes)
        return

    from ..kernels import isa

    print(isa.describe())
    print(f"threads={args.threads} dtype={args.dtype} repeats={args.repeats} "
          + " ".join(f"{k}={os.environ.get(k, '<unset>')}" for k in ENV_SHOWN), flush=True)
    times = {"tinyrnn": {}, "numpy": {}}
    for r in range(args.repeats):
        for lib in (("tinyrnn", "numpy") if r % 2 == 0 else ("numpy", "tinyrnn")):
            cmd = [sys.executable, "-m", "tinyrnn.bench.matmul", "--worker", lib, "--threads", str(args.threads),
                   "--dtype", args.dtype, "--variants", args.variants, "--shapes", args.shapes]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for key, t in json.loads(out.strip().splitlines()[-1]).items():
                times[lib].setdefault(key, []).append(t)
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])

    print("| variant | M x K x N | tinyrnn us | numpy us | tinyrnn GFLOP/s | numpy GFLOP/s | ratio numpy_t/tinyrnn_t |")
    print("|---|---|---|---|---|---|---|")
    for key in times["tinyrnn"]:
        variant, shape = key.split()
        M, K, N = map(int, shape.split("x"))
        t_ours, t_np = median(times["tinyrnn"][key]), median(times["numpy"][key])
        flop = 2.0 * M * K * N
        print(f"| {variant} | {shape} | {t_ours * 1e6:.1f} | {t_np * 1e6:.1f} | {flop / t_ours / 1e9:.1f} "
              f"| {flop / t_np / 1e9:.1f} | {t_np / t_ours:.2f} |")


if __name__ == "__main__":
    main()
