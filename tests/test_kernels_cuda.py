"""Every CUDA kernel against the numpy reference, at small sizes.

Runs in numba's CUDA simulator when there is no GPU (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1 before numba.cuda is imported; set it to 0 to use a real GPU). The
simulator starts one Python thread per GPU thread, so sizes are tiny; they still cover the
edges: matmul sizes that are not multiples of the tile, rows wider than a reduction block,
repeated embedding indices, ignored targets.

Each check copies the same inputs to both modules, runs the kernel in each, and compares
*every* array argument afterwards (outputs, in-place updates, and inputs that must not
change). Outputs start as NaN, so an element a kernel forgets to write fails the check.
"""
import os
import subprocess
import sys
import textwrap

import zlib

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    # NUMBA_ENABLE_CUDASIM=0 on a machine without a GPU (conftest.py picks the simulator unless it
    # finds one): fail loudly, a quiet skip would hide every CUDA test
    pytest.fail("NUMBA_ENABLE_CUDASIM=0 but numba finds no CUDA GPU: unset NUMBA_ENABLE_CUDASIM to test "
                "the CUDA kernels in the simulator", pytrace=False)

from tinyrnn.kernels import cuda as C  # noqa: E402
from tinyrnn.kernels import reference as R  # noqa: E402
from tinyrnn.kernels.cuda import device  # noqa: E402

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}
rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_per_test(request):
    """A fresh generator per test, seeded by the test's name: inputs do not depend on which tests ran."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def randn(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def nans(*shape, dtype=np.float64):
    return np.full(shape, np.nan, dtype=dtype)


def compare(name, *args, dtype=np.float64, tol=None):
    """Run kernel ``name`` from both modules on copies of ``args``; compare every array after."""
    tol = tol or TOL[dtype]
    ref_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    dev_args = [device.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    ref_result = getattr(R, name)(*ref_args)
    dev_result = getattr(C, name)(*dev_args)
    for i, (r, d) in enumerate(zip(ref_args, dev_args)):
        if isinstance(r, np.ndarray):
            got = device.to_host(d)
            assert got.dtype == r.dtype
            np.testing.assert_allclose(got, r, err_msg=f"{name}: argument {i}", **tol)
    if ref_result is not None:
        assert dev_result == pytest.approx(ref_result, rel=1e-12)
    return [device.to_host(d) if isinstance(d, np.ndarray) or device.is_device_array(d) else d for d in dev_args]


# ------------------------------------------------------------------------------- the interface
REFERENCE_HELPERS = {"sigmoid", "sample_index",   # public in the reference, but not kernels
                     "layer_inputs", "lstm_layer", "gru_layer", "rnn_layer", "pack_steps"}


def test_same_functions_and_arguments_as_the_reference():
    import importlib
    import inspect

    from tinyrnn.kernels import SUBMODULES

    for sub in SUBMODULES:
        ref = importlib.import_module(f"tinyrnn.kernels.reference.{sub}")
        dev = importlib.import_module(f"tinyrnn.kernels.cuda.{sub}")
        for name, fn in vars(ref).items():
            if inspect.isfunction(fn) and fn.__module__ == ref.__name__ and not name.startswith("_") \
                    and name not in REFERENCE_HELPERS:
                assert hasattr(dev, name), f"tinyrnn.kernels.cuda has no {name}"
                assert list(inspect.signature(getattr(dev, name)).parameters) == \
                    list(inspect.signature(fn).parameters), name


# ------------------------------------------------------------------------------------- device
def test_device_helpers():
    assert device.is_available()
    z = device.zeros((3, 5), np.float32)
    assert z.shape == (3, 5) and device.to_host(z).dtype == np.float32
    np.testing.assert_array_equal(device.to_host(z), 0)
    a = randn(4, 3)
    d = device.to_device(a)
    assert device.is_device_array(d) and not device.is_device_array(a)
    assert device.to_device(d) is d
    np.testing.assert_array_equal(device.to_host(d), a)
    device.fill(d, 2.5)
    np.testing.assert_array_equal(device.to_host(d), 2.5)
    for n in (1, 31, 33, 300, 10_000):
        t = device.threads_for(n)
        assert t % device.WARP == 0 and t <= device.THREADS and device.blocks_for(n) * t >= n
        r = device.row_threads(n)
        assert r & (r - 1) == 0 and device.WARP <= r <= device.ROW_THREADS


# ------------------------------------------------------------------------------------- matmul
M, K, N = 19, 21, 17   # none a multiple of the 16x16 tile; K spans two k-tiles


@pytest.mark.parametrize("variant, dtype, accumulate", [
    ("nn", np.float32, True), ("nn", np.float64, False),
    ("nt", np.float32, False), ("nt", np.float64, True),
    ("tn", np.float32, True), ("tn", np.float64, False),
])
def test_matmul(variant, dtype, accumulate):
    a = randn(*((M, K) if variant[0] == "n" else (K, M)), dtype=dtype)
    b = randn(*((K, N) if variant[1] == "n" else (N, K)), dtype=dtype)
    out = randn(M, N, dtype=dtype) if accumulate else nans(M, N, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else None
    compare(f"matmul_{variant}", a, b, out, accumulate, dtype=dtype, tol=tol)


def test_matmul_single_row_and_short_k():
    compare("matmul_nt", randn(1, 3), randn(5, 3), nans(1, 5), False)
    compare("matmul_nn", randn(2, 1), randn(1, 33), nans(2, 33), False)


# --------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent(dtype):
    n, v = 5, 7
    logits = randn(n, v, dtype=dtype) * 3
    targets = np.array([0, 6, -100, 3, 6], dtype=np.int64)
    probs_dev = compare("softmax_xent_forward", logits, targets, -100, nans(n, v, dtype=dtype),
                        nans(n, dtype=dtype), dtype=dtype)[3]
    compare("softmax_xent_backward", probs_dev, targets, -100, 0.25, nans(n, v, dtype=dtype), dtype=dtype)


def test_softmax_xent_wide_rows_and_huge_logits():
    n, v = 2, 300                                   # wider than a block: each thread visits 2 columns
    logits = randn(n, v) * 3
    logits[1, 7] = 1e4                              # stays finite: the max is subtracted first
    targets = np.array([299, 7], dtype=np.int64)
    compare("softmax_xent_forward", logits, targets, -1, nans(n, v), nans(n))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax(dtype):
    n, v = 3, 40
    x = randn(n, v, dtype=dtype) * 2
    out = compare("log_softmax_forward", x, nans(n, v, dtype=dtype), dtype=dtype)[1]
    compare("log_softmax_backward", out, randn(n, v, dtype=dtype), nans(n, v, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(dtype, affine):
    n, d = 3, 40                                    # 40 columns: wider than the 32 threads of a row
    x = randn(n, d, dtype=dtype) * 2 + 1
    w, b = (randn(d, dtype=dtype), randn(d, dtype=dtype)) if affine else (randn(0, dtype=dtype),) * 2
    _, _, _, _, out, mean, rstd = compare("layer_norm_forward", x, w, b, 1e-5, nans(n, d, dtype=dtype),
                                          nans(n, dtype=dtype), nans(n, dtype=dtype), dtype=dtype)
    dw, db = (nans(d, dtype=dtype), nans(d, dtype=dtype)) if affine else (randn(0, dtype=dtype),) * 2
    compare("layer_norm_backward", x, w, mean, rstd, randn(n, d, dtype=dtype), nans(n, d, dtype=dtype), dw, db,
            dtype=dtype)


# ---------------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding(dtype):
    vocab, e = 6, 5
    idx = np.array([1, 4, 1, 0, 1, 5, 4], dtype=np.int64)       # repeats must add up
    compare("embedding_forward", randn(vocab, e, dtype=dtype), idx, nans(len(idx), e, dtype=dtype), dtype=dtype)
    compare("embedding_backward", idx, randn(len(idx), e, dtype=dtype), randn(vocab, e, dtype=dtype), dtype=dtype)


# -------------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias(dtype):
    compare("add_bias_forward", randn(4, 37, dtype=dtype), randn(37, dtype=dtype), dtype=dtype)
    compare("bias_backward", randn(5, 37, dtype=dtype), nans(37, dtype=dtype), False, dtype=dtype)
    compare("bias_backward", randn(5, 37, dtype=dtype), randn(37, dtype=dtype), True, dtype=dtype)


def test_sum_of_squares_and_scale():
    for x in (randn(300), randn(3, 7).astype(np.float32), randn(1)):
        got = C.sum_of_squares(device.to_device(x))
        assert isinstance(got, float)
        assert got == pytest.approx(R.sum_of_squares(x), rel=1e-12)
    acc = device.zeros(1, np.float64)
    a, b = randn(50), randn(4, 5)
    C.sum_of_squares_into(device.to_device(a), acc)
    C.sum_of_squares_into(device.to_device(b), acc)
    assert device.to_host(acc)[0] == pytest.approx(np.sum(a * a) + np.sum(b * b), rel=1e-12)
    compare("scale_inplace", randn(3, 11), 0.3)
    compare("scale_inplace", randn(40).astype(np.float32), 0.3, dtype=np.float32)


OPTIMIZERS = [
    ("sgd_update", 3, dict(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)),
    ("sgd_update", 3, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd_update", 3, dict(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0)),
    ("adam_update", 4, dict(step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled=False)),
    ("adam_update", 4, dict(step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, decoupled=True)),
    ("adagrad_update", 3, dict(lr=0.1, eps=1e-10, weight_decay=0.01)),
    ("rmsprop_update", 5, dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)),
    ("rmsprop_update", 5, dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True)),
]


@pytest.mark.parametrize("name, n_arrays, hyper", OPTIMIZERS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_updates(name, n_arrays, hyper, dtype):
    shape = (3, 11)
    arrays = [randn(*shape, dtype=dtype) for _ in range(n_arrays)]
    for state in arrays[2:]:                           # state buffers: second moments are >= 0
        np.abs(state, out=state)
    if name == "rmsprop_update":                       # centered: square_avg >= grad_avg**2
        arrays[2] += arrays[3] ** 2
    compare(name, *arrays, *hyper.values(), dtype=dtype)


# -------------------------------------------------------------------------------------- cells
B, H = 3, 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_cell(dtype):
    gates, c_prev = randn(B, 4 * H, dtype=dtype) * 2, randn(B, H, dtype=dtype)
    _, _, acts, c, h = compare("lstm_cell_forward", gates, c_prev, nans(B, 4 * H, dtype=dtype),
                               nans(B, H, dtype=dtype), nans(B, H, dtype=dtype), dtype=dtype)
    compare("lstm_cell_backward", acts, c_prev, c, randn(B, H, dtype=dtype), randn(B, H, dtype=dtype),
            nans(B, 4 * H, dtype=dtype), nans(B, H, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_cell(dtype):
    gi, gh, h_prev = randn(B, 3 * H, dtype=dtype) * 2, randn(B, 3 * H, dtype=dtype), randn(B, H, dtype=dtype)
    acts = compare("gru_cell_forward", gi, gh, h_prev, nans(B, 3 * H, dtype=dtype), nans(B, H, dtype=dtype),
                   dtype=dtype)[3]
    compare("gru_cell_backward", acts, gh, h_prev, randn(B, H, dtype=dtype), nans(B, 3 * H, dtype=dtype),
            nans(B, 3 * H, dtype=dtype), nans(B, H, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rnn_cell(dtype, relu):
    h = compare("rnn_cell_forward", randn(B, H, dtype=dtype) * 2, nans(B, H, dtype=dtype), relu, dtype=dtype)[1]
    compare("rnn_cell_backward", h, randn(B, H, dtype=dtype), nans(B, H, dtype=dtype), relu, dtype=dtype)


# ----------------------------------------------------------------------------------- sequence
T, SB, SH = 4, 2, 4    # 4H = 16: the recurrent matmul is one tile wide
FULL = np.full(T, SB, np.int64)    # batch_sizes of a full batch (tests/test_lengths.py: variable lengths)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_sequence(dtype):
    xproj, w_hh = randn(T * SB, 4 * SH, dtype=dtype), randn(4 * SH, SH, dtype=dtype) * 0.5   # xproj packed: (T*B, 4H)
    h0, c0 = randn(SB, SH, dtype=dtype), randn(SB, SH, dtype=dtype)
    out = compare("lstm_sequence_forward", xproj, w_hh, h0, c0, FULL, nans(T + 1, SB, SH, dtype=dtype),
                  nans(T + 1, SB, SH, dtype=dtype), nans(T, SB, 4 * SH, dtype=dtype), dtype=dtype)
    hs, cs, acts = out[5], out[6], out[7]
    compare("lstm_sequence_backward", w_hh, hs, cs, acts, randn(T, SB, SH, dtype=dtype), randn(SB, SH, dtype=dtype),
            randn(SB, SH, dtype=dtype), FULL, nans(T, SB, 4 * SH, dtype=dtype), nans(SB, SH, dtype=dtype),
            nans(SB, SH, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_sequence(dtype):
    xproj, w_hh = randn(T * SB, 3 * SH, dtype=dtype), randn(3 * SH, SH, dtype=dtype) * 0.5
    b_hh, h0 = randn(3 * SH, dtype=dtype), randn(SB, SH, dtype=dtype)
    out = compare("gru_sequence_forward", xproj, w_hh, b_hh, h0, FULL, nans(T + 1, SB, SH, dtype=dtype),
                  nans(T, SB, 3 * SH, dtype=dtype), nans(T, SB, SH, dtype=dtype), dtype=dtype)
    hs, acts, ghn = out[5], out[6], out[7]
    compare("gru_sequence_backward", w_hh, hs, acts, ghn, randn(T, SB, SH, dtype=dtype), randn(SB, SH, dtype=dtype),
            FULL, nans(T, SB, 3 * SH, dtype=dtype), nans(T, SB, 3 * SH, dtype=dtype), nans(SB, SH, dtype=dtype),
            dtype=dtype)


@pytest.mark.parametrize("dtype, sizes", [(np.float32, FULL), (np.float64, FULL),
                                          (np.float64, np.array([2, 2, 1, 1], np.int64))])   # with padding
def test_layer_norm_gru_sequence(dtype, sizes):
    xproj, w_hh = randn(int(sizes.sum()), 3 * SH, dtype=dtype), randn(3 * SH, SH, dtype=dtype) * 0.5
    gain, shift, h0 = 1 + randn(3 * SH, dtype=dtype) * 0.3, randn(3 * SH, dtype=dtype) * 0.3, randn(SB, SH, dtype=dtype)
    out = compare("layer_norm_gru_sequence_forward", xproj, w_hh, gain, shift, 1e-5, h0, sizes,
                  nans(T + 1, SB, SH, dtype=dtype), nans(T, SB, 3 * SH, dtype=dtype), nans(T, SB, 3 * SH, dtype=dtype),
                  nans(T, SB, dtype=dtype), dtype=dtype)
    hs, acts, xhat, rstd = out[7:11]
    compare("layer_norm_gru_sequence_backward", w_hh, gain, shift, hs, acts, xhat, rstd, randn(T, SB, SH, dtype=dtype),
            randn(SB, SH, dtype=dtype), sizes, nans(T, SB, 3 * SH, dtype=dtype), nans(T, SB, 3 * SH, dtype=dtype),
            nans(T, SB, 3 * SH, dtype=dtype), nans(SB, SH, dtype=dtype), dtype=dtype)


@pytest.mark.parametrize("dtype, relu", [(np.float32, False), (np.float64, True), (np.float64, False)])
def test_rnn_sequence(dtype, relu):
    xproj, w_hh, h0 = randn(T * SB, SH, dtype=dtype), randn(SH, SH, dtype=dtype) * 0.5, randn(SB, SH, dtype=dtype)
    hs = compare("rnn_sequence_forward", xproj, w_hh, h0, FULL, nans(T + 1, SB, SH, dtype=dtype), relu, dtype=dtype)[4]
    compare("rnn_sequence_backward", w_hh, hs, randn(T, SB, SH, dtype=dtype), randn(SB, SH, dtype=dtype), relu, FULL,
            nans(T, SB, SH, dtype=dtype), nans(SB, SH, dtype=dtype), dtype=dtype)


# --------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("kind, sampling", [
    ("lstm", (0.8, 0, 0.9)), ("gru", (1.0, 3, 1.0)), ("rnn", (0.0, 0, 1.0)),   # temperature, top_k, top_p
])
def test_generate(kind, sampling):
    """Batch-1 sampling: the same samples and final state as the reference, for the same uniforms."""
    V, L, GH = 7, 2, {"lstm": 4, "gru": 3, "rnn": 1}[kind] * SH
    # layer 0's table of input products, then each matrix with its (empty: float weights) row scales
    # (layer 0's w_hh as w0 (GH, H), each further layer's [w_ih | w_hh] as one matrix: w (L-1, GH, 2H))
    weights = [randn(V, GH), randn(GH, SH) * 0.5, np.zeros(0), randn(L - 1, GH, 2 * SH) * 0.5, np.zeros((L - 1, 0))]
    biases = [randn(L, GH), randn(L, GH)] if kind == "gru" else [randn(L, GH)]
    head = [randn(V, SH), np.zeros(0), randn(V)]
    state = [randn(L, SH), randn(L, SH)] if kind == "lstm" else [randn(L, SH)]
    prime, uniforms = np.array([3], dtype=np.int64), np.array([0.1, 0.7, 0.4])
    extra = [True] if kind == "rnn" else []                       # relu
    args = weights + biases + extra + head + state + [prime, uniforms, *sampling, np.full(3, -1, np.int64)]
    out = compare(f"{kind}_generate", *args)
    assert (out[-1] >= 0).all() and (out[-1] < V).all()


# ---------------------------------------------------------------------------- the CPU path
def test_cpu_path_never_imports_numba_cuda():
    code = textwrap.dedent("""
        import sys, importlib, pkgutil
        import numpy as np
        import tinyrnn, tinyrnn.kernels.cpu as K, tinyrnn.kernels.reference
        for sub in tinyrnn.kernels.SUBMODULES:
            try:
                importlib.import_module("tinyrnn.kernels.cpu." + sub)
            except ModuleNotFoundError as e:
                if e.name != "tinyrnn.kernels.cpu." + sub:
                    raise
        import tinyrnn.nn, tinyrnn.optim
        x = np.ones((2, 3), np.float32); b = np.ones(3, np.float32)
        K.add_bias_forward(x, b)
        assert "numba.cuda" not in sys.modules, sorted(m for m in sys.modules if m.startswith("numba.cuda"))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------- real compiles (no GPU)
# The simulator runs kernels as Python, so it accepts code that numba cannot compile for a GPU.
# This check compiles every kernel, with the argument types the host functions really pass,
# to PTX for sm_90, without a GPU: the host functions run on numpy arrays and each launch is
# replaced by a compile. It needs NVVM (libnvvm and libdevice, e.g. from the
# nvidia-cuda-nvcc-cu12 wheel, with CUDA_HOME pointing at its nvidia/cuda_nvcc folder) and is
# skipped where numba cannot find it. It also checks that float32 kernels do float32 math.
_PTX_CHECK = r'''
import sys, types
import numpy as np
import numba
from numba import cuda
from numba.cuda import dispatcher
from numba.cuda.cudadrv import nvvm
from numba.cuda.cudadrv.error import NvvmSupportError
try:
    nvvm.NVVM()
except NvvmSupportError as e:       # only "the CUDA toolkit's libNVVM is not installed" skips
    print("NVVM/CUDA toolkit not available:", " ".join(str(e).split()))
    sys.exit(77)

compiled = {}
FLOAT64_ON_PURPOSE = ("_sgd_kernel", "_adam_kernel", "_adagrad_kernel", "_rmsprop_kernel", "_scale_kernel",
                      "_partial_sums_kernel", "_finish_sum_kernel")

def compile_instead_of_launch(self, config):
    def launch(*args):
        sig = tuple(numba.typeof(a) for a in args)
        if (self.py_func.__name__, sig) not in compiled:
            ptx, _ = cuda.compile_ptx(self.py_func, sig, cc=(9, 0))
            f64 = [l for l in ptx.splitlines() if ".f64" in l and not l.strip().startswith(".reg")]
            compiled[self.py_func.__name__, sig] = f64
    return launch

dispatcher.CUDADispatcher.__getitem__ = compile_instead_of_launch
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
cuda.device_array = lambda shape, dtype=np.float64: np.zeros(shape, dtype)

from tinyrnn.kernels import cuda as C
from tinyrnn.kernels.cuda import device, elementwise, sequence

def copy(src, dst):
    dst[...] = src

sequence.copy = device.copy = copy
z = np.zeros
for dt in (np.float32, np.float64):
    a, i = z((5, 6), dt), z(5, np.int64)
    device.fill(a, 0)
    C.matmul_nn(a, z((6, 4), dt), z((5, 4), dt), True)
    C.matmul_nt(a, z((4, 6), dt), z((5, 4), dt), False)
    C.matmul_tn(a, z((5, 4), dt), z((6, 4), dt), False)
    C.softmax_xent_forward(a, i, -100, a, z(5, dt))
    C.softmax_xent_backward(a, i, -100, 0.5, a)
    C.log_softmax_forward(a, a)
    C.log_softmax_backward(a, a, a)
    C.layer_norm_forward(a, z(6, dt), z(6, dt), 1e-5, a, z(5, dt), z(5, dt))
    C.layer_norm_backward(a, z(0, dt), z(5, dt), z(5, dt), a, a, z(6, dt), z(0, dt))
    C.layer_norm_params_backward(a, z(5, dt), z(5, dt), a, z(0, dt), z(6, dt))
    C.embedding_forward(a, i, a)
    C.embedding_backward(i, a, a)
    C.add_bias_forward(a, z(6, dt))
    C.bias_backward(a, z(6, dt), True)
    elementwise.sum_of_squares_into(a, z(1), True)
    C.scale_inplace(a, 0.5)
    C.sgd_update(a, a, a, 0.1, 0.9, True, 0.0)
    C.adam_update(a, a, a, a, 1, 0.1, 0.9, 0.99, 1e-8, 0.0, True)
    C.adagrad_update(a, a, a, 0.1, 1e-8, 0.0)
    C.rmsprop_update(a, a, a, a, a, 0.1, 0.9, 1e-8, 0.0, 0.9, True)
    B, H, T = 2, 3, 2
    bh, g4, g3, hs = z((B, H), dt), z((B, 4 * H), dt), z((B, 3 * H), dt), z((T + 1, B, H), dt)
    C.lstm_cell_forward(g4, bh, g4, bh, bh)
    C.lstm_cell_backward(g4, bh, bh, bh, bh, g4, bh)
    C.gru_cell_forward(g3, g3, bh, g3, bh)
    C.gru_cell_backward(g3, g3, bh, bh, g3, g3, bh)
    C.rnn_cell_forward(bh, bh, True)
    C.rnn_cell_backward(bh, bh, bh, False)
    s4, s3, s1 = z((T, B, 4 * H), dt), z((T, B, 3 * H), dt), z((T, B, H), dt)
    bs = np.array([B, 1], np.int64)       # batch_sizes: a full step and a step with inactive rows
    p4, p3, p1 = z((B + 1, 4 * H), dt), z((B + 1, 3 * H), dt), z((B + 1, H), dt)   # packed xproj of bs
    C.lstm_sequence_forward(p4, z((4 * H, H), dt), bh, bh, bs, hs, hs, s4)
    C.lstm_sequence_backward(z((4 * H, H), dt), hs, hs, s4, s1, bh, bh, bs, s4, bh, bh)
    C.gru_sequence_forward(p3, z((3 * H, H), dt), z(3 * H, dt), bh, bs, hs, s3, s1)
    C.gru_sequence_backward(z((3 * H, H), dt), hs, s3, s1, s1, bh, bs, s3, s3, bh)
    C.layer_norm_gru_sequence_forward(p3, z((3 * H, H), dt), z(3 * H, dt), z(3 * H, dt), 1e-5, bh, bs, hs, s3, s3,
                                      z((T, B), dt))
    C.layer_norm_gru_sequence_backward(z((3 * H, H), dt), z(3 * H, dt), z(3 * H, dt), hs, s3, s3, z((T, B), dt), s1,
                                       bh, bs, s3, s3, s3, bh)
    C.rnn_sequence_forward(p1, z((H, H), dt), bh, bs, hs, False)
    C.rnn_sequence_backward(z((H, H), dt), hs, s1, bh, True, bs, s1, bh)

names = sorted({name for name, _ in compiled})
print(len(compiled), "specialisations of", len(names), "kernels compiled to PTX:", " ".join(names))
bad = [name for (name, sig), f64 in compiled.items()
       if f64 and name not in FLOAT64_ON_PURPOSE and all(getattr(t, "dtype", None) != numba.float64 for t in sig)]
assert not bad, f"float32 kernels doing float64 math: {bad}"
'''


def test_every_kernel_compiles_to_ptx():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _PTX_CHECK], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode == 77 and proc.stdout.startswith("NVVM/CUDA toolkit not available"):
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "compiled to PTX" in proc.stdout
