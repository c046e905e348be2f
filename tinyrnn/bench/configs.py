"""The benchmark's model configs, the FLOPs of one training step, and small shared helpers."""
import os

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


def default_steps(cfg) -> int:
    """Enough steps for a timed block of roughly a second or two (at most 100: config a's 9 ms
    steps. With at most 20, a's block was 0.2 s, and on a shared VM five such blocks spread by
    13-35% for tinyrnn and 42-53% for PyTorch, against 13-15% and 5-17% with 100.)"""
    seconds_per_step = train_flops_per_char(cfg) * cfg["batch"] * cfg["seq"] / 100e9
    return int(min(100, max(3, 1.5 / seconds_per_step)))


def median(xs):
    """The median of a non-empty list of numbers."""
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def thread_env(threads):
    """os.environ with every thread-count variable (OpenMP, OpenBLAS, MKL, Numba) set to threads."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


# The AVX2 build on any x86 machine (`tinyrnn bench --avx2`): what an AVX2 laptop runs, for both
# frameworks. Numba compiles the kernels for Haswell with Haswell's own features (AVX2 + FMA, 16
# vector registers: the 6 x 16 matmul tile, ``kernels/isa.py``): the empty NUMBA_CPU_FEATURES
# matters, since without it Numba keeps the host's features and an AVX-512 host still gets AVX-512
# code. PyTorch is held to AVX2 in all three of its libraries, each with its own variable: ATen's
# kernels (ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA: its LSTM) and MKL
# (MKL_ENABLE_INSTRUCTIONS: every matrix product ATen hands to BLAS, its GRU's and the heads').
# Without the last, PyTorch's GRU training step at config d took 74-76 ms on the Intel VM, as
# natively (73-76), and 90-95 ms with it: the AVX2 table's d and e had compared against AVX-512
# products. (MKL documents the variable for Intel CPUs; on AMD it chooses its own path.)
AVX2_BUILD = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "", "ATEN_CPU_CAPABILITY": "avx2",
              "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

# The AVX-512 build without BF16, VNNI or AMX (`tinyrnn bench --avx512`): what a Skylake-SP server runs
# (a Cascade Lake adds VNNI, which only int8 sampling uses), on any AVX-512 machine. Numba compiles for
# Skylake-AVX512 with its own features (AVX-512 F/CD/BW/DQ/VL: the 6 x 64 matmul tile, but bfloat16
# sampling by shifts and FMAs instead of ``vdpbf16ps``, int8 by ``vpmaddubsw``); oneDNN stops at
# AVX512_CORE (the same extensions), ATen at AVX-512 and MKL at its plain AVX-512 path (not the VNNI,
# BF16 or AMX ones).
AVX512_BUILD = {"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": "", "ATEN_CPU_CAPABILITY": "avx512",
                "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}

# the builds `tinyrnn bench` can stand in for, by option: (environment, host features it needs)
BUILDS = {"avx2": (AVX2_BUILD, ("avx2", "fma")),
          "avx512": (AVX512_BUILD, ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"))}


def cli_module() -> str:
    """The module that runs the ``tinyrnn`` command: the installed package, or a checkout's ``cli``."""
    import importlib.util

    return "tinyrnn_cli.main" if importlib.util.find_spec("tinyrnn_cli") else "cli.main"
