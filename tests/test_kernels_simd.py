"""The SIMD vectors of the CPU kernels (tinyrnn.kernels.cpu.simd): every operation, lane by lane,
against the same code run on scalars, in float32 and float64, including the gate activations."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyrnn.kernels.cpu.activations import sigmoid, tanh
from tinyrnn.kernels.cpu.simd import LANES, vdot_u8s8, vfma, vget, vizeros, vload, vset, vsplat, vstore, vsum, vzeros
from tinyrnn.kernels.jit import kernel
from test_kernels_matmul import _host_has

N_RESULTS = 13


@kernel
def on_vectors(a, b, c, out):
    x, y, z = vload(a, 0), vload(b, 0), vload(c, 0)
    results = (x + y, x - y, x * y, x / y, min(x, y), max(x, y), 2 * x - 1, -x, 1 - x / 3,
               tanh(x), sigmoid(x), vfma(x, y, z), vzeros(a) + vsplat(a[0]))
    for r in range(N_RESULTS):
        vstore(out, r * LANES, results[r])


@kernel
def on_scalars(a, b, c, out):
    for lane in range(LANES):
        x, y, z = a[lane], b[lane], c[lane]
        o = out[lane::LANES]               # o[r]: lane `lane` of result r
        o[0], o[1], o[2], o[3] = x + y, x - y, x * y, x / y
        o[4], o[5], o[6], o[7], o[8] = min(x, y), max(x, y), 2 * x - 1, -x, 1 - x / 3
        o[9], o[10], o[11], o[12] = tanh(x), sigmoid(x), x * y + z, a[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_operations_match_scalar_code(dtype):
    rng = np.random.default_rng(0)
    a = (3 * rng.standard_normal(LANES)).astype(dtype)
    b = (rng.standard_normal(LANES) + 4).astype(dtype)      # no zero divisors
    c = rng.standard_normal(LANES).astype(dtype)
    got, want = np.zeros(N_RESULTS * LANES, dtype), np.zeros(N_RESULTS * LANES, dtype)
    on_vectors(a, b, c, got)
    on_scalars(a, b, c, want)
    # float32: one rounding apart at most (a multiply-add may or may not be fused)
    tol = dict(rtol=4e-7, atol=4e-7) if dtype == np.float32 else dict(rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(got, want, **tol)
    # and the activations are the real ones (float64 exactly, float32 to the approximation's error)
    exact = np.tanh(a.astype(np.float64))
    err = 1e-15 if dtype == np.float64 else 4e-7
    np.testing.assert_allclose(got[9 * LANES:10 * LANES], exact, atol=err, rtol=0)
    np.testing.assert_allclose(got[10 * LANES:11 * LANES], 1 / (1 + np.exp(-a.astype(np.float64))),
                               atol=err, rtol=0)


@kernel
def lanes_roundtrip(a, out):
    v = vload(a, 0)
    for lane in range(LANES):
        v = vset(v, lane, vget(v, lane) * 2)
    vstore(out, 1, v)                     # at an offset: loads and stores need no alignment


def test_get_set_and_unaligned_store():
    a = np.arange(LANES, dtype=np.float32)
    out = np.full(LANES + 2, -1, np.float32)
    lanes_roundtrip(a, out)
    np.testing.assert_array_equal(out, np.concatenate([[-1], 2 * a, [-1]]))


@kernel
def integer_dot(u, i, x, j, chunks):
    """u[i:] . x[j:] over `chunks` vdot_u8s8, and over the first one alone"""
    acc = vizeros()
    for n in range(chunks):
        acc = vdot_u8s8(acc, u, i + 4 * LANES * n, x, j + 4 * LANES * n)
    first = vdot_u8s8(vizeros(), u, i, x, j)
    return vsum(acc), vsum(first)


def exact_dot(u, x):
    return int(u.astype(np.int64) @ x.astype(np.int64))


def test_integer_dot_products():
    """vdot_u8s8 + vsum: uint8 u (int8 weights in excess 128) times int8 x, summed exactly in int32,
    at any offsets, at the extremes (pairs of 255 * 64 and -64: ``vpmaddubsw``'s 16 bits)."""
    rng = np.random.default_rng(3)
    u = rng.integers(0, 256, 700).astype(np.uint8)
    x = rng.integers(-64, 65, 700).astype(np.int8)
    for i, j, chunks in ((0, 0, 1), (5, 3, 4), (17, 40, 8)):
        n = 4 * LANES * chunks
        total, first = integer_dot(u, i, x, j, chunks)
        assert total == exact_dot(u[i:i + n], x[j:j + n])
        assert first == exact_dot(u[i:i + 4 * LANES], x[j:j + 4 * LANES])
    n = 4 * LANES * 8
    for u_value, x_value in ((255, 64), (255, -64), (0, 64), (1, -64)):
        extreme_u, extreme_x = np.full(n, u_value, np.uint8), np.full(n, x_value, np.int8)
        assert integer_dot(extreme_u, 0, extreme_x, 0, 8)[0] == u_value * x_value * n   # no saturation


def _compiled_in_a_fresh_process(tmp_path, check, instruction, **env):
    """Compile ``dot`` in a fresh process (empty cache: Numba shows no code for a cached kernel)
    under env, run ``check`` (code that asserts its sums), and say whether dot's machine code has
    ``instruction``."""
    code = check + f"print({instruction!r} in next(iter(dot.inspect_asm().values())))\n"
    host = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}     # the host's build unless told
    out = subprocess.run([sys.executable, "-c", code], env=dict(host, NUMBA_CACHE_DIR=str(tmp_path), **env),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-1]


BYTE_DOTS = ("import numpy as np, numba\n"
             "from tinyrnn.kernels.cpu.simd import vdot_u8s8, vizeros, vsum\n"
             "@numba.njit\n"
             "def dot(u, x):\n"
             "    acc = vizeros()\n"
             "    for k in range(0, len(u), 64):\n"
             "        acc = vdot_u8s8(acc, u, k, x, k)\n"
             "    return vsum(acc)\n"
             "rng = np.random.default_rng(0)\n"
             "for sign in (1, -1):\n"
             "    u, x = rng.integers(0, 256, 640).astype(np.uint8), rng.integers(-64, 65, 640).astype(np.int8)\n"
             "    u[:64], x[:64] = 255, 64 * sign\n"
             "    assert dot(u, x) == int(u.astype(np.int64) @ x.astype(np.int64))\n")


@pytest.mark.skipif(not _host_has("avx2"), reason="needs an x86 CPU with AVX2")
def test_byte_dots_on_each_target(tmp_path):
    """vdot_u8s8 has three codes: VNNI's ``vpdpbusd`` where the target has it, AVX2's byte
    multiply-adds on any other AVX2 or AVX-512 x86 (here Haswell), plain IR elsewhere (here an
    SSE4.2 target, as a stand-in for one without them): all give the exact sums, at the extremes
    too. The VNNI code runs where the host has it: 512-bit (AVX-512 VNNI, the host's own build)
    and 256-bit (AVX-VNNI, built for Alder Lake)."""
    haswell = dict(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="")
    assert _compiled_in_a_fresh_process(tmp_path / "avx2", BYTE_DOTS, "vpmaddubsw", **haswell) == "True"
    sse = dict(NUMBA_CPU_NAME="nehalem", NUMBA_CPU_FEATURES="")
    assert _compiled_in_a_fresh_process(tmp_path / "sse", BYTE_DOTS, "vpmaddubsw", **sse) == "False"
    if _host_has("avx512vnni") and _host_has("avx512bw"):
        assert _compiled_in_a_fresh_process(tmp_path / "host", BYTE_DOTS, "vpdpbusd") == "True"
    if _host_has("avxvnni"):
        alderlake = dict(NUMBA_CPU_NAME="alderlake", NUMBA_CPU_FEATURES="")
        assert _compiled_in_a_fresh_process(tmp_path / "avxvnni", BYTE_DOTS, "vpdpbusd", **alderlake) == "True"


# bfloat16 pairs (random; near the largest numbers, near the smallest normal ones, and a product
# below float32's normal range) dotted by vdot_bf16, against the exact sum: the products are
# exact, only the float32 sums round
BFLOAT16_DOTS = ("import numpy as np, numba\n"
                 "from tinyrnn.kernels.cpu.simd import BF16_PER_DOT, vdot_bf16, vsplat, vsum\n"
                 "from tinyrnn.kernels.reference.weight_formats import (from_bfloat16, from_stored_bfloat16,\n"
                 "    to_bfloat16, to_stored_bfloat16)\n"
                 "@numba.njit\n"
                 "def dot(w, x):\n"
                 "    acc = vsplat(np.float32(0))\n"
                 "    for k in range(0, len(w), BF16_PER_DOT):\n"
                 "        acc = vdot_bf16(acc, w, k, x, k)\n"
                 "    return vsum(acc)\n"
                 "rng = np.random.default_rng(0)\n"
                 "w, x = rng.standard_normal(640), rng.standard_normal(640)\n"
                 "w[:4], x[:4] = [3e38, -3e38, 2e-38, 1e-19], [1.0, 1.0, 4.0, 1e-19]\n"
                 "w, x = to_stored_bfloat16(w), to_bfloat16(x)\n"
                 "wv, xv = from_stored_bfloat16(w).astype(np.float64), from_bfloat16(x).astype(np.float64)\n"
                 "got = dot(w, x.view(np.int16))\n"
                 "assert abs(got - wv @ xv) <= 1e-5 * np.abs(wv * xv).sum(), (got, wv @ xv)\n")


@pytest.mark.skipif(not _host_has("avx2"), reason="needs an x86 CPU with AVX2")
def test_bfloat16_dots_on_each_target(tmp_path):
    """vdot_bf16 has two codes: AVX-512 BF16's ``vdpbf16ps`` where the target has it (Zen 4, Sapphire
    Rapids and later), shifts, masks and FMAs elsewhere (the AVX2 build, its weights in pairs): both
    give the sums of the exact products to float32's rounding. An AVX2 build for an Intel core makes
    the weights' firsts with ``vpshufb`` (which LLVM would turn back into a shift if it saw the
    constant mask), one for an AMD core with a shift."""
    from tinyrnn.kernels import isa

    host = _compiled_in_a_fresh_process(tmp_path / "host", BFLOAT16_DOTS, "vdpbf16ps")
    assert host == str(isa.bf16_products())
    avx2 = dict(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="")
    assert _compiled_in_a_fresh_process(tmp_path / "avx2", BFLOAT16_DOTS, "vdpbf16ps", **avx2) == "False"
    assert _compiled_in_a_fresh_process(tmp_path / "avx2-bytes", BFLOAT16_DOTS, "vpshufb", **avx2) == "True"
    zen3 = dict(NUMBA_CPU_NAME="znver3", NUMBA_CPU_FEATURES="")       # AMD's AVX2: the shift
    assert _compiled_in_a_fresh_process(tmp_path / "zen3", BFLOAT16_DOTS, "vpshufb", **zen3) == "False"


@pytest.mark.skipif(not _host_has("avx2"), reason="needs an x86 CPU with AVX2")
def test_bfloat16_rows_of_the_avx2_build(tmp_path):
    """The bfloat16 rows product and roundings of the AVX2 build (weights in pairs: ``isa.bf16_pairs``),
    whatever the host: their tests, ``compact``'s and a GRU's sampling against the reference (H = 37:
    the n rows' halves start at an odd column) run again in a fresh process built for Haswell."""
    tests = os.path.dirname(os.path.abspath(__file__))
    host = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env = dict(host, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=str(tmp_path))
    code = "from tinyrnn.kernels import isa; assert isa.bf16_pairs() and isa.simd_level() == 'AVX2'"
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(tests, "test_kernels_recurrent.py"), os.path.join(tests, "test_generate.py"),
                          "-k", "bfloat16_p or compact_bfloat16 or (generate_compact_weights and bf16 and gru "
                          "and float32)"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "10 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


@pytest.mark.parametrize("name,features,has", [("znver4", "", True), ("sapphirerapids", "", True),
                                                ("emeraldrapids", "", True), ("icelake-server", "", False),
                                                ("skylake-avx512", "", False), ("znver4", "-avx512bf16", False),
                                                ("x86-64-v4", "+avx512bf16", True), ("haswell", "", False)])
def test_bfloat16_products_of_a_named_target(monkeypatch, name, features, has):
    """vdot_bf16 uses ``vdpbf16ps`` only on AVX-512 targets with BF16 (named, or added by a feature)."""
    from numba.core import config

    from tinyrnn.kernels import isa

    monkeypatch.setattr(config, "CPU_NAME", name)
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert isa.bf16_products() == has


@pytest.mark.parametrize("name,features,dots", [("znver4", "", "bf16 vdpbf16ps, int8 vpdpbusd AVX-512"),
                                                 ("znver4", "-avx512vnni", "bf16 vdpbf16ps, int8 vpmaddubsw AVX-512"),
                                                 ("cascadelake", "", "bf16 shifts+FMA, int8 vpdpbusd AVX-512"),
                                                 ("skylake-avx512", "", "bf16 shifts+FMA, int8 vpmaddubsw AVX-512"),
                                                 ("alderlake", "", "bf16 vpshufb+FMA, int8 vpdpbusd AVX2"),
                                                 ("haswell", "", "bf16 vpshufb+FMA, int8 vpmaddubsw AVX2"),
                                                 ("znver3", "", "bf16 shifts+FMA, int8 vpmaddubsw AVX2"),
                                                 ("generic", "", "bf16 shifts+FMA, int8 plain")])
def test_benchmark_lines_name_the_sampling_dots(monkeypatch, name, features, dots):
    """The benchmark's machine line says which code sampling's compact weights run."""
    from numba.core import config

    from tinyrnn.kernels import isa

    monkeypatch.setattr(config, "CPU_NAME", name)
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert isa.sampling_dots() == dots
    assert f"sampling dots: {dots}" in isa.describe()


@pytest.mark.parametrize("name,features,width", [("znver4", "", "AVX-512"), ("skylake-avx512", "", "AVX-512"),
                                                  ("knl", "", "AVX2"), ("znver4", "-avx512bw", "AVX2"),
                                                  ("haswell", "", "AVX2"), ("generic", "", "")])
def test_byte_products_of_a_named_target(monkeypatch, name, features, width):
    """vdot_u8s8's code follows the target: 512-bit with AVX-512BW (not on Knights Landing), 256-bit
    with AVX2, plain IR without."""
    from numba.core import config

    from tinyrnn.kernels import isa

    monkeypatch.setattr(config, "CPU_NAME", name)
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    assert isa.byte_products() == width
