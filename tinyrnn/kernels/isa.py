"""What the CPU kernels are compiled for, and the matmul micro tile that fits its registers.

Numba compiles for the host CPU unless ``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` name
another one: ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=''`` builds what an AVX2 laptop would run
(the name alone keeps the host's features: AVX-512 code on an AVX-512 machine). The vector
type of ``cpu/simd.py`` has 16 lanes: one register on AVX-512, two on AVX2. The matmul micro
tile (``cpu/matmul.py``, 6 rows x 64 columns of the result, or 4 rows where 6 would leave a
ragged tile: ``tile_rows``) is 24 such vectors:

    "6x64"  24 AVX-512 registers of 32: the tile stays in registers for the whole k loop.
    "6x16"  on AVX2 (16 registers of 8 floats), 6x64 would need 48 registers and spill to the
            stack at every k; the 64 columns are done as four passes of 16, each over 6 rows
            (12 registers of accumulators, plus 2 for the loaded vector of B and 1 for the
            broadcast number of A: BLIS's Haswell shape), and 4 rows where 6 would leave a
            ragged tile (``tile_rows``).

``TILE`` is chosen when this module is imported (the environment variable ``TINYRNN_MATMUL_TILE``
overrides it, for tests and experiments); both tiles compute the same sums in the same order
of k, so results do not depend on the choice. The cache directory of the kernels is keyed by
it (``cache.py``), so a build of one tile is never loaded for the other.
"""
import os

TILES = ("6x64", "6x16")

# LLVM's names of x86 CPUs with AVX-512F (as NUMBA_CPU_NAME takes them)
AVX512_CPUS = frozenset("""knl knm skylake-avx512 skx cascadelake cooperlake cannonlake icelake-client
    icelake-server rocketlake tigerlake sapphirerapids emeraldrapids graniterapids graniterapids-d
    diamondrapids znver4 znver5 x86-64-v4""".split())

# those of them with AVX-512 BF16 (``vdpbf16ps``)
_BF16_CPUS = frozenset("""cooperlake sapphirerapids emeraldrapids graniterapids graniterapids-d diamondrapids
    znver4 znver5""".split())

# those of them with AVX-512 VNNI (``vpdpbusd`` on 512-bit registers)
_VNNI512_CPUS = frozenset("""cascadelake cooperlake icelake-client icelake-server rocketlake tigerlake sapphirerapids
    emeraldrapids graniterapids graniterapids-d diamondrapids znver4 znver5""".split())

# CPUs without AVX-512 that have AVX-VNNI (the same ``vpdpbusd`` on 256-bit registers)
_AVX_VNNI_CPUS = frozenset("alderlake raptorlake meteorlake arrowlake lunarlake gracemont sierraforest grandridge".split())

_AVX2_CPUS = frozenset("""haswell broadwell skylake alderlake raptorlake meteorlake arrowlake lunarlake
    gracemont sierraforest grandridge znver1 znver2 znver3 bdver4 x86-64-v3""".split())


def target() -> tuple:
    """(cpu name, feature string) that Numba compiles for, resolved as Numba's code generator does:
    NUMBA_CPU_NAME names the CPU (the host's when unset), and the features are NUMBA_CPU_FEATURES
    when it is set, *else the host's*. So ``NUMBA_CPU_NAME=haswell`` alone on an AVX-512 machine
    still emits AVX-512 instructions (Haswell's scheduling, the host's registers); an AVX2 build
    needs ``NUMBA_CPU_FEATURES`` too (empty: the named CPU's own features). The feature string is
    'host' when the host's features are used."""
    from numba.core import config

    name = config.CPU_NAME
    if not name or name == "host":
        import llvmlite.binding as llvm

        name = llvm.get_host_cpu_name()
    return name, "host" if config.CPU_FEATURES is None else config.CPU_FEATURES


def _host_features() -> dict:
    import llvmlite.binding as llvm

    return dict(llvm.get_host_cpu_features())


def _target_has(feature: str, cpus) -> bool:
    """Whether the compile target has ``feature`` (LLVM's name): the host's flag when Numba uses
    the host's features, else ``+feature`` among NUMBA_CPU_FEATURES, or a CPU named in ``cpus``
    without ``-feature``."""
    name, features = target()
    if features == "host":
        return bool(_host_features().get(feature, False))
    return f"+{feature}" in features or (name in cpus and f"-{feature}" not in features)


def simd_level() -> str:
    """'AVX-512', 'AVX2' or 'SSE/other': the widest vector unit of the compile target."""
    has512 = _target_has("avx512f", AVX512_CPUS)
    has2 = has512 or _target_has("avx2", _AVX2_CPUS | AVX512_CPUS)
    return "AVX-512" if has512 else "AVX2" if has2 else "SSE/other"


def byte_products() -> str:
    """The widest x86 byte multiply-add (``vpmaddubsw``) of the compile target: 'AVX-512' (512-bit:
    AVX-512BW, which every AVX-512 CPU but Knights Landing/Mill has), 'AVX2' (256-bit), or '' (none:
    ``cpu/simd.py`` then writes plain IR)."""
    level = simd_level()
    if level == "AVX-512":
        return "AVX-512" if _target_has("avx512bw", AVX512_CPUS - {"knl", "knm"}) else "AVX2"
    return "AVX2" if level == "AVX2" else ""


def vnni_products() -> bool:
    """Whether the compile target multiplies bytes with VNNI's ``vpdpbusd`` at ``byte_products``' width
    (AVX-512 VNNI: Intel from Cascade Lake on, AMD from Zen 4; AVX-VNNI, 256-bit: Intel from Alder
    Lake on): a register of byte products summed into int32 lanes in one instruction instead of
    ``vpmaddubsw``, ``vpmaddwd`` and an addition (``cpu/simd.py``'s ``vdot_u8s8``)."""
    width = byte_products()
    if width == "AVX-512":
        return _target_has("avx512vnni", _VNNI512_CPUS)
    return width == "AVX2" and _target_has("avxvnni", _AVX_VNNI_CPUS)


def bf16_products() -> bool:
    """Whether the compile target has AVX-512 BF16's ``vdpbf16ps`` (Intel from Cooper Lake and
    Sapphire Rapids on, AMD from Zen 4): 32 bfloat16 products summed in pairs into 16 float32 lanes,
    one instruction (``cpu/simd.py``'s ``vdot_bf16`` writes shifts and FMAs without it, over weights
    stored in pairs: ``bf16_pairs``)."""
    return simd_level() == "AVX-512" and _target_has("avx512bf16", _BF16_CPUS)


def bf16_pairs() -> bool:
    """Whether the CPU kernels store bfloat16 matrices in pairs whose second is read as a whole 32-bit
    word (``reference/weight_formats.py``'s ``to_bfloat16_pairs``): where the target lacks
    ``vdpbf16ps``, which reads both halves as bfloat16s."""
    return not bf16_products()


# Intel's cores by LLVM's names (AVX2 and later): their vector shifts share ports 0 and 1 with the
# multiply-adds, their byte shuffles run on port 5 (AMD's Zen runs both on the same two pipes)
_INTEL_CPUS = frozenset("""haswell broadwell skylake alderlake raptorlake meteorlake arrowlake lunarlake
    skylake-avx512 skx cascadelake cooperlake cannonlake icelake-client icelake-server rocketlake tigerlake
    sapphirerapids emeraldrapids graniterapids graniterapids-d diamondrapids""".split())


def bf16_firsts_by_bytes() -> bool:
    """Whether ``vdot_bf16`` makes the first bfloat16 of each pair a float32 with a byte shuffle
    (``vpshufb``) rather than a shift: in an AVX2 build for an Intel core, where the shuffle runs
    beside the multiply-adds (LLVM's scheduling models: the 4-row loop 1.3x faster on Skylake to
    Alder Lake) and a shift takes their ports. Not on AMD, where it was 3% slower (Zen 4), nor
    in AVX-512 builds, whose multiply-adds use port 5 too. (BENCHMARKS.md.)"""
    return simd_level() == "AVX2" and target()[0] in _INTEL_CPUS


def amd_target() -> bool:
    """Whether the compile target is an AMD Zen core (LLVM's ``znver*``): the GRU backward's step
    order is chosen by it (``cpu/sequence.py``)."""
    return target()[0].startswith("znver")


def sampling_dots() -> str:
    """How batch-1 sampling multiplies its compact weights on the compile target, for benchmark
    lines: e.g. 'bf16 vdpbf16ps, int8 vpmaddubsw AVX-512' (``cpu/simd.py``'s ``vdot_bf16`` and
    ``vdot_u8s8``; without ``vdpbf16ps`` 'vpshufb+FMA' or 'shifts+FMA' (``bf16_firsts_by_bytes``);
    'plain' where the target lacks a byte product)."""
    width = byte_products()
    bf16 = "vdpbf16ps" if bf16_products() else "vpshufb+FMA" if bf16_firsts_by_bytes() else "shifts+FMA"
    return (f"bf16 {bf16}, "
            f"int8 {f'{BYTE_DOT[vnni_products()]} {width}' if width else 'plain'}")


BYTE_DOT = {False: "vpmaddubsw", True: "vpdpbusd"}     # the instruction of a byte product, by ``vnni_products``


def choose_tile() -> str:
    chosen = os.environ.get("TINYRNN_MATMUL_TILE", "").strip()
    if chosen:
        if chosen not in TILES:
            raise ValueError(f"TINYRNN_MATMUL_TILE={chosen!r}: use one of {', '.join(TILES)}")
        return chosen
    return "6x64" if simd_level() == "AVX-512" else "6x16"


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; the platform's processor string elsewhere)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break                                   # the first processor is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:                              # VMs may hide the model: family/model tell
        return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"
    import platform

    return platform.processor() or platform.machine() or "unknown"


def describe(tile: str | None = None) -> str:
    """One line for benchmark tables: CPU model, SIMD level, Numba target, matmul tile (this
    process's ``TILE`` unless told: the benchmark names the tile its workers will choose), and the
    sampling kernels' dot products (``sampling_dots``)."""
    name, features = target()
    tail = f" {features}"                   # explicit NUMBA_CPU_FEATURES
    if features == "host":
        tail = ""
    elif not features:
        tail = ", its own features"         # NUMBA_CPU_FEATURES='': the named CPU's defaults
    return (f"{cpu_model()} | compiled for {simd_level()} (Numba target {name}{tail}) | matmul tile {tile or TILE}"
            f" | sampling dots: {sampling_dots()}")


TILE = choose_tile()
