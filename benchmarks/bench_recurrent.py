"""Time per step of lstm_sequence_forward + lstm_sequence_backward (float32, 2 threads):
the Numba kernels vs an equivalent numpy implementation (np.matmul per step + numpy gate math).

Each implementation runs in its own subprocess (numba's OpenMP threads and OpenBLAS's threads
spin while idle and slow each other down when they share a process), alternating A/B/A/B
because the machine is noisy; the reported number is the best repeat.

    python benchmarks/bench_recurrent.py [--repeats 3]
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

CONFIGS = [(32, 256, 64), (64, 512, 128)]      # (B, H, T)


def make_inputs(B, H, T, dtype=np.float32):
    rng = np.random.default_rng(0)
    return dict(xproj=rng.standard_normal((T, B, 4 * H)).astype(dtype),
                w_hh=(rng.standard_normal((4 * H, H)) / np.sqrt(H)).astype(dtype),
                h0=np.zeros((B, H), dtype), c0=np.zeros((B, H), dtype),
                dhs=rng.standard_normal((T, B, H)).astype(dtype),
                dh_n=np.zeros((B, H), dtype), dc_n=np.zeros((B, H), dtype))


def numpy_forward(xproj, w_hh, h0, c0, hs, cs, acts):
    """np.matmul per step, gate math in numpy ufuncs with out= (no temporaries in the loop)."""
    T, B, G = xproj.shape
    H = G // 4
    hs[0], cs[0] = h0, c0
    w_t = np.ascontiguousarray(w_hh.T)
    tmp = np.empty((B, H), xproj.dtype)
    for t in range(T):
        a = acts[t]
        np.matmul(hs[t], w_t, out=a)
        a += xproj[t]
        # sigmoid(x) = 0.5 + 0.5 tanh(x / 2) for i, f, o; tanh for g
        a *= 0.5
        a[:, 2 * H:3 * H] *= 2
        np.tanh(a, out=a)
        a[:, :2 * H] *= 0.5
        a[:, :2 * H] += 0.5
        a[:, 3 * H:] *= 0.5
        a[:, 3 * H:] += 0.5
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.multiply(f, cs[t], out=cs[t + 1])
        np.multiply(i, g, out=tmp)
        cs[t + 1] += tmp
        np.tanh(cs[t + 1], out=tmp)
        np.multiply(o, tmp, out=hs[t + 1])


def numpy_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, dgates, dh0, dc0):
    T, B, H = dhs.shape
    dh, dc = dh0, dc0
    dh[...], dc[...] = dh_n, dc_n
    tc, tmp = np.empty((B, H), dh.dtype), np.empty((B, H), dh.dtype)
    deriv = np.empty((B, 4 * H), dh.dtype)
    for t in range(T - 1, -1, -1):
        a, d = acts[t], dgates[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        di, df, dg, do = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
        dh += dhs[t]
        np.tanh(cs[t + 1], out=tc)
        np.multiply(dh, tc, out=do)                 # do = dh * tanh(c)
        np.multiply(tc, tc, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp                                   # dc_total
        np.multiply(dc, g, out=di)
        np.multiply(dc, cs[t], out=df)
        np.multiply(dc, i, out=dg)
        dc *= f
        np.subtract(1, a, out=deriv)                # activation derivatives: a (1 - a) ...
        deriv *= a
        dgd = deriv[:, 2 * H:3 * H]
        np.multiply(g, g, out=dgd)                  # ... and 1 - g^2 for g
        np.subtract(1, dgd, out=dgd)
        d *= deriv
        np.matmul(d, w_hh, out=dh)


def run_impl(impl, B, H, T, repeats):
    a = make_inputs(B, H, T)
    dt = np.float32
    hs, cs = np.zeros((T + 1, B, H), dt), np.zeros((T + 1, B, H), dt)
    acts, dgates = np.zeros((T, B, 4 * H), dt), np.zeros((T, B, 4 * H), dt)
    dh0, dc0 = np.zeros((B, H), dt), np.zeros((B, H), dt)
    if impl == "numba":
        import numba
        from tinyrnn.kernels import cpu
        numba.set_num_threads(2)
        fwd, bwd = cpu.lstm_sequence_forward, cpu.lstm_sequence_backward
    else:
        fwd, bwd = numpy_forward, numpy_backward
    times = {"forward": [], "backward": []}
    for r in range(repeats + 1):                    # the first run compiles / warms up
        t0 = time.perf_counter()
        fwd(a["xproj"], a["w_hh"], a["h0"], a["c0"], hs, cs, acts)
        t1 = time.perf_counter()
        bwd(a["w_hh"], hs, cs, acts, a["dhs"], a["dh_n"], a["dc_n"], dgates, dh0, dc0)
        t2 = time.perf_counter()
        if r:
            times["forward"].append((t1 - t0) / T)
            times["backward"].append((t2 - t1) / T)
    return {k: min(v) for k, v in times.items()}, float(np.abs(hs).sum()), float(np.abs(dh0).sum())


def main():
    repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 3
    if "--child" in sys.argv:
        impl, B, H, T = sys.argv[sys.argv.index("--child") + 1:][:4]
        print(json.dumps(run_impl(impl, int(B), int(H), int(T), repeats)))
        return
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f"float32, 2 threads; microseconds per time step (best of {repeats} x 2 rounds)")
    print(f"{'B':>3} {'H':>4} {'T':>4} | {'impl':>6} | {'forward':>8} {'backward':>9} {'total':>8}")
    for B, H, T in CONFIGS:
        best = {}
        for _ in range(2):
            for impl in ("numpy", "numba"):
                out = subprocess.run([sys.executable, __file__, "--repeats", str(repeats), "--child", impl,
                                      str(B), str(H), str(T)], capture_output=True, text=True, env=env, check=True)
                times, hsum, dhsum = json.loads(out.stdout.strip().splitlines()[-1])
                prev = best.get(impl)
                best[impl] = {k: min(v, prev[0][k]) if prev else v for k, v in times.items()}, hsum, dhsum
        for impl in ("numpy", "numba"):
            t = best[impl][0]
            print(f"{B:>3} {H:>4} {T:>4} | {impl:>6} | {t['forward'] * 1e6:8.0f} {t['backward'] * 1e6:9.0f} "
                  f"{(t['forward'] + t['backward']) * 1e6:8.0f}")
        tn, tb = best["numpy"][0], best["numba"][0]
        print(f"{'':>14}speedup numba vs numpy: "
              f"{(tn['forward'] + tn['backward']) / (tb['forward'] + tb['backward']):.2f}x  "
              f"(outputs agree: {np.isclose(best['numpy'][1], best['numba'][1], rtol=1e-3)})")


if __name__ == "__main__":
    main()
