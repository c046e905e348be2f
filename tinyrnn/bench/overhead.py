"""Where a training step's time goes: inside the compiled kernels, in numpy array work, or in
Python (the tape, the layers, allocation). Issue 13 asks for the share outside the kernels.

    python -m tinyrnn.bench.overhead --config a --steps 50
    python -m tinyrnn.bench.overhead --config b --threads 2
    python -m tinyrnn.bench.overhead --config a,b --kernels      # and ms a step in each kernel

Every kernel of ``tinyrnn.kernels.cpu`` and every array helper of ``kernels/reference/arrays.py``
(what ops call through ``backend.kernels`` / ``backend.arrays``) is wrapped in a timer for the
measurement, then the same step as ``tinyrnn bench`` (``training.tinyrnn_step_fn``) runs in 5
blocks; the block with the median share outside the kernels is reported. The wrappers' own cost
(timed on a no-op, about half a microsecond per call) times the calls is taken out of the step.
Nested kernel calls are not double-counted: only the calls the ops make are timed.
``--kernels`` also prints the ms a step of each kernel and array helper in that block (the tables
"per kernel" of BENCHMARKS.md), largest first, with its calls a step.
"""
import argparse
import time

BLOCKS = 5      # blocks of steps; the block with the median share outside the kernels is reported


def _timed(fn, totals, key, name):
    """fn, with its seconds added to totals[key] and to totals[("kernel", name)], its calls counted."""
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - t0
            totals[key] += seconds
            totals["calls"] += 1
            totals[("kernel", name)] += seconds
            totals[("calls", name)] += 1
    timed.untimed = fn              # the function itself: a later instrument() wraps it, not this timer
    return timed


def _original(fn):
    """fn without the timer _timed put around it, if any."""
    return getattr(fn, "untimed", fn)


def _wrap(module, name, totals, key):
    setattr(module, name, _timed(_original(getattr(module, name)), totals, key, name))


def wrapper_cost() -> float:
    """Seconds a timer wrapper adds to one call (median of 5 runs of 20,000 calls of a no-op):
    the measurement's own cost, taken out of the step before the shares are computed."""
    import collections

    def nothing(*args):
        return None

    timed = _timed(nothing, collections.Counter(), "x", "nothing")
    args = tuple(range(8))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20_000):
            timed(*args)
        t1 = time.perf_counter()
        for _ in range(20_000):
            nothing(*args)
        runs.append((t1 - t0 - (time.perf_counter() - t1)) / 20_000)
    return sorted(runs)[2]


def instrument(totals):
    """Wrap the CPU kernels and the array helpers the ops call; returns the names wrapped."""
    import importlib

    from ..kernels import SUBMODULES, cpu
    from ..kernels.reference import arrays

    wrapped = []
    for sub in SUBMODULES:
        module = importlib.import_module(f"tinyrnn.kernels.cpu.{sub}")
        for name in dir(module):
            if name.endswith(("_forward", "_backward", "_update")) or name.startswith(("matmul_", "sum_of", "scale_")) \
                    or name in ("add_bias_forward", "bias_backward"):
                if callable(getattr(module, name)) and not name.startswith("_"):
                    setattr(cpu, name, getattr(module, name))   # resolve the lazy name, then wrap it there
                    _wrap(cpu, name, totals, "kernels")
                    wrapped.append(name)
    for name in dir(arrays):
        helper = _original(getattr(arrays, name))
        if not name.startswith("_") and callable(helper) and helper.__module__ == arrays.__name__:
            _wrap(arrays, name, totals, "numpy")
    return wrapped


def measure(config, steps, threads):
    import collections

    from ..backend import set_num_threads
    from .configs import CONFIGS
    from .training import tinyrnn_step_fn

    set_num_threads(threads)
    totals = collections.Counter()
    instrument(totals)
    step = tinyrnn_step_fn(CONFIGS[config])
    for _ in range(3):
        step()
    cost = wrapper_cost()
    blocks = []
    for _ in range(BLOCKS):
        totals.clear()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0 - totals["calls"] * cost) / steps
        kern, arr = totals["kernels"] / steps, totals["numpy"] / steps
        per_kernel = {key[1]: (seconds * 1e3 / steps, totals[("calls", key[1])] / steps)   # name: (ms, calls)
                      for key, seconds in totals.items() if isinstance(key, tuple) and key[0] == "kernel"}
        blocks.append(((wall - kern) / wall, wall, kern, arr, totals["calls"] / steps, per_kernel))
    share, wall, kern, arr, calls, per_kernel = sorted(blocks, key=lambda block: block[0])[BLOCKS // 2]
    return dict(config=config, threads=threads, step_ms=wall * 1e3, kernels_ms=kern * 1e3, numpy_ms=arr * 1e3,
                python_ms=(wall - kern - arr) * 1e3, outside_share=share, timed_calls=calls,
                wrapper_us=cost * 1e6, per_kernel=per_kernel)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="a", help="a config, or several: a,b")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kernels", action="store_true", help="also print ms a step in each kernel and array helper")
    args = p.parse_args(argv)
    results = []
    for config in args.config.split(","):
        r = measure(config, args.steps, args.threads)
        print(f"config {r['config']} ({r['threads']} threads): step {r['step_ms']:.2f} ms = kernels {r['kernels_ms']:.2f} "
              f"+ numpy array ops {r['numpy_ms']:.2f} + Python {r['python_ms']:.2f}; outside the kernels "
              f"{100 * r['outside_share']:.1f}% ({r['timed_calls']:.0f} timed calls a step, "
              f"{r['wrapper_us']:.2f} us of wrapper each taken out)")
        if args.kernels:
            for name, (ms, calls) in sorted(r["per_kernel"].items(), key=lambda item: -item[1][0]):
                print(f"  {name:<28}{ms:8.3f} ms {calls:6.0f} calls")
        results.append(r)
    return results[0] if len(results) == 1 else results


if __name__ == "__main__":
    main()
