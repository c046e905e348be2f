"""Blocked, multithreaded matrix multiplies (Numba).

    matmul_nn(a[M,K], b[K,N], out[M,N], accumulate)    out (+)= a @ b
    matmul_nt(a[M,K], b[N,K], out[M,N], accumulate)    out (+)= a @ b.T
    matmul_tn(a[K,M], b[K,N], out[M,N], accumulate)    out (+)= a.T @ b

One engine does all three. Each variant is first written as

    out[i, j] (+)= sum_k x[i, k] * y[j, k]          x: (M, K) rows,  y: (N, K) rows

with x and y *views* (no copy): nn is x = a, y = b.T; nt is x = a, y = b; tn is x = a.T, y = b.T.

The engine is BLAS's outer-product scheme. Of x and y, one is the "broadcast side" S and the
other the "vector side" V; the product is computed as S @ V.T, i.e. out or out.T:

    t[r, c] += s[r, k] * v[k, c]     for each k: MR numbers of S times NR numbers of V

1. Micro tile (``_micro``). An MR x NR = 4 x 64 block of the result, held in 16 SIMD
   registers (``simd.py``: 4 rows x 4 vectors of 16 lanes) for the whole k block. For each k,
   4 vectors of V are loaded, and each of the 4 numbers of S is broadcast to all lanes and
   multiplied into its row: 16 fused multiply-adds per 8 loads, no stores, no horizontal sums
   (every lane is its own output). At the end the tile is added into out straight from the
   registers (through a buffer t only at ragged edges). One core runs it at ~250 GFLOP/s
   with data in cache, against ~100 for the same scheme with the tile in a memory buffer.
   Where 6 rows of S are left (``tile_rows``), the tile takes 6 (``_micro6``: 24 registers, the
   count BLIS and oneDNN use on AVX-512): the same 4 loads of V then serve 24 FMAs instead of
   16, a third fewer bytes of V per FLOP, the operand that comes from L2. Blocks of S are cut
   into groups of PH = 48 rows, 8 six-row tiles, so the 4-row tile is left for the ragged end
   of a block only. (With 16-row groups, 6 + 6 + 4, a quarter of the work ran in 4-row tiles,
   which on AVX2 ran at ~83% of the 6-row tile's speed: its 8 FMA chains barely cover the FMA
   latency. With 48-row groups d's three products ran 2-5% faster in the AVX2 build, and from 2%
   slower to 8% faster natively, on the Intel VM, old and new alternating in one process
   (``bench/ab.py``); BENCHMARKS.md.)
   (Numba does not run LLVM's SLP vectoriser, so a tile held in scalar locals would stay
   scalar; hence the explicit vectors. A dot-product tile, vectorised along k, must sum its
   16 vectors across lanes at the end of every k block: at K = 256 that cost ~40% of the time.)
2. Packing. V must give NR consecutive numbers per k, so it is always packed, one KC x NB
   block at a time, into NR-column panels (``_pack_panels``: zero-padded, k-major; on AVX2,
   where a 16-column pass reads a quarter of a panel, each quarter's kc x 16 numbers stored
   together, ``_panel_at``: the AVX2 products then ran as fast as the native ones). S gives
   one number per row and k, broadcast: it is read in place when it is row-major (nn, nt:
   S = a), else packed MB rows at a time into PH-row k-major panels (``_pack``). For tn,
   S = a.T, the 48 numbers of a panel at one k are 48 adjacent numbers of a row of a: three
   vector copies. (Measured at tn 2048x8192x512: read in place down a's columns, 8 KB apart,
   90 ms, as the rows fall into a few cache sets; an element-by-element transposing pack,
   0.7 ns a number, 53 ms; the vector pack, 44 ms.) Which of x, y is S: x, unless y alone is
   k-contiguous; then S = y and out is written transposed.
3. Cache blocks: k by KC = 256, V by at most NB = 512 rows per tile (its packed KC x NB block,
   512 KB at float32, stays in L2), S by MB = 96 rows. Loop order per k block: pack V; for
   each S block: for each 6 or 4 rows of S (``tile_rows``): for each V panel: micro tile into
   out. A panel (KC x NR: 64 KB) does not fit in L1, so it comes from L2 in either order; rows
   first, the tile's rows of S stay in L1 across the panels, and each row of out is written
   from its start to its end, which the L2 prefetcher follows (a row of out is often a 4 KB
   page of its own), where panels first wrote every row of the block 256 bytes at a time.
   Measured on the Intel VM, old and new alternating (``bench/ab.py``): the input projection
   (nt) 0.80-0.94x the time, the head's nn 0.84-0.88x, the others 0.93-1.05x (most runs below
   1); AVX2 build nt 0.89-0.97x (BENCHMARKS.md).
4. Threads: out is cut into tiles (S row chunks x V chunks, ``_tiling``: one or two tiles a
   thread, the cut whose busiest thread has least to compute and pack); ``prange`` runs over the
   threads, each taking tiles w, w + n_threads, ... and owning its workspaces, allocated once
   per call.
   Every element of out belongs to one tile, so no two threads write it.

nt products with few rows (fewer than DOT_MAX_ROWS = 64: h @ W_hh.T at one time step) go to a
dot-product engine that reads both operands in place (``_gemm_dot``: 4 x 4 tiles of dot
products, vectorised along k, KC x 128 blocks): there, transposing all of y into panels would
cost more than it saves. Bigger nt products use the outer-product engine with S = x.

The micro tiles, their stores, the packing and the per-thread tile are ``leaf_kernel``s
(``jit.py``): compiled without Numba's reference counting, which took an atomic instruction
for every row view and argument, ~30 a micro tile (one thread, 32 x 128 @ 128 x 64 in
``gemm_panel_block``: 98 -> 110 GFLOP/s; 2 threads, the engine at 64x512x2048: 2-4% faster).

Serial building blocks other kernels can call inside their own ``prange``:

    gemm_nt_block(x, y, out, i0, i1, j0, j1, accumulate)
        out[i0:i1, j0:j1] (+)= x[i0:i1, :] @ y[j0:j1, :].T      x, y C-contiguous
    gemm_panel_block(s, panel, init, out, out_col, n, add, t)
        out[:, out_col:out_col+n] = (init[...] if add else 0) + s @ W    s, out C-contiguous;
        W (K, 64) packed by pack_panels(w, by_columns, groups) once per call (h @ W, 64 columns
        of W at a time)
"""
import numpy as np
import numba

from ..jit import kernel, leaf_kernel, parallel_kernel, prange
from ..isa import TILE
from .simd import LANES as L, vadd, vfma, vload, vsplat, vstore, vzeros

MR = 4      # the fewest rows of S a micro tile takes (and rows / cols of a dot-product tile)
NR = 4 * L  # numbers of V per k in a packed panel (64): 4 SIMD vectors, the columns of a micro tile
KC = 256    # k block
MB = 96     # rows of S per block (packed at a time when S must be packed; a multiple of PH)
PH = 48     # rows of a packed panel of S: 8 six-row tiles, 3 vectors of 16 a k
NB = 512    # rows of V per thread tile (a multiple of NR): its packed block stays in L2
DB = 128    # cols of out per tile of the dot-product engine
DOT_MAX_ROWS = 64   # nt products with fewer rows of out go to the dot-product engine
NARROW = TILE == "6x16"   # the micro tile in 16-column passes (16-register AVX2), see ``isa.py``
MR_MAX = 6   # the most rows of S a micro tile takes (``tile_rows``)
NARROW_PANEL = 2 * L   # a ragged last panel this narrow takes 16-column passes in its 6-row tiles (``_micro``)


# ----------------------------------------------------------------------------- micro tile

@leaf_kernel
def _micro(s, r0, rlast, sk, kc, v, vo, t, init, out, transposed, oi, oj, mr, nr, add):
    """tile[r, c] = sum_p s[min(r0 + r, rlast), sk + p] * v[_panel_at(vo, kc, p, c)]   (r < 4 or 6, c < NR)
    then out[oi + r, oj + c] = (init[oi + r, oj + c] if add else 0) + tile[r, c] for r < mr, c < nr
    (init is out itself for ``out +=``, or another array of out's shape: xproj + h @ W_hh.T);
    when transposed, out[oj + c, oi + r] (+)= tile[r, c] and init must be out.

    s: S as a 2-D array, row r = row r of S (C-ordered in place, or a strided view of a packed
    block); only s[r, p], one number at a time, is read. v: a packed panel of V, flat, starting
    at vo (``_pack_panels``): NR numbers per k, or on AVX2 four kc x 16 quarters. Rows past
    rlast (the ragged end of a block) repeat row rlast; their results are computed but not
    stored. A full tile goes from the registers straight into out (4 vectors per row); an edge
    tile or a transposed one goes through t (MR_MAX x NR, flat) and ``_store``.

    The tile lives in 16 SIMD registers (``simd.py``: 4 rows x 4 vectors of 16 lanes) for the
    whole k loop. Per k: 4 vector loads of V, and for each of the 4 rows one number of S
    broadcast to all lanes and 4 fused multiply-adds: 16 FMAs per 8 loads, no stores.
    A 6-row tile (mr == 6, given only by ``tile_rows``) is ``_micro6``, the same with 24. On
    AVX2 the 16 vectors are 32 registers of 16, so the tile is done in passes of 16 columns
    (``isa.py``), over 4 rows or 6; so is a 6-row tile of a ragged last panel of at most
    NARROW_PANEL columns everywhere (a vocabulary of 65: 1 column past 64, one pass instead of
    the 4-vector tile; the rare 4-row tiles keep the 4-vector tile, which saves compiling a
    4-row pass: 0.8 s)."""
    if NARROW:
        if mr > MR:
            _micro_quarters6(s, r0, sk, kc, v, vo, t, init, out, transposed, oi, oj, nr, add)
        else:
            _micro_quarters(s, r0, rlast, sk, kc, v, vo, t, init, out, transposed, oi, oj, mr, nr, add)
        return
    if mr > MR:
        if nr <= NARROW_PANEL:
            _micro_quarters6(s, r0, sk, kc, v, vo, t, init, out, transposed, oi, oj, nr, add)
        else:
            _micro6(s, r0, sk, kc, v, vo, t, init, out, transposed, oi, oj, nr, add)
        return
    s0 = s[r0, sk:sk + kc]
    s1 = s[min(r0 + 1, rlast), sk:sk + kc]
    s2 = s[min(r0 + 2, rlast), sk:sk + kc]
    s3 = s[min(r0 + 3, rlast), sk:sk + kc]
    c00 = c01 = c02 = c03 = vzeros(t)       # row r of the tile: c_r0 .. c_r3, 16 lanes each
    c10 = c11 = c12 = c13 = vzeros(t)
    c20 = c21 = c22 = c23 = vzeros(t)
    c30 = c31 = c32 = c33 = vzeros(t)
    for p in range(kc):
        o = vo + p * NR
        b0 = vload(v, o)
        b1 = vload(v, o + L)
        b2 = vload(v, o + 2 * L)
        b3 = vload(v, o + 3 * L)
        a = vsplat(s0[p])
        c00 = vfma(a, b0, c00); c01 = vfma(a, b1, c01); c02 = vfma(a, b2, c02); c03 = vfma(a, b3, c03)  # noqa: E702
        a = vsplat(s1[p])
        c10 = vfma(a, b0, c10); c11 = vfma(a, b1, c11); c12 = vfma(a, b2, c12); c13 = vfma(a, b3, c13)  # noqa: E702
        a = vsplat(s2[p])
        c20 = vfma(a, b0, c20); c21 = vfma(a, b1, c21); c22 = vfma(a, b2, c22); c23 = vfma(a, b3, c23)  # noqa: E702
        a = vsplat(s3[p])
        c30 = vfma(a, b0, c30); c31 = vfma(a, b1, c31); c32 = vfma(a, b2, c32); c33 = vfma(a, b3, c33)  # noqa: E702
    if mr == MR and nr == NR and not transposed:
        _put_row(out[oi], init[oi], oj, add, c00, c01, c02, c03)
        _put_row(out[oi + 1], init[oi + 1], oj, add, c10, c11, c12, c13)
        _put_row(out[oi + 2], init[oi + 2], oj, add, c20, c21, c22, c23)
        _put_row(out[oi + 3], init[oi + 3], oj, add, c30, c31, c32, c33)
    else:
        _put_row(t, t, 0, False, c00, c01, c02, c03)
        _put_row(t, t, NR, False, c10, c11, c12, c13)
        _put_row(t, t, 2 * NR, False, c20, c21, c22, c23)
        _put_row(t, t, 3 * NR, False, c30, c31, c32, c33)
        _store(t, init, out, transposed, oi, oj, mr, nr, add)


@leaf_kernel
def _micro6(s, r0, sk, kc, v, vo, t, init, out, transposed, oi, oj, nr, add):
    """``_micro`` with 6 rows of S, all valid (``tile_rows`` gives 6 only then): a 6 x 64 tile in
    24 AVX-512 registers of accumulators (plus 4 for V and 1 for the broadcast number of S,
    of 32). Per k: 4 vector loads of V, 6 broadcasts, 24 FMAs. t: 6 x NR (flat) for ragged
    tiles. (Measured on Zen 4, whose 512-bit FMAs take two cycles: the same speed as 4 x 64;
    it is meant for Intel's AVX-512 cores, which run two 512-bit FMAs a cycle and there read
    V from L2 at 32 bytes a cycle with 4 rows, 21 with 6.)"""
    s0 = s[r0, sk:sk + kc]
    s1 = s[r0 + 1, sk:sk + kc]
    s2 = s[r0 + 2, sk:sk + kc]
    s3 = s[r0 + 3, sk:sk + kc]
    s4 = s[r0 + 4, sk:sk + kc]
    s5 = s[r0 + 5, sk:sk + kc]
    c00 = c01 = c02 = c03 = vzeros(t)
    c10 = c11 = c12 = c13 = vzeros(t)
    c20 = c21 = c22 = c23 = vzeros(t)
    c30 = c31 = c32 = c33 = vzeros(t)
    c40 = c41 = c42 = c43 = vzeros(t)
    c50 = c51 = c52 = c53 = vzeros(t)
    for p in range(kc):
        o = vo + p * NR
        b0 = vload(v, o)
        b1 = vload(v, o + L)
        b2 = vload(v, o + 2 * L)
        b3 = vload(v, o + 3 * L)
        a = vsplat(s0[p])
        c00 = vfma(a, b0, c00); c01 = vfma(a, b1, c01); c02 = vfma(a, b2, c02); c03 = vfma(a, b3, c03)  # noqa: E702
        a = vsplat(s1[p])
        c10 = vfma(a, b0, c10); c11 = vfma(a, b1, c11); c12 = vfma(a, b2, c12); c13 = vfma(a, b3, c13)  # noqa: E702
        a = vsplat(s2[p])
        c20 = vfma(a, b0, c20); c21 = vfma(a, b1, c21); c22 = vfma(a, b2, c22); c23 = vfma(a, b3, c23)  # noqa: E702
        a = vsplat(s3[p])
        c30 = vfma(a, b0, c30); c31 = vfma(a, b1, c31); c32 = vfma(a, b2, c32); c33 = vfma(a, b3, c33)  # noqa: E702
        a = vsplat(s4[p])
        c40 = vfma(a, b0, c40); c41 = vfma(a, b1, c41); c42 = vfma(a, b2, c42); c43 = vfma(a, b3, c43)  # noqa: E702
        a = vsplat(s5[p])
        c50 = vfma(a, b0, c50); c51 = vfma(a, b1, c51); c52 = vfma(a, b2, c52); c53 = vfma(a, b3, c53)  # noqa: E702
    if nr == NR and not transposed:
        _put_row(out[oi], init[oi], oj, add, c00, c01, c02, c03)
        _put_row(out[oi + 1], init[oi + 1], oj, add, c10, c11, c12, c13)
        _put_row(out[oi + 2], init[oi + 2], oj, add, c20, c21, c22, c23)
        _put_row(out[oi + 3], init[oi + 3], oj, add, c30, c31, c32, c33)
        _put_row(out[oi + 4], init[oi + 4], oj, add, c40, c41, c42, c43)
        _put_row(out[oi + 5], init[oi + 5], oj, add, c50, c51, c52, c53)
    else:
        _put_row(t, t, 0, False, c00, c01, c02, c03)
        _put_row(t, t, NR, False, c10, c11, c12, c13)
        _put_row(t, t, 2 * NR, False, c20, c21, c22, c23)
        _put_row(t, t, 3 * NR, False, c30, c31, c32, c33)
        _put_row(t, t, 4 * NR, False, c40, c41, c42, c43)
        _put_row(t, t, 5 * NR, False, c50, c51, c52, c53)
        _store(t, init, out, transposed, oi, oj, 6, nr, add)


@leaf_kernel
def _micro_quarters(s, r0, rlast, sk, kc, v, vo, t, init, out, transposed, oi, oj, mr, nr, add):
    """``_micro`` for 16-register machines (AVX2): a 4 x 64 tile as four 4 x 16 passes, q = 0..3,
    each over the whole k loop with its 4 vectors (8 AVX2 registers) in registers; passes past
    the nr valid columns are skipped. Per k: 1 vector load of V, 4 broadcasts, 4 FMAs. Each pass
    reads its quarter of the panel, kc x 16 numbers stored contiguously (``_panel_at``): one
    cache line a k, in sequence."""
    s0 = s[r0, sk:sk + kc]
    s1 = s[min(r0 + 1, rlast), sk:sk + kc]
    s2 = s[min(r0 + 2, rlast), sk:sk + kc]
    s3 = s[min(r0 + 3, rlast), sk:sk + kc]
    direct = mr == MR and nr == NR and not transposed
    for q in range((nr + L - 1) // L):
        c0 = c1 = c2 = c3 = vzeros(t)
        for p in range(kc):
            b = vload(v, vo + (q * kc + p) * L)       # v[k0 + p, 16q:16q + 16] (``_panel_at``)
            c0 = vfma(vsplat(s0[p]), b, c0)
            c1 = vfma(vsplat(s1[p]), b, c1)
            c2 = vfma(vsplat(s2[p]), b, c2)
            c3 = vfma(vsplat(s3[p]), b, c3)
        if direct:
            j = oj + q * L
            _put(out[oi], init[oi], j, add, c0)
            _put(out[oi + 1], init[oi + 1], j, add, c1)
            _put(out[oi + 2], init[oi + 2], j, add, c2)
            _put(out[oi + 3], init[oi + 3], j, add, c3)
        else:
            vstore(t, q * L, c0)
            vstore(t, NR + q * L, c1)
            vstore(t, 2 * NR + q * L, c2)
            vstore(t, 3 * NR + q * L, c3)
    if not direct:
        _store(t, init, out, transposed, oi, oj, mr, nr, add)


@leaf_kernel
def _micro_quarters6(s, r0, sk, kc, v, vo, t, init, out, transposed, oi, oj, nr, add):
    """``_micro_quarters`` with 6 rows of S, all valid (``tile_rows`` gives 6 only then): 6 x 16
    passes, 12 AVX2 registers of accumulators (BLIS's Haswell shape), so the FMAs have a third
    more independent chains than the 4 x 16 pass's 8 and each loaded vector of V serves 6
    rows. Per k: 1 vector load of V, 6 broadcasts, 6 FMAs. t: 6 x NR (flat) for ragged tiles.
    Beyond AVX2 a 6-row tile of a ragged last panel of at most NARROW_PANEL columns comes here
    too (``_micro``), the panel k-major there: a pass reads 16 numbers of every NR."""
    s0 = s[r0, sk:sk + kc]
    s1 = s[r0 + 1, sk:sk + kc]
    s2 = s[r0 + 2, sk:sk + kc]
    s3 = s[r0 + 3, sk:sk + kc]
    s4 = s[r0 + 4, sk:sk + kc]
    s5 = s[r0 + 5, sk:sk + kc]
    direct = nr == NR and not transposed
    for q in range((nr + L - 1) // L):
        qo = _panel_at(vo, kc, 0, q * L)          # where v[k0, 16q] is; each k a stride on
        c0 = c1 = c2 = c3 = c4 = c5 = vzeros(t)
        for p in range(kc):
            b = vload(v, qo + p * (L if NARROW else NR))     # v[k0 + p, 16q:16q + 16]
            c0 = vfma(vsplat(s0[p]), b, c0)
            c1 = vfma(vsplat(s1[p]), b, c1)
            c2 = vfma(vsplat(s2[p]), b, c2)
            c3 = vfma(vsplat(s3[p]), b, c3)
            c4 = vfma(vsplat(s4[p]), b, c4)
            c5 = vfma(vsplat(s5[p]), b, c5)
        if direct:
            j = oj + q * L
            _put(out[oi], init[oi], j, add, c0)
            _put(out[oi + 1], init[oi + 1], j, add, c1)
            _put(out[oi + 2], init[oi + 2], j, add, c2)
            _put(out[oi + 3], init[oi + 3], j, add, c3)
            _put(out[oi + 4], init[oi + 4], j, add, c4)
            _put(out[oi + 5], init[oi + 5], j, add, c5)
        else:
            vstore(t, q * L, c0)
            vstore(t, NR + q * L, c1)
            vstore(t, 2 * NR + q * L, c2)
            vstore(t, 3 * NR + q * L, c3)
            vstore(t, 4 * NR + q * L, c4)
            vstore(t, 5 * NR + q * L, c5)
    if not direct:
        _store(t, init, out, transposed, oi, oj, 6, nr, add)


@kernel
def tile_rows(r, m):
    """How many rows of S the micro tile at row r of an m-row block takes: 6 when at least 6 rows
    are left in r's PH-row group (a packed panel of S) and taking 6 leaves no ragged tile that 4
    would avoid (8 left: 4 + 4, not 6 + 2), else MR (4). A 48-row group goes 6 x 8, so 4-row
    tiles come only at a block's end (32 rows: 6 x 4 + 4 + 4); only a 4-row tile may have fewer
    valid rows (min(tile_rows, m - r))."""
    left = min(m - r, PH - r % PH)
    if left >= MR_MAX and left != 8:
        return MR_MAX
    return MR


@leaf_kernel
def _put(row, init_row, j, add, v):
    """row[j:j + L] = (init_row[j:j + L] if add else 0) + v."""
    vstore(row, j, vadd(vload(init_row, j), v) if add else v)


@leaf_kernel
def _put_row(row, init_row, j, add, v0, v1, v2, v3):
    """row[j:j + NR] = (init_row[j:j + NR] if add else 0) + the 4 vectors v0..v3 (a tile's row)."""
    if add:
        v0 = vadd(vload(init_row, j), v0)
        v1 = vadd(vload(init_row, j + L), v1)
        v2 = vadd(vload(init_row, j + 2 * L), v2)
        v3 = vadd(vload(init_row, j + 3 * L), v3)
    vstore(row, j, v0)
    vstore(row, j + L, v1)
    vstore(row, j + 2 * L, v2)
    vstore(row, j + 3 * L, v3)


@leaf_kernel
def _store(t, init, out, transposed, si, vj, mr, nr, add):
    """Write the valid mr x nr corner of the micro tile t into out: t[r, c] (plus init[si + r, vj + c]
    when add) goes to out[si + r, vj + c]; or, when S holds the columns of out, t[r, c] goes to
    out[vj + c, si + r] (added when add: init is out then)."""
    if not transposed:
        for r in range(mr):
            row, tr = out[si + r, vj:vj + nr], t[r * NR:r * NR + nr]     # slices: the loop vectorises
            if add:
                ir = init[si + r, vj:vj + nr]
                for c in range(nr):
                    row[c] = ir[c] + tr[c]
            else:
                for c in range(nr):
                    row[c] = tr[c]
    else:
        for c in range(nr):
            row = out[vj + c]
            if add:
                for r in range(mr):
                    row[si + r] += t[r * NR + c]
            else:
                for r in range(mr):
                    row[si + r] = t[r * NR + c]


# ----------------------------------------------------------------------------- packing

TB = 16     # transpose block of _pack_panels


@leaf_kernel
def _pack(src, st, r0, nrows, k0, kc, dst):
    """dst[i, p, r] = x[r0 + i*PH + r, k0 + p] for p < kc, r < PH (48); 0 for rows past nrows:
    a block of x cut into PH-row panels, each k-major (the 48 numbers of one k side by side).
    The micro tile reads S from it as a strided view: rows j .. j + 5 of panel i are
    ``dst[i, :, j:j + 6].T``.

    x is given as its memory, src (1-D), and its strides in elements, st: x[r, p] is
    src[r*st[0] + p*st[1]]. (One type for every layout: one compilation, not one per layout.)
    When the rows of x are adjacent at each k (s0 == 1: x = a.T, a row-major, as in tn), the 48
    numbers of one k are 48 adjacent numbers of a row of a: three vector loads and stores."""
    s0, s1 = st
    z = dst.dtype.type(0)
    n_full = nrows // PH
    if s0 == 1:
        for p in range(kc):
            b = (k0 + p) * s1 + r0
            for i in range(n_full):
                d = dst[i, p]
                for c in range(0, PH, L):
                    vstore(d, c, vload(src, b + i * PH + c))
    else:
        for i in range(n_full):
            for p in range(kc):
                d = dst[i, p]
                for r in range(PH):
                    d[r] = src[(r0 + i * PH + r) * s0 + (k0 + p) * s1]
    if nrows > n_full * PH:                       # the ragged last panel, zero-padded
        for p in range(kc):
            d = dst[n_full, p]
            for r in range(PH):
                row_index = n_full * PH + r
                d[r] = src[(r0 + row_index) * s0 + (k0 + p) * s1] if row_index < nrows else z


@kernel
def _panel_at(base, kc, p, c):
    """Where v[k0 + p, c] of a packed panel (starting at base, kc numbers of k) is stored: k-major,
    NR numbers a k (base + p*NR + c); or, for the AVX2 passes (NARROW), quarter by quarter: the
    kc x 16 numbers of columns 16q .. 16q + 15 contiguous, so a 6 x 16 pass reads one cache line
    a k, in sequence."""
    if NARROW:
        return base + ((c // L) * kc + p) * L + c % L
    return base + p * NR + c


@leaf_kernel
def _pack_panels(src, st, r0, nrows, k0, kc, dst):
    """dst[_panel_at(q*kc*NR, kc, p, c)] = x[r0 + q*NR + c, k0 + p], 0 where r0 + q*NR + c is
    past nrows: x[r0:r0+nrows, k0:k0+kc] cut into NR-row panels, each stored k-major (NR numbers
    per k; by 16-number quarters on AVX2, ``_panel_at``)."""
    s0, s1 = st
    z = dst.dtype.type(0)
    npan = (nrows + NR - 1) // NR
    for q in range(npan):
        nr = min(NR, nrows - q * NR)
        base = q * kc * NR
        rq = r0 + q * NR
        if s0 == 1:                               # rows of a panel are contiguous at each k
            for p in range(kc):
                col = src[(k0 + p) * s1 + rq:(k0 + p) * s1 + rq + nr]
                if nr == NR:
                    for c in range(0, NR, L):
                        vstore(dst, _panel_at(base, kc, p, c), vload(col, c))
                else:
                    for c in range(NR):
                        dst[_panel_at(base, kc, p, c)] = col[c] if c < nr else z
        elif s1 == 1 and nr == NR:                # k-contiguous rows: transpose TB x TB squares
            pt = kc - kc % TB
            for cb in range(0, NR, TB):
                for pb in range(0, pt, TB):
                    for cc in range(TB):
                        row = src[(rq + cb + cc) * s0 + k0 + pb:(rq + cb + cc) * s0 + k0 + pb + TB]
                        for pp in range(TB):
                            dst[_panel_at(base, kc, pb + pp, cb + cc)] = row[pp]
                for p in range(pt, kc):
                    for cc in range(TB):
                        dst[_panel_at(base, kc, p, cb + cc)] = src[(rq + cb + cc) * s0 + k0 + p]
        else:
            for p in range(kc):
                for c in range(NR):
                    dst[_panel_at(base, kc, p, c)] = src[(rq + c) * s0 + (k0 + p) * s1] if c < nr else z



# ----------------------------------------------------------------------------- the engine

@leaf_kernel
def _gemm_tile(sd, ss, sst, pack_s, vs, vst, K, out, transposed, accumulate, s0, s1, v0, v1, ws, wv, t):
    """One thread's tile: rows s0:s1 of S times rows v0:v1 of V, over all of K (K >= 1).

    S comes twice: sd is S itself when it is k-contiguous (read in place); when it is not
    (pack_s), ss / sst is its memory and strides (see ``_pack``), copied MB rows at a time
    into ws as PH-row panels. V is always packed (memory vs, strides vst), one k block at a
    time, into wv. t is the micro tile buffer."""
    nv = v1 - v0
    n_panels = (nv + NR - 1) // NR
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        add = accumulate or k0 > 0
        _pack_panels(vs, vst, v0, nv, k0, kc, wv)
        for sb in range(s0, s1, MB):
            m = min(MB, s1 - sb)
            if pack_s:
                _pack(ss, sst, sb, m, k0, kc, ws)
            r = 0
            while r < m:
                rows = tile_rows(r, m)
                for q in range(n_panels):
                    nr = min(NR, nv - q * NR)
                    if pack_s:                 # the valid rows r .. r + n - 1 of the packed block, as (n, kc)
                        j, n = r % PH, min(rows, m - r)
                        _micro(ws[r // PH, :, j:j + n].T, 0, n - 1, 0, kc, wv, q * kc * NR, t,
                               out, out, transposed, sb + r, v0 + q * NR, n, nr, add)
                    else:
                        _micro(sd, sb + r, sb + m - 1, k0, kc, wv, q * kc * NR, t,
                               out, out, transposed, sb + r, v0 + q * NR, min(rows, m - r), nr, add)
                r += rows


PACK_COST = 16   # a number packed, in the micro tile's multiply-adds (~0.3 ns against ~0.02, Intel VM)


@kernel
def _tiling(M, N, pack_s, n_threads):
    """(mc, nb): rows of S and rows of V per thread tile, nb a multiple of NR, nb <= NB.

    Threads take tiles w, w + n_threads, ... (``_gemm``), and every tile packs its V rows (and
    its S rows, when pack_s) over all of K: cutting M into n_mc chunks packs V n_mc times,
    cutting N into n_nb chunks packs S n_nb times. Of the cuts into between one and two tiles
    a thread, take the one whose busiest thread has the least work (``_tiling_cost``). (E.g.
    the weight gradient dgates.T @ h at M = 768, N = 256, 2 threads: 2 S chunks of 384, each
    with all of V. The rule until 2026-12-06, "about two tiles a thread, packing least", gave 4
    chunks of 192, which pack V 4 times. At the training step's shapes this cut was up to 33%
    faster, most products 2-8%, a few within +-5%: BENCHMARKS.md.)"""
    max_mc = (M + MR - 1) // MR
    max_nb = (N + NR - 1) // NR
    best_cost, best_mc, best_nb = -1.0, M, NB
    for n_nb in range((N + NB - 1) // NB, max_nb + 1):
        nb = ((N + n_nb - 1) // n_nb + NR - 1) // NR * NR
        n_nb = (N + nb - 1) // nb
        fewest = min(max((n_threads + n_nb - 1) // n_nb, 1), max_mc)
        most = min(max((2 * n_threads + n_nb - 1) // n_nb, 1), max_mc)
        for n_mc in range(fewest, most + 1):
            mc = ((M + n_mc - 1) // n_mc + MR - 1) // MR * MR
            cost = _tiling_cost(M, N, mc, nb, pack_s, n_threads)
            if best_cost < 0 or cost < best_cost:
                best_cost, best_mc, best_nb = cost, mc, nb
        if fewest == 1 and n_nb >= 2 * n_threads:
            break                              # more V chunks only add tiles (and S packing)
    return best_mc, best_nb


@kernel
def _tiling_cost(M, N, mc, nb, pack_s, n_threads):
    """The busiest thread's work per k, in multiply-adds: for each of its tiles, rows x columns
    computed (``_computed_columns``) plus PACK_COST a number packed (the tile's V rows, and its S
    rows when pack_s)."""
    n_nb = (N + nb - 1) // nb
    n_tiles = ((M + mc - 1) // mc) * n_nb
    worst = 0.0
    for w in range(n_threads):
        work = 0.0
        for tile in range(w, n_tiles, n_threads):
            rows = min(mc, M - (tile // n_nb) * mc)
            cols = min(nb, N - (tile % n_nb) * nb)
            work += rows * _computed_columns(cols) + PACK_COST * (cols + (rows if pack_s else 0))
        worst = max(worst, work)
    return worst


@kernel
def _computed_columns(cols):
    """The columns a micro tile computes for a tile of ``cols`` columns of V, valid or not: whole
    NR-column panels, and a ragged last panel in 16-column passes where ``_micro`` takes passes
    (AVX2, or a panel of at most NARROW_PANEL columns: all but the few 4-row tiles), else whole."""
    whole, rest = cols // NR * NR, cols % NR
    if NARROW or rest <= NARROW_PANEL:
        return whole + (rest + L - 1) // L * L
    return whole + NR


@parallel_kernel
def _gemm(sd, ss, sst, pack_s, vs, vst, K, out, transposed, accumulate, n_threads):
    """out (+)= S @ V.T (or out.T when transposed), S and V as in ``_gemm_tile``, multithreaded.

    Tiles: mc rows of S x nb rows of V (``_tiling``). ``prange`` runs over the threads, not the
    tiles, so each owns its workspaces (allocated here, once per call)."""
    if transposed:
        N, M = out.shape                       # M: rows of S, N: rows of V
    else:
        M, N = out.shape
    mc, nb = _tiling(M, N, pack_s, n_threads)
    n_mc = (M + mc - 1) // mc
    n_nb = (N + nb - 1) // nb
    n_tiles = n_mc * n_nb
    n_workers = max(1, min(n_threads, n_tiles))
    kc_max = min(KC, K)
    ws = np.empty((n_workers, MB // PH if pack_s else 1, kc_max if pack_s else 1, PH), dtype=out.dtype)
    wv = np.empty((n_workers, nb * kc_max), dtype=out.dtype)
    wt = np.empty((n_workers, MR_MAX * NR), dtype=out.dtype)
    for w in prange(n_workers):
        for tile in range(w, n_tiles, n_workers):
            i0 = (tile // n_nb) * mc
            j0 = (tile % n_nb) * nb
            _gemm_tile(sd, ss, sst, pack_s, vs, vst, K, out, transposed, accumulate,
                       i0, min(i0 + mc, M), j0, min(j0 + nb, N), ws[w], wv[w], wt[w])


def _memory_and_strides(x):
    """x (R, C) as (flat, (s0, s1)) with x[r, c] == flat[r*s0 + c*s1]: a 1-D view of the memory
    x spans, and its strides in elements. No copy, except for the odd array with negative or
    unaligned strides."""
    if x.flags.c_contiguous:                       # the common cases first: cheap reshapes
        return _read_only(x.reshape(-1)), (x.shape[1], 1)
    if x.flags.f_contiguous:
        return _read_only(x.T.reshape(-1)), (1, x.shape[0])
    item = x.itemsize
    if any(s < 0 or s % item for s in x.strides):
        x = np.ascontiguousarray(x)
        return _read_only(x.reshape(-1)), (x.shape[1], 1)
    s0, s1 = x.strides[0] // item, x.strides[1] // item
    span = (x.shape[0] - 1) * s0 + (x.shape[1] - 1) * s1 + 1
    flat = np.lib.stride_tricks.as_strided(x, shape=(span,), strides=(item,), writeable=False)
    return flat, (s0, s1)


def _read_only(view):
    """The flat operand is always typed read-only: one compiled signature whatever the input."""
    view.flags.writeable = False
    return view


_DUMMY = {np.dtype(np.float32): np.zeros((1, 1), np.float32),
          np.dtype(np.float64): np.zeros((1, 1), np.float64)}


def _run(x, y, out, accumulate):
    """out (+)= x @ y.T for views x (M, K), y (N, K): picks S and V (see the module docstring)."""
    assert x.dtype == y.dtype == out.dtype and out.dtype in (np.float32, np.float64)
    assert x.shape[1] == y.shape[1] and out.shape == (x.shape[0], y.shape[0])
    if out.size == 0:
        return
    if x.shape[1] == 0:
        if not accumulate:
            out[...] = 0
        return
    if not out.flags.c_contiguous:     # the engines write whole rows of out as vectors
        result = np.empty(out.shape, out.dtype)
        _run(x, y, result, False)
        if accumulate:
            out += result
        else:
            out[...] = result
        return
    x_in_place, y_in_place = x.flags.c_contiguous, y.flags.c_contiguous
    if x_in_place and y_in_place and x.shape[0] < DOT_MAX_ROWS:
        # nt with few rows (h @ W.T at one time step): both operands are read in place by the
        # dot-product engine. The outer-product engine would first transpose all of y into
        # panels, which at 32 rows costs more than it saves (measured: 0.8x numpy vs 1.2x).
        _gemm_dot(x, y, out, bool(accumulate), numba.get_num_threads())
        return
    # S = the k-contiguous one (nn, nt: S = a); when neither is (tn), S = x, packed (transposed).
    # Only when y alone is k-contiguous is S = y, and out written transposed. (Tried for tn:
    # S = the smaller one; out is then written transposed, and at M = 4096 that was 20% slower.)
    transposed = y_in_place and not x_in_place
    s, v = (y, x) if transposed else (x, y)
    # An S read in place must be C-ordered; a packed operand goes in as memory + strides, so
    # every other layout shares one compilation.
    dummy2d = _DUMMY[out.dtype]
    pack_s = not s.flags.c_contiguous
    if pack_s:
        sd, (ss, sst) = dummy2d, _memory_and_strides(s)
    else:
        sd, (ss, sst) = s, _memory_and_strides(dummy2d)
    vs, vst = _memory_and_strides(v)
    _gemm(sd, ss, sst, pack_s, vs, vst, x.shape[1], out, transposed, bool(accumulate),
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


# ----------------------------------------------------------------------------- dot-product engine (nt)

@leaf_kernel
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


@leaf_kernel
def _dot(x, xi, xk, y, yj, yk, kc):
    """sum_p x[xi, xk+p] * y[yj, yk+p]: one element, for the ragged edges of a block."""
    xr = x[xi, xk:xk + kc]
    yr = y[yj, yk:yk + kc]
    s = x.dtype.type(0)
    for p in range(kc):
        s += xr[p] * yr[p]
    return s


@leaf_kernel
def _block(x, xi0, xk, y, yj0, yk, kc, out, oi0, oj0, m, n, add):
    """out[oi0:oi0+m, oj0:oj0+n] (+)= x[xi0:xi0+m, xk:xk+kc] @ y[yj0:yj0+n, yk:yk+kc].T

    x, y C-contiguous. 4x4 register tiles, dot products on the ragged edges. The loop over
    the 4-row strips of x is outside, so one x strip (4*kc numbers) stays in L1 while the
    strips of y stream past it."""
    m4 = m - m % 4
    n4 = n - n % 4
    for i in range(0, m4, 4):
        for j in range(0, n4, 4):
            _tile_4x4(x, xi0 + i, xk, y, yj0 + j, yk, kc, out, oi0 + i, oj0 + j, add)
        for j in range(n4, n):
            for r in range(4):
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


@leaf_kernel
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


@parallel_kernel
def _gemm_dot(x, y, out, accumulate, n_threads):
    """out[M,N] (+)= x[M,K] @ y[N,K].T with x, y C-contiguous and K >= 1: the dot-product engine,
    for nt products (x @ W.T, h @ W_hh.T: both operands read in place). Column panels
    of DB, cut into row chunks only as far as needed to give every thread about two tiles."""
    M, N = out.shape
    n_nt = (N + DB - 1) // DB
    n_mc = min((2 * n_threads + n_nt - 1) // n_nt, (M + MR - 1) // MR)
    mc = (((M + n_mc - 1) // n_mc + MR - 1) // MR) * MR
    n_mc = (M + mc - 1) // mc
    n_tiles = n_mc * n_nt
    n_workers = max(1, min(n_threads, n_tiles))
    for w in prange(n_workers):
        for t in range(w, n_tiles, n_workers):
            i0 = (t // n_nt) * mc
            j0 = (t % n_nt) * DB
            gemm_nt_block(x, y, out, i0, min(i0 + mc, M), j0, min(j0 + DB, N), accumulate)


@leaf_kernel
def gemm_panel_block(s, panel, init, out, out_col, n, add, t):
    """out[:, cols] = (init[:, cols] if add else 0) + s @ W,  cols = out_col:out_col + n
    (serial; call it inside a prange)

    s (M, K), init and out (M, .) C-contiguous (init may be out: ``out += s @ W``); W (K, NR)
    given as one panel from ``pack_panels`` (flat; zero columns past n <= NR). t: an MR_MAX * NR
    work buffer (ragged tiles). No blocking of k: the K x 64 panel (64 KB at K = 256) stays in
    L2 while every 6 or 4 rows of s (``tile_rows``) pass over it. E.g. h_{t-1} @ W_hh.T for 64
    gate columns at one time step."""
    M, K = s.shape
    # No constants among _micro's arguments (jit.py): with run-time zeros and flags its call has the
    # types of ``_gemm_tile``'s in-place call, and shares that compilation (a cold first step
    # compiled _micro, _micro6 and their stores twice more for the constants: 1-5 s of ~35).
    zero = np.int64(0)
    transposed = M < 0              # False, but computed: a constant False would be a type of its own
    adding = add or transposed      # add, likewise not a constant
    r = zero
    while r < M:
        rows = tile_rows(r, M)
        _micro(s, r, M - 1, zero, K, panel, zero, t, init, out, transposed, r, out_col, min(rows, M - r),
               n, adding)
        r += rows


@kernel
def pack_panels(w, by_columns, groups):
    """w (R, C) C-contiguous -> its panels, (groups, n_panels, K * NR), for ``gemm_panel_block``.

    by_columns False: the matrix multiplied is w.T (K = C), and its columns, the rows of w,
    are cut into ``groups`` equal groups (gates: R = groups * U), each into NR-wide panels,
    zero-padded: panel [g, q] holds rows g*U + q*NR ... of w. by_columns True: the matrix is w
    itself (K = R), its columns cut into panels ([0, q]: columns q*NR ...; groups must be 1).
    Packing once per call, O(R*C), keeps each panel's K rows of 64 numbers contiguous (on AVX2,
    its four K x 16 quarters: ``_panel_at``); read in place, rows 4 KB apart fall into the same
    few cache sets and the micro tile ran at half speed."""
    R, C = w.shape
    flat = w.reshape(w.size)
    if by_columns:
        K, U, st = R, C, (1, C)
    else:
        K, U, st = C, R // groups, (C, 1)
    n_panels = (U + NR - 1) // NR
    panels = np.empty((groups, n_panels, K * NR), w.dtype)
    for g in range(groups):
        _pack_panels(flat, st, g * U, U, 0, K, panels[g].reshape(n_panels * K * NR))
    return panels
