"""Time per step of the fused sequence kernels, forward and backward (float32): the Numba kernels
(lstm/gru_sequence_forward/backward) vs an equivalent numpy implementation (np.matmul per step +
numpy gate math with out=, no temporaries).

Each implementation runs in its own subprocess (numba's OpenMP threads and OpenBLAS's threads
spin while idle and slow each other down when they share a process), alternating A/B/A/B
because the machine is noisy; the reported number is the median of the repeats, best of 2 rounds.

    python -m tinyrnn.bench.recurrent [--repeats 5] [--threads 2] [--cpu-time]

--threads N sets both numba's and OpenBLAS's thread count. --cpu-time measures process CPU time
(time.process_time) instead of wall clock: with --threads 1 that is the reliable signal on a
shared, loaded machine (2-thread wall clock there is dominated by descheduling: a parallel
region waits for its slowest thread).
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

CONFIGS = [("lstm", 32, 128, 64), ("lstm", 32, 256, 64), ("lstm", 64, 512, 128), ("gru", 32, 256, 64)]


def make_inputs(B, H, T, G=4, dtype=np.float32):
    rng = np.random.default_rng(0)
    return dict(xproj=rng.standard_normal((T, B, G * H)).astype(dtype),
                w_hh=(rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(dtype),
                b_hh=(0.1 * rng.standard_normal(G * H)).astype(dtype),
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


def numpy_gru_forward(xproj, w_hh, b_hh, h0, hs, acts, ghn):
    T, B, G = xproj.shape
    H = G // 3
    hs[0] = h0
    w_t = np.ascontiguousarray(w_hh.T)
    gh, tmp = np.empty((B, 3 * H), xproj.dtype), np.empty((B, H), xproj.dtype)
    for t in range(T):
        a, x = acts[t], xproj[t]
        np.matmul(hs[t], w_t, out=gh)
        gh += b_hh
        ghn[t] = gh[:, 2 * H:]
        rz = a[:, :2 * H]
        np.add(x[:, :2 * H], gh[:, :2 * H], out=rz)      # sigmoid(v) = 0.5 + 0.5 tanh(v / 2)
        rz *= 0.5
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        np.multiply(r, ghn[t], out=n)
        n += x[:, 2 * H:]
        np.tanh(n, out=n)
        np.subtract(hs[t], n, out=tmp)                   # h = n + z (h_prev - n)
        tmp *= z
        np.add(n, tmp, out=hs[t + 1])


def numpy_gru_backward(w_hh, hs, acts, ghn, dhs, dh_n, dgi, dgh, dh0):
    T, B, H = dhs.shape
    dh = dh0
    dh[...] = dh_n
    tmp = np.empty((B, H), dh.dtype)
    for t in range(T - 1, -1, -1):
        a, di, dg = acts[t], dgi[t], dgh[t]
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        dr, dz, dn = di[:, :H], di[:, H:2 * H], di[:, 2 * H:]
        dh += dhs[t]
        np.multiply(n, n, out=tmp)                       # dn = dh (1 - z) (1 - n^2)
        np.subtract(1, tmp, out=tmp)
        np.multiply(dh, tmp, out=dn)
        np.subtract(1, z, out=tmp)
        dn *= tmp
        np.multiply(dn, ghn[t], out=dr)                  # dr = dn ghn r (1 - r)
        np.subtract(1, r, out=tmp)
        tmp *= r
        dr *= tmp
        np.subtract(hs[t], n, out=dz)                    # dz = dh (h_prev - n) z (1 - z)
        dz *= dh
        np.subtract(1, z, out=tmp)
        tmp *= z
        dz *= tmp
        dg[:, :2 * H] = di[:, :2 * H]
        np.multiply(dn, r, out=dg[:, 2 * H:])
        dh *= z
        dh += dg @ w_hh


def run_impl(kind, impl, B, H, T, repeats, threads, cpu_time):
    G = 4 if kind == "lstm" else 3
    a = make_inputs(B, H, T, G)
    dt = np.float32
    hs, cs = np.zeros((T + 1, B, H), dt), np.zeros((T + 1, B, H), dt)
    acts, d1, d2 = np.zeros((T, B, G * H), dt), np.zeros((T, B, G * H), dt), np.zeros((T, B, G * H), dt)
    ghn = np.zeros((T, B, H), dt)
    dh0, dc0 = np.zeros((B, H), dt), np.zeros((B, H), dt)
    if impl == "numba":
        import numba
        from tinyrnn.kernels import cpu as k
        numba.set_num_threads(threads)
    else:
        k = None
    sizes = (np.full(T, B, np.int64),) if k else ()     # the kernels' batch_sizes (a full batch)
    xproj = a["xproj"].reshape(T * B, G * H) if k else a["xproj"]     # the kernels take it packed: (T*B, G*H)
    if kind == "lstm":
        fwd, bwd = (k.lstm_sequence_forward, k.lstm_sequence_backward) if k else (numpy_forward, numpy_backward)
        fwd_args = (xproj, a["w_hh"], a["h0"], a["c0"]) + sizes + (hs, cs, acts)
        bwd_args = (a["w_hh"], hs, cs, acts, a["dhs"], a["dh_n"], a["dc_n"]) + sizes + (d1, dh0, dc0)
    else:
        fwd, bwd = (k.gru_sequence_forward, k.gru_sequence_backward) if k else (numpy_gru_forward, numpy_gru_backward)
        fwd_args = (xproj, a["w_hh"], a["b_hh"], a["h0"]) + sizes + (hs, acts, ghn)
        bwd_args = (a["w_hh"], hs, acts, ghn, a["dhs"], a["dh_n"]) + sizes + (d1, d2, dh0)
    clock = time.process_time if cpu_time else time.perf_counter
    times = {"forward": [], "backward": []}
    for r in range(repeats + 1):                    # the first run compiles / warms up
        t0 = clock()
        fwd(*fwd_args)
        t1 = clock()
        bwd(*bwd_args)
        t2 = clock()
        if r:
            times["forward"].append((t1 - t0) / T)
            times["backward"].append((t2 - t1) / T)
    return ({k: float(np.median(v)) for k, v in times.items()}, float(np.abs(hs).sum()),
            float(np.abs(dh0).sum()))


def main():
    def option(name, default):
        return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
    repeats, threads, cpu_time = option("--repeats", 5), option("--threads", 2), "--cpu-time" in sys.argv
    if "--child" in sys.argv:
        kind, impl, B, H, T = sys.argv[sys.argv.index("--child") + 1:][:5]
        print(json.dumps(run_impl(kind, impl, int(B), int(H), int(T), repeats, threads, cpu_time)))
        return
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
               NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    flags = ["--repeats", str(repeats), "--threads", str(threads)] + (["--cpu-time"] if cpu_time else [])
    clock = "CPU time" if cpu_time else "wall clock"
    print(f"float32, {threads} thread(s), {clock}; microseconds per time step "
          f"(median of {repeats}, best of 2 rounds); load average {os.getloadavg()[0]:.1f}")
    print(f"{'kind':>4} {'B':>3} {'H':>4} {'T':>4} | {'impl':>6} | {'forward':>8} {'backward':>9} {'total':>8}")
    for kind, B, H, T in CONFIGS:
        best = {}
        for _ in range(2):
            for impl in ("numpy", "numba"):
                out = subprocess.run([sys.executable, "-m", "tinyrnn.bench.recurrent", *flags, "--child", kind, impl, str(B), str(H), str(T)],
                                     capture_output=True, text=True, env=env, check=True)
                times, hsum, dhsum = json.loads(out.stdout.strip().splitlines()[-1])
                prev = best.get(impl)
                best[impl] = {k: min(v, prev[0][k]) if prev else v for k, v in times.items()}, hsum, dhsum
        for impl in ("numpy", "numba"):
            t = best[impl][0]
            print(f"{kind:>4} {B:>3} {H:>4} {T:>4} | {impl:>6} | {t['forward'] * 1e6:8.0f} {t['backward'] * 1e6:9.0f} "
                  f"{(t['forward'] + t['backward']) * 1e6:8.0f}")
        tn, tb = best["numpy"][0], best["numba"][0]
        agree = np.isclose(best["numpy"][1], best["numba"][1], rtol=1e-3) and \
            np.isclose(best["numpy"][2], best["numba"][2], rtol=1e-3)
        print(f"{'':>19}speedup numba vs numpy: "
              f"{(tn['forward'] + tn['backward']) / (tb['forward'] + tb['backward']):.2f}x  (outputs agree: {agree})")


if __name__ == "__main__":
    main()
