"""Blocked, register-tiled, multithreaded matrix multiplies (Numba).

    matmul_nn(a[M,K], b[K,N], out[M,N], accumulate)    out (+)= a @ b
    matmul_nt(a[M,K], b[N,K], out[M,N], accumulate)    out (+)= a @ b.T
    matmul_tn(a[K,M], b[K,N], out[M,N], accumulate)    out (+)= a.T @ b

One engine does all three. Each variant is first written as

    out[i, j] (+)= sum_k x[i, k] * y[j, k]          x: (M, K) rows,  y: (N, K) rows

with x and y *views* (no copy): nn is x = a, y = b.T; nt is x = a, y = b; tn is x = a.T, y = b.T.
The engine wants both x and y "k-contiguous" (row-major, a row holds one k range). An operand
that already is (a C-contiguous ``a`` or ``b`` in nt) is read in place; any other one (the
transposed views, strided slices) is *packed*: one block of it is copied, k-contiguous, into
a small workspace right before it is used, as BLAS does. Nothing the size of an input is
ever transposed.

Blocking scheme, from the inside out:

1. Register tile (``_tile_4x4``). A 4 x 4 block of out is 16 dot products of length kc.
   The k loop keeps the 16 running sums in 16 SIMD registers (LLVM vectorises the k loop
   because ``fastmath`` allows re-association) and loads 4 rows of x and 4 rows of y per
   step: 8 vector loads feed 16 fused multiply-adds. At the end the 16 vectors are summed
   across lanes and added into out. On this AVX-512 machine one 4 x 4 tile runs at about
   the core's peak when its operands sit in L1. (An outer-product tile, vectorised along
   n, would need the accumulators in a local array, which LLVM keeps in memory, not
   registers: 20x slower here.)
2. Cache block over k (``KC``). A 4-row strip of x is KC numbers per row: 4 KB for float32
   at KC = 256, so it stays in L1 while it is multiplied against every 4-row strip of y
   (``_block``: strips of x outside, strips of y inside).
3. Cache block over n (``NB``): out is cut into NB-wide column panels. A panel's block of y
   (NB x KC, 128 KB at float32) stays in L2 while the rows of x stream past it; when y
   must be packed, that block is packed once per k block and reused by every row of the
   tile. When x must be packed it goes MB rows at a time (MB x KC, in L2 as well).
4. Threads: the panels are cut into row chunks only as far as needed to give each thread
   about two tiles (tall tiles = few repacks of y). ``prange`` runs over the threads, each
   taking tiles w, w + n_threads, ... and owning one packing workspace, allocated once per
   call. Every element of out belongs to exactly one tile, so no two threads write it.

Edges (M or N not a multiple of 4, any K) fall back to single dot products (``_dot``).

Serial building blocks other kernels can call inside their own ``prange``:

    gemm_nt_block(x, y, out, i0, i1, j0, j1, accumulate)
        out[i0:i1, j0:j1] (+)= x[i0:i1, :] @ y[j0:j1, :].T      x, y C-contiguous
"""
import numpy as np
import numba

from ..jit import kernel, parallel_kernel, prange

MR = 4      # register tile rows (rows of x)
NR = 4      # register tile cols (rows of y)
KC = 256    # k block: one 4-row strip of x (and y) is 4*KC numbers
MB = 128    # rows of x packed at a time (when x must be packed)
NB = 128    # cols of out per tile (rows of y per packed y block)


# ----------------------------------------------------------------------------- register tiles

@kernel
def _tile_4x4(x, xi, xk, y, yj, yk, kc, out, oi, oj, add):
    """out[oi:oi+4, oj:oj+4] (+)= x[xi:xi+4, xk:xk+kc] @ y[yj:yj+4, yk:yk+kc].T

    x, y: C-contiguous (k is the fast axis). ``add`` False overwrites out."""
    z = x.dtype.type(0)
    c00 = c01 = c02 = c03 = z
    c10 = c11 = c12 = c13 = z
    c20 = c21 = c22 = c23 = z
    c30 = c31 = c32 = c33 = z
    # Row slices, indexed from 0: LLVM then sees plain unit-stride loads and vectorises.
    xr0 = x[xi, xk:xk + kc]
    xr1 = x[xi + 1, xk:xk + kc]
    xr2 = x[xi + 2, xk:xk + kc]
    xr3 = x[xi + 3, xk:xk + kc]
    yr0 = y[yj, yk:yk + kc]
    yr1 = y[yj + 1, yk:yk + kc]
    yr2 = y[yj + 2, yk:yk + kc]
    yr3 = y[yj + 3, yk:yk + kc]
    for p in range(kc):
        x0 = xr0[p]
        x1 = xr1[p]
        x2 = xr2[p]
        x3 = xr3[p]
        y0 = yr0[p]
        y1 = yr1[p]
        y2 = yr2[p]
        y3 = yr3[p]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    if not add:
        for r in range(4):
            for c in range(4):
                out[oi + r, oj + c] = z
    out[oi, oj] += c00
    out[oi, oj + 1] += c01
    out[oi, oj + 2] += c02
    out[oi, oj + 3] += c03
    out[oi + 1, oj] += c10
    out[oi + 1, oj + 1] += c11
    out[oi + 1, oj + 2] += c12
    out[oi + 1, oj + 3] += c13
    out[oi + 2, oj] += c20
    out[oi + 2, oj + 1] += c21
    out[oi + 2, oj + 2] += c22
    out[oi + 2, oj + 3] += c23
    out[oi + 3, oj] += c30
    out[oi + 3, oj + 1] += c31
    out[oi + 3, oj + 2] += c32
    out[oi + 3, oj + 3] += c33


@kernel
def _dot(x, xi, xk, y, yj, yk, kc):
    """sum_p x[xi, xk+p] * y[yj, yk+p]: one element, for the ragged edges of a block."""
    xr = x[xi, xk:xk + kc]
    yr = y[yj, yk:yk + kc]
    s = x.dtype.type(0)
    for p in range(kc):
        s += xr[p] * yr[p]
    return s


@kernel
def _block(x, xi0, xk, y, yj0, yk, kc, out, oi0, oj0, m, n, add):
    """out[oi0:oi0+m, oj0:oj0+n] (+)= x[xi0:xi0+m, xk:xk+kc] @ y[yj0:yj0+n, yk:yk+kc].T

    x, y C-contiguous. 4x4 register tiles, dot products on the ragged edges. The loop over
    the 4-row strips of x is outside, so one x strip (4*kc numbers) stays in L1 while the
    strips of y stream past it."""
    m4 = m - m % MR
    n4 = n - n % NR
    for i in range(0, m4, MR):
        for j in range(0, n4, NR):
            _tile_4x4(x, xi0 + i, xk, y, yj0 + j, yk, kc, out, oi0 + i, oj0 + j, add)
        for j in range(n4, n):
            for r in range(MR):
                s = _dot(x, xi0 + i + r, xk, y, yj0 + j, yk, kc)
                if add:
                    out[oi0 + i + r, oj0 + j] += s
                else:
                    out[oi0 + i + r, oj0 + j] = s
    for i in range(m4, m):
        for j in range(n):
            s = _dot(x, xi0 + i, xk, y, yj0 + j, yk, kc)
            if add:
                out[oi0 + i, oj0 + j] += s
            else:
                out[oi0 + i, oj0 + j] = s


@kernel
def gemm_nt_block(x, y, out, i0, i1, j0, j1, accumulate):
    """out[i0:i1, j0:j1] (+)= x[i0:i1, :] @ y[j0:j1, :].T   (serial; call it inside a prange)

    x: (M, K) and y: (N, K) C-contiguous, out: (M, N). K is blocked by KC so the working
    set stays in cache. E.g. h @ W_hh.T for rows i0:i1 of a batch: x = h, y = W_hh."""
    K = x.shape[1]
    if K == 0:
        if not accumulate:
            for i in range(i0, i1):
                for j in range(j0, j1):
                    out[i, j] = 0
        return
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        add = accumulate or k0 > 0
        _block(x, i0, k0, y, j0, k0, kc, out, i0, j0, i1 - i0, j1 - j0, add)


# ----------------------------------------------------------------------------- packing

TB = 16     # transpose block of _pack


@kernel
def _pack(src, st, r0, nrows, k0, kc, dst):
    """dst[r, p] = x[r0 + r, k0 + p] for r < nrows, p < kc: a k-contiguous copy of a block of x.

    x is given as its memory, src (1-D), and its strides in elements, st: x[r, p] is
    src[r*st[0] + p*st[1]]. (One type for every layout: one compilation, not one per layout.)
    When k is the slow axis of x (a transposed view such as b.T) the copy goes by TB x TB
    squares with constant bounds, which LLVM turns into vector loads, in-register shuffles
    and vector stores: 3x faster here than element by element."""
    s0, s1 = st
    if s1 == 1:                                   # rows of x are contiguous: row copies
        for r in range(nrows):
            row = src[(r0 + r) * s0 + k0:(r0 + r) * s0 + k0 + kc]
            for p in range(kc):
                dst[r, p] = row[p]
    elif s0 == 1:                                 # columns of x are contiguous: transpose
        rt = nrows - nrows % TB
        pt = kc - kc % TB
        for rb in range(0, rt, TB):
            for pb in range(0, pt, TB):
                for pp in range(TB):
                    col = src[(k0 + pb + pp) * s1 + r0 + rb:(k0 + pb + pp) * s1 + r0 + rb + TB]
                    for rr in range(TB):
                        dst[rb + rr, pb + pp] = col[rr]
            for p in range(pt, kc):
                for rr in range(TB):
                    dst[rb + rr, p] = src[(k0 + p) * s1 + r0 + rb + rr]
        for p in range(kc):
            for r in range(rt, nrows):
                dst[r, p] = src[(k0 + p) * s1 + r0 + r]
    else:                                         # any other strides
        for r in range(nrows):
            for p in range(kc):
                dst[r, p] = src[(r0 + r) * s0 + (k0 + p) * s1]


# ----------------------------------------------------------------------------- the engine

@kernel
def _gemm_tile(xd, xs, xst, pack_x, yd, ys, yst, pack_y, K, out, accumulate, i0, i1, j0, j1, wx, wy):
    """One thread's tile: out[i0:i1, j0:j1] (+)= x[i0:i1, :] @ y[j0:j1, :].T   (K >= 1)

    Each operand comes twice: xd is x itself when it is C-contiguous (read in place); when
    it is not (pack_x), xs / xst is its memory and strides (see ``_pack``), copied one block
    at a time into the workspace wx (MB x KC). The unused one is a 1 x 1 dummy. Same for y:
    its NB x KC block is packed once per k block and reused by all rows i0:i1."""
    n = j1 - j0
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        add = accumulate or k0 > 0
        if pack_y:
            _pack(ys, yst, j0, n, k0, kc, wy)
            yb, yj, yk = wy, 0, 0
        else:
            yb, yj, yk = yd, j0, k0
        for ii in range(i0, i1, MB):
            m = min(MB, i1 - ii)
            if pack_x:
                _pack(xs, xst, ii, m, k0, kc, wx)
                xb, xi, xk = wx, 0, 0
            else:
                xb, xi, xk = xd, ii, k0
            _block(xb, xi, xk, yb, yj, yk, kc, out, ii, j0, m, n, add)


@parallel_kernel
def _gemm(xd, xs, xst, pack_x, yd, ys, yst, pack_y, K, out, accumulate, n_threads):
    """out[M,N] (+)= x[M,K] @ y[N,K].T (x, y as in ``_gemm_tile``), multithreaded.

    out is cut into column panels (NB wide, 4 NB when x is packed) and, only as far as needed to give every thread
    about two tiles, into row chunks: tall tiles reuse each packed block of y for many rows.
    ``prange`` runs over the threads, not the tiles, so each thread owns one packing
    workspace (allocated here, once per call) and takes tiles w, w + n_workers, ..."""
    M, N = out.shape
    # Panel width: NB, or 4 NB when x is packed too (tn), so each block of x is packed
    # N / (4 NB) times rather than N / NB times (a 512 x KC block of y still fits in L2).
    nb = NB * 4 if pack_x else NB
    n_nt = (N + nb - 1) // nb
    n_mc = min((2 * n_threads + n_nt - 1) // n_nt, (M + MB - 1) // MB)
    mc = (((M + n_mc - 1) // n_mc + MR - 1) // MR) * MR     # rows per chunk, a multiple of MR
    n_mc = (M + mc - 1) // mc
    n_tiles = n_mc * n_nt
    n_workers = max(1, min(n_threads, n_tiles))
    kc_max = min(KC, K)
    wx = np.empty((n_workers, MB if pack_x else 1, kc_max if pack_x else 1), dtype=out.dtype)
    wy = np.empty((n_workers, nb if pack_y else 1, kc_max if pack_y else 1), dtype=out.dtype)
    for w in prange(n_workers):
        for t in range(w, n_tiles, n_workers):
            i0 = (t // n_nt) * mc
            j0 = (t % n_nt) * nb
            _gemm_tile(xd, xs, xst, pack_x, yd, ys, yst, pack_y, K, out, accumulate,
                       i0, min(i0 + mc, M), j0, min(j0 + nb, N), wx[w], wy[w])


def _memory_and_strides(x):
    """x (R, C) as (flat, (s0, s1)) with x[r, c] == flat[r*s0 + c*s1]: a 1-D read-only view
    of the memory x spans, and its strides in elements. No copy, except for the odd array
    with negative or unaligned strides."""
    item = x.itemsize
    if any(s < 0 or s % item for s in x.strides):
        x = np.ascontiguousarray(x)
    s0, s1 = x.strides[0] // item, x.strides[1] // item
    span = (x.shape[0] - 1) * s0 + (x.shape[1] - 1) * s1 + 1
    flat = np.lib.stride_tricks.as_strided(x, shape=(span,), strides=(item,), writeable=False)
    return flat, (s0, s1)


def _run(x, y, out, accumulate):
    """out (+)= x @ y.T for views x (M, K), y (N, K); packs whichever is not C-contiguous."""
    assert x.dtype == y.dtype == out.dtype and out.dtype in (np.float32, np.float64)
    assert x.shape[1] == y.shape[1] and out.shape == (x.shape[0], y.shape[0])
    if out.size == 0:
        return
    if x.shape[1] == 0:
        if not accumulate:
            out[...] = 0
        return
    # An operand read in place must be typed C-contiguous (so the tile loops vectorise); one
    # that is packed goes in as memory + strides, so every layout shares one compilation.
    dummy2d = np.zeros((1, 1), out.dtype)
    dummy_memory = _memory_and_strides(dummy2d)
    pack_x = not x.flags.c_contiguous
    pack_y = not y.flags.c_contiguous
    xd, (xs, xst) = (dummy2d, _memory_and_strides(x)) if pack_x else (x, dummy_memory)
    yd, (ys, yst) = (dummy2d, _memory_and_strides(y)) if pack_y else (y, dummy_memory)
    _gemm(xd, xs, xst, pack_x, yd, ys, yst, pack_y, x.shape[1], out, bool(accumulate),
          numba.get_num_threads())


def matmul_nn(a, b, out, accumulate):
    """out[M,N] (+)= a[M,K] @ b[K,N]."""
    _run(a, b.T, out, accumulate)


def matmul_nt(a, b, out, accumulate):
    """out[M,N] (+)= a[M,K] @ b[N,K].T."""
    _run(a, b, out, accumulate)


def matmul_tn(a, b, out, accumulate):
    """out[M,N] (+)= a[K,M].T @ b[K,N]."""
    _run(a.T, b.T, out, accumulate)
