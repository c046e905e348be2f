"""The Numba matmuls (tinyrnn.kernels.cpu.matmul) against the numpy reference.

Shapes cover the tiles (6 x 64 and 4 x 64 outer-product micro tiles for nn / tn and nt with 64 rows or
more, 4 x 4 dot-product tiles for smaller nt) and their ragged edges, the cache blocks
(KC = 256 over k, MB = 96 rows of S in 48-row panels, NB = 512 rows of V, 128 columns of the dot engine),
K = 1 and K = 0, and non-contiguous inputs (step slices and transposed views: S packed, by
vectors or number by number; out written transposed), each with accumulate True and False.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyrnn.kernels import cpu, reference
from tinyrnn.kernels.cpu import matmul as cpu_matmul

VARIANTS = ["nn", "nt", "tn"]
SHAPES = [  # (M, K, N)
    (1, 1, 1),
    (7, 13, 5),
    (31, 17, 37),
    (4, 4, 4),
    (8, 1, 12),           # K = 1
    (9, 259, 6),          # one full k block and a 3-wide one
    (133, 20, 131),       # over MB / NB: several tiles, ragged last ones
    (5, 0, 3),            # K = 0: out = 0 (or unchanged when accumulating)
    (70, 514, 517),       # over NR = 64 and NB = 512 (ragged panels), two k blocks + 2
]


def operands(rng, variant, M, K, N, dtype):
    a = rng.standard_normal((K, M) if variant == "tn" else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if variant == "nt" else (K, N)).astype(dtype)
    return a, b


def tolerances(dtype, K):
    # Entries are N(0, 1): a sum of K products has size ~sqrt(K); rounding error grows ~K * eps.
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-6 * max(K, 1))
    return dict(rtol=1e-12, atol=1e-13 * max(K, 1))


def check(variant, a, b, out0, accumulate):
    M, N = out0.shape
    K = a.shape[0] if variant == "tn" else a.shape[1]
    ours, ref = out0.copy(), out0.copy()
    getattr(cpu, "matmul_" + variant)(a, b, ours, accumulate)
    getattr(reference, "matmul_" + variant)(a, b, ref, accumulate)
    np.testing.assert_allclose(ours, ref, **tolerances(out0.dtype, K))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference(variant, dtype):
    rng = np.random.default_rng(0)
    for M, K, N in SHAPES:
        a, b = operands(rng, variant, M, K, N, dtype)
        out0 = rng.standard_normal((M, N)).astype(dtype)   # garbage that accumulate=False must overwrite
        for accumulate in (False, True):
            check(variant, a, b, out0, accumulate)


@pytest.mark.parametrize("variant", VARIANTS)
def test_non_contiguous_inputs(variant):
    """Step slices and transposed views of bigger arrays, as inputs (float32)."""
    rng = np.random.default_rng(1)
    M, K, N = 11, 37, 9
    a, b = operands(rng, variant, M, K, N, np.float32)
    # The same values, stored with other strides.
    big_a = np.zeros((2 * a.shape[0], 3 * a.shape[1]), np.float32)
    big_a[::2, ::3] = a
    a_strided = big_a[::2, ::3]
    a_transposed_view = np.ascontiguousarray(a.T).T        # F-ordered, same values
    b_strided = np.zeros((b.shape[0], 2 * b.shape[1]), np.float32)[:, ::2]
    b_strided[...] = b
    b_transposed_view = np.ascontiguousarray(b.T).T
    out0 = rng.standard_normal((M, N)).astype(np.float32)
    for aa, bb in [(a_strided, b), (a, b_strided), (a_transposed_view, b_transposed_view),
                   (a_strided, b_transposed_view)]:
        assert not (aa.flags.c_contiguous and bb.flags.c_contiguous)
        for accumulate in (False, True):
            check(variant, aa, bb, out0, accumulate)


def test_non_contiguous_out():
    """out may be a strided view too; only its own elements are written."""
    rng = np.random.default_rng(2)
    a, b = operands(rng, "nt", 6, 10, 7, np.float64)
    big = rng.standard_normal((12, 7))
    before = big.copy()
    reference_out = big[::2].copy()
    cpu.matmul_nt(a, b, big[::2], True)
    reference.matmul_nt(a, b, reference_out, True)
    np.testing.assert_allclose(big[::2], reference_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(big[1::2], before[1::2])


def test_float32_result_is_float32_accurate_at_training_shapes():
    """A typical per-step shape (B=32, H=256, 4H=1024 gates): max error vs a float64 product."""
    rng = np.random.default_rng(3)
    h = rng.standard_normal((32, 256)).astype(np.float32)
    w = rng.standard_normal((1024, 256)).astype(np.float32)
    out = np.empty((32, 1024), np.float32)
    cpu.matmul_nt(h, w, out, False)
    exact = h.astype(np.float64) @ w.astype(np.float64).T
    assert np.abs(out - exact).max() < 1e-4 * np.sqrt(256) * 4


def test_gemm_nt_block_writes_only_its_block():
    """The serial building block: out[i0:i1, j0:j1] (+)= x[i0:i1] @ y[j0:j1].T, nothing else."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((13, 300))
    y = rng.standard_normal((11, 300))
    for accumulate in (False, True):
        out = rng.standard_normal((13, 11))
        before = out.copy()
        i0, i1, j0, j1 = 2, 11, 1, 10
        cpu_matmul.gemm_nt_block(x, y, out, i0, i1, j0, j1, accumulate)
        expect = before.copy()
        block = x[i0:i1] @ y[j0:j1].T
        expect[i0:i1, j0:j1] = block + (before[i0:i1, j0:j1] if accumulate else 0)
        np.testing.assert_allclose(out, expect, rtol=1e-12, atol=1e-12)


# ---- the two micro tiles (isa.py): 6 x 64 and 4 x 64 in registers (AVX-512), passes of 6 x 16 and 4 x 16 (AVX2)

TILE_SHAPES = [(1, 1, 1), (7, 13, 5), (9, 259, 17), (70, 514, 517), (133, 20, 131), (600, 200, 1024)]
TILE_SCRIPT = """
import sys, numpy as np
from tinyrnn.kernels import isa
from tinyrnn.kernels.cpu import matmul, sequence
assert isa.TILE == sys.argv[1] and matmul.NARROW == (sys.argv[1] == "6x16"), (isa.TILE, matmul.NARROW)
rng = np.random.default_rng(5)
results = {}
for variant in ("nn", "nt", "tn"):
    for M, K, N in %r:
        a = rng.standard_normal((K, M) if variant == "tn" else (M, K)).astype(np.float32)
        b = rng.standard_normal((N, K) if variant == "nt" else (K, N)).astype(np.float32)
        out = rng.standard_normal((M, N)).astype(np.float32)
        for accumulate in (False, True):
            o = out.copy()
            getattr(matmul, "matmul_" + variant)(a, b, o, accumulate)
            results[f"{variant}{M}x{K}x{N}{accumulate}"] = o
# nn with both operands column-major: S is b (read in place) and out is written transposed
for M, K, N in %r:
    a = np.asfortranarray(rng.standard_normal((M, K)).astype(np.float32))
    b = np.asfortranarray(rng.standard_normal((K, N)).astype(np.float32))
    o = rng.standard_normal((M, N)).astype(np.float32)
    matmul.matmul_nn(a, b, o, True)
    results[f"fnn{M}x{K}x{N}"] = o
# the per-step panel product of the sequence kernels: an LSTM layer forward, 70 units (ragged panels)
T, B, H = 5, 9, 70
xproj = rng.standard_normal((9 + 9 + 7 + 4 + 1, 4 * H)).astype(np.float32)     # packed: the active rows of each step
w_hh = rng.standard_normal((4 * H, H)).astype(np.float32) * 0.1
hs, cs = np.full((T + 1, B, H), np.nan, np.float32), np.full((T + 1, B, H), np.nan, np.float32)
acts = np.full((T, B, 4 * H), np.nan, np.float32)
sequence.lstm_sequence_forward(xproj, w_hh, np.zeros((B, H), np.float32), np.zeros((B, H), np.float32),
                               np.array([9, 9, 7, 4, 1], np.int64), hs, cs, acts)
results["lstm_hs"] = hs
# and its backward (W_hh packed by columns)
dhs = rng.standard_normal((T, B, H)).astype(np.float32)
dgates = np.full((T, B, 4 * H), np.nan, np.float32)
dh0, dc0 = np.full((B, H), np.nan, np.float32), np.full((B, H), np.nan, np.float32)
sequence.lstm_sequence_backward(w_hh, hs, cs, acts, dhs, np.zeros((B, H), np.float32), np.zeros((B, H), np.float32),
                                np.array([9, 9, 7, 4, 1], np.int64), dgates, dh0, dc0)
results["lstm_dgates"], results["lstm_dh0"] = dgates, dh0
np.savez(sys.argv[2], **results)
""" % (TILE_SHAPES, TILE_SHAPES)


def test_both_tiles_give_the_same_bits(tmp_path):
    """Each tile, in a fresh process (TINYRNN_MATMUL_TILE chooses it before the kernels compile):
    both sum the same products in the same order of k, so every result is bit for bit the same,
    and each is right (against numpy in float64)."""
    import os
    import subprocess
    import sys

    results = {}
    for tile in ("6x64", "6x16"):
        path = tmp_path / f"{tile}.npz"
        env = {**os.environ, "TINYRNN_MATMUL_TILE": tile}
        run = subprocess.run([sys.executable, "-c", TILE_SCRIPT, tile, str(path)], env=env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        results[tile] = dict(np.load(path))
    wide, narrow = results["6x64"], results["6x16"]
    assert wide.keys() == narrow.keys()
    for key in wide:
        np.testing.assert_array_equal(narrow[key], wide[key], err_msg=key)
    rng = np.random.default_rng(5)                  # the same operands again: check the values too
    for variant in ("nn", "nt", "tn"):
        for M, K, N in TILE_SHAPES:
            a = rng.standard_normal((K, M) if variant == "tn" else (M, K)).astype(np.float32)
            b = rng.standard_normal((N, K) if variant == "nt" else (K, N)).astype(np.float32)
            out = rng.standard_normal((M, N)).astype(np.float32)
            a64 = (a.T if variant == "tn" else a).astype(np.float64)
            b64 = (b.T if variant == "nt" else b).astype(np.float64)
            for accumulate in (False, True):
                exact = a64 @ b64 + (out if accumulate else 0)
                np.testing.assert_allclose(wide[f"{variant}{M}x{K}x{N}{accumulate}"], exact,
                                           **tolerances(np.float32, K))
    assert np.isfinite(wide["lstm_hs"]).all() and np.isfinite(wide["lstm_dh0"]).all()
    assert all(np.isfinite(wide[f"fnn{M}x{K}x{N}"]).all() for M, K, N in TILE_SHAPES)


def test_tile_rows_cover_every_block_without_crossing_a_panel():
    """The rows of S each micro tile takes (``tile_rows``) cover an m-row block exactly once, no
    tile's valid rows cross a 48-row panel of packed S, a 6-row tile has all 6 rows valid, and
    4-row tiles come only at the block's end (at most two)."""
    tile_rows = cpu_matmul.tile_rows.py_func
    ph = cpu_matmul.PH
    assert ph % 6 == 0 and ph % 16 == 0 and cpu_matmul.MB % ph == 0
    for m in range(1, 300):
        r, n_tiles, taken = 0, 0, []
        while r < m:
            rows = tile_rows(r, m)
            assert rows in (4, 6)
            assert r // ph == (r + min(rows, m - r) - 1) // ph, (m, r, rows)   # its valid rows
            assert rows == 4 or r + rows <= m, (m, r, rows)
            r, n_tiles = r + min(rows, m - r), n_tiles + 1
            taken.append(rows)
        assert r == m
        if m <= cpu_matmul.MB:                        # a block: 6s, then at most two 4s
            fours = taken[taken.index(4):] if 4 in taken else []
            assert fours == [4] * len(fours) and len(fours) <= 2, (m, taken)
        if m % ph == 0:
            assert n_tiles == m // 6                 # 6 x 8 a panel


def test_tile_choice_follows_the_compile_target(monkeypatch):
    from tinyrnn.kernels import isa

    monkeypatch.delenv("TINYRNN_MATMUL_TILE", raising=False)
    monkeypatch.setattr(isa, "simd_level", lambda: "AVX2")
    assert isa.choose_tile() == "6x16"
    monkeypatch.setattr(isa, "simd_level", lambda: "AVX-512")
    assert isa.choose_tile() == "6x64"
    monkeypatch.setenv("TINYRNN_MATMUL_TILE", "8x8")
    with pytest.raises(ValueError, match="TINYRNN_MATMUL_TILE"):
        isa.choose_tile()
    assert cpu_matmul.NARROW == (isa.TILE == "6x16")


def _host_has(feature) -> bool:
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get(feature, False))


def test_a_named_cpu_alone_keeps_the_hosts_features(monkeypatch):
    """Numba compiles for NUMBA_CPU_NAME with the *host's* features unless NUMBA_CPU_FEATURES is set,
    so the SIMD level (and the tile) follow the host then: NUMBA_CPU_NAME=haswell alone on an
    AVX-512 machine is AVX-512 code, which earlier 'AVX2 build' tables measured by mistake."""
    from numba.core import config

    from tinyrnn.kernels import isa

    monkeypatch.setattr(config, "CPU_NAME", "haswell")
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    flags = isa._host_features()
    expected = "AVX-512" if flags.get("avx512f") else "AVX2" if flags.get("avx2") else "SSE/other"
    assert isa.target() == ("haswell", "host") and isa.simd_level() == expected


def _compiled_registers(env) -> str:
    """Compile a 16-lane FMA in a fresh process under ``env``; which vector registers its code uses."""
    code = ("import numpy as np, numba\n"
            "from tinyrnn.kernels.cpu.simd import vload, vstore, vfma\n"
            "@numba.njit\n"
            "def f(a, b, c):\n"
            "    vstore(c, 0, vfma(vload(a, 0), vload(b, 0), vload(c, 0)))\n"
            "x = np.ones(16, np.float32); f(x, x, x.copy())\n"
            "asm = next(iter(f.inspect_asm().values()))\n"
            "print(' '.join(r for r in ('zmm', 'ymm') if '%' + r in asm))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.skipif(not _host_has("avx2"), reason="needs an x86 CPU with AVX2")
def test_the_avx2_recipe_compiles_no_avx512_instructions():
    """``bench --avx2`` (configs.AVX2_BUILD): only 256-bit registers, on any x86 host; without
    NUMBA_CPU_FEATURES an AVX-512 host would still get 512-bit code."""
    from tinyrnn.bench.configs import AVX2_BUILD

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    assert _compiled_registers(dict(env, **AVX2_BUILD)) == "ymm"
    if _host_has("avx512f"):
        assert "zmm" in _compiled_registers(dict(env, NUMBA_CPU_NAME="haswell"))


@pytest.mark.parametrize("name,features,level", [("haswell", "", "AVX2"), ("skylake-avx512", "", "AVX-512"),
                                                  ("znver4", "-avx512f", "AVX2"), ("generic", "", "SSE/other"),
                                                  ("generic", "+avx2,+fma", "AVX2")])
def test_simd_level_of_a_named_target(monkeypatch, name, features, level):
    from numba.core import config

    from tinyrnn.kernels import isa

    monkeypatch.setattr(config, "CPU_NAME", name)
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert isa.simd_level() == level


def test_the_micro_tile_counts_no_references(tmp_path):
    """The micro tiles are ``leaf_kernel``s (``jit.py``): their machine code makes no reference-count
    update (an atomic instruction each; ~30 a tile made it 177 ns slower, measured). Compiled in a
    fresh process with an empty cache, since Numba shows no code for a kernel loaded from one."""
    code = ("import numpy as np\n"
            "from tinyrnn.kernels.cpu.matmul import MR_MAX, NR, gemm_panel_block, pack_panels\n"
            "s, out, t = np.ones((6, 128), np.float32), np.zeros((6, 64), np.float32), np.zeros(MR_MAX * NR, np.float32)\n"
            "panel = pack_panels(np.ones((128, 64), np.float32), True, 1)[0, 0]\n"
            "gemm_panel_block(s, panel, out, out, 0, 64, True, t)\n"
            "assert out[0, 0] == 128, out[0, 0]\n"
            "ir = ''.join(gemm_panel_block.inspect_llvm().values())\n"
            "print('_micro' in ir, ir.count('@NRT_incref') + ir.count('@NRT_decref'))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "0"]


def test_tiling_cuts_out_into_whole_tiles_with_work_for_every_thread():
    """``_tiling``: mc a multiple of MR, nb of NR and at most NB; no thread does more than its
    share of the work plus one tile; the weight-gradient example of its docstring; the head."""
    tiling = cpu_matmul._tiling.py_func
    cost = cpu_matmul._tiling_cost.py_func
    MR, NR, NB = cpu_matmul.MR, cpu_matmul.NR, cpu_matmul.NB
    for M in (1, 5, 65, 100, 768, 2048, 8192):
        for N in (1, 3, 50, 65, 128, 256, 768, 1536, 2048):
            for pack_s in (False, True):
                for threads in (1, 2, 3, 4, 8):
                    mc, nb = tiling(M, N, pack_s, threads)
                    assert mc % MR == 0 and nb % NR == 0 and 0 < nb <= NB, (M, N, mc, nb)
                    possible = -(-M // MR) * -(-N // NR)          # micro tiles to go round
                    busiest = cost(M, N, mc, nb, pack_s, threads)
                    whole = cost(M, N, mc, nb, pack_s, 1)         # every tile on one thread
                    one_tile = cost(min(M, mc), min(N, nb), mc, nb, pack_s, 1)
                    assert busiest <= whole / min(threads, possible) + one_tile, (M, N, threads, mc, nb)
    assert tiling(768, 256, True, 2) == (384, 256)     # 2 S chunks, each with all of V
    # the head's logits, 65 columns: the second V panel's one valid column takes a 16-column pass
    # (``_micro``: a ragged panel of at most NARROW_PANEL columns), so the threads split the rows,
    # each with both panels; splitting the panels instead would leave one thread the 64 columns
    assert tiling(2048, 65, False, 2) == (1024, 128)
    mc, nb = tiling(2048, 65, False, 2)
    assert cost(2048, 65, mc, nb, False, 2) <= 0.55 * cost(2048, 65, mc, nb, False, 1)
    computed = cpu_matmul._computed_columns.py_func
    assert [computed(c) for c in (64, 65, 80, 96, 97, 128)] == (
        [64, 80, 80, 96, 112, 128] if cpu_matmul.NARROW else [64, 80, 80, 96, 128, 128])
