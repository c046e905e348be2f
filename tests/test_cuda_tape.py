"""The tape on the GPU: a whole training step on CUDA tensors equals the same step on the CPU.

Runs in numba's CUDA simulator when there is no GPU (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1;
set it to 0 to run on a real GPU). Sizes are tiny: the simulator runs one Python thread per GPU
thread and the time loops launch kernels per step.

Each parity check builds one model from one seed, runs the step on a CPU copy and a CUDA copy,
and compares the loss, every gradient, the gradient norm and every updated weight (float32).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    # NUMBA_ENABLE_CUDASIM=0 on a machine without a GPU (conftest.py picks the simulator unless it
    # finds one): fail loudly, a quiet skip would hide every CUDA test
    pytest.fail("NUMBA_ENABLE_CUDASIM=0 but numba finds no CUDA GPU: unset NUMBA_ENABLE_CUDASIM to test "
                "the CUDA kernels in the simulator", pytrace=False)

import tinyrnn  # noqa: E402
from tinyrnn import DeviceError, nn, ops, optim  # noqa: E402
from tinyrnn.backend import is_device_array  # noqa: E402

TOL = dict(rtol=2e-4, atol=2e-5)   # float32, two different summation orders
V, E, H, T, B = 5, 3, 4, 2, 2


class CharModel(nn.Module):
    """Embedding -> recurrent stack -> Linear, as the character models are built."""

    def __init__(self, stack):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.rnn = stack
        width = 2 * H if getattr(stack, "bidirectional", False) or \
            (isinstance(stack, nn.Bidirectional) and stack.merge_mode == "concat") else H
        self.head = nn.Linear(width, V)

    def forward(self, x):
        out, _ = self.rnn(self.embed(x))
        return self.head(out)


STACKS = {
    "lstm2": lambda: nn.LSTM(E, H, num_layers=2),
    "gru": lambda: nn.GRU(E, H),
    "gru-layer-norm2": lambda: nn.GRU(E, H, num_layers=2, layer_norm=True),
    "bigru-layer-norm": lambda: nn.GRU(E, H, bidirectional=True, layer_norm=True),
    "bilstm": lambda: nn.LSTM(E, H, bidirectional=True),
    "bigru-wrapper-sum": lambda: nn.Bidirectional(nn.GRU(E, H), merge_mode="sum"),
    "rnn-relu-wrapper-ave": lambda: nn.Bidirectional(nn.RNN(E, H, nonlinearity="relu"), merge_mode="ave"),
}


def _batch():
    rng = np.random.default_rng(1)
    x = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    targets[0, 1] = -100   # an ignored target
    return x, targets


def _train_step(model, x, targets):
    params = model.parameters()
    opt = optim.Adam(params, lr=1e-2)
    logits = model(x)
    loss = ops.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    model.zero_grad()
    loss.backward()
    grads = {name: p.grad.copy() if isinstance(p.grad, np.ndarray) else p.grad.copy_to_host()
             for name, p in model.named_parameters()}
    norm = optim.clip_grad_norm(params, 0.05)   # small enough to clip
    opt.step()
    return loss, grads, norm, model.state_dict()


@pytest.mark.parametrize("name", list(STACKS))
def test_training_step_matches_cpu(name):
    tinyrnn.manual_seed(0)
    cpu_model = CharModel(STACKS[name]())
    tinyrnn.manual_seed(0)
    gpu_model = CharModel(STACKS[name]()).to("cuda")
    assert all(is_device_array(p.data) for p in gpu_model.parameters())
    x, targets = _batch()

    loss_c, grads_c, norm_c, after_c = _train_step(cpu_model, x, targets)
    loss_g, grads_g, norm_g, after_g = _train_step(gpu_model, x, targets)

    assert loss_g.device == "cuda" and is_device_array(loss_g.data) and loss_g.shape == ()
    assert loss_g.item() == pytest.approx(loss_c.item(), rel=1e-5)
    assert norm_g == pytest.approx(norm_c, rel=1e-4) and norm_c > 0.05
    for key in grads_c:
        np.testing.assert_allclose(grads_g[key], grads_c[key], err_msg=f"grad {key}", **TOL)
    for key in after_c:
        np.testing.assert_allclose(after_g[key], after_c[key], err_msg=f"weight {key}", **TOL)
    assert all(is_device_array(p.data) for p in gpu_model.parameters())   # updated in place, on the GPU


def test_set_device_makes_parameters_on_the_gpu_and_fused_cells_match():
    tinyrnn.manual_seed(3)
    cell_c = nn.LSTMCell(E, H)
    gru_c = nn.GRUCell(E, H)
    try:
        tinyrnn.set_device("cuda")
        assert tinyrnn.get_device() == "cuda"
        tinyrnn.manual_seed(3)
        cell_g = nn.LSTMCell(E, H)
        gru_g = nn.GRUCell(E, H)
        x = tinyrnn.tensor(np.random.default_rng(2).standard_normal((B, E)).astype(np.float32))
    finally:
        tinyrnn.set_device("cpu")
    assert x.device == "cuda" and cell_g.weight_ih.device == "cuda"
    xc = x.to("cpu")
    for cell, ref in ((cell_g, cell_c), (gru_g, gru_c)):
        out_g, out_c = cell(x), ref(xc)
        h_g, h_c = (out_g[0], out_c[0]) if isinstance(out_g, tuple) else (out_g, out_c)
        (h_g * h_g).sum().backward()
        (h_c * h_c).sum().backward()
        np.testing.assert_allclose(h_g.numpy(), h_c.numpy(), **TOL)
        np.testing.assert_allclose(cell.weight_hh.grad.copy_to_host(), ref.weight_hh.grad, **TOL)


def test_to_round_trips_and_gradients_flow_back():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = tinyrnn.tensor(a, requires_grad=True)
    g = x.to("cuda")
    assert g.device == "cuda" and x.device == "cpu" and g.to("cuda") is g
    back = g.to("cpu")
    assert back.device == "cpu" and isinstance(back.data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), a)
    np.testing.assert_array_equal(g.numpy(), a)
    # ops on the GPU, then the loss on the GPU; the gradient arrives on the CPU tensor
    y = ops.concat([g[::-1], g[:, 1:3] - 1.0], axis=1)
    loss = (ops.stack([y, y * 3.0], axis=0) * 0.5).mean()
    loss.backward()
    assert isinstance(x.grad, np.ndarray)
    ref = tinyrnn.tensor(a, requires_grad=True)
    yr = ops.concat([ref[::-1], ref[:, 1:3] - 1.0], axis=1)
    (ops.stack([yr, yr * 3.0], axis=0) * 0.5).mean().backward()
    np.testing.assert_allclose(x.grad, ref.grad, rtol=1e-6)
    assert loss.item() == pytest.approx((ops.stack([yr, yr * 3.0], axis=0) * 0.5).mean().item(), rel=1e-6)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_on_the_gpu_matches_the_cpu(affine):
    tinyrnn.manual_seed(4)
    norm = nn.LayerNorm(2 * H, elementwise_affine=affine)
    if affine:
        rng = np.random.default_rng(6)
        norm.load_state_dict({"weight": rng.standard_normal(2 * H), "bias": rng.standard_normal(2 * H)})
    a = np.random.default_rng(7).standard_normal((T, B, 2 * H)).astype(np.float32) * 3 + 1
    results = []
    for device in ("cuda", "cpu"):
        norm.to(device)
        norm.zero_grad()
        x = tinyrnn.tensor(a, requires_grad=True)
        y = norm(x.to(device))
        (y * y * ops.concat([y[:1], y[1:] * 2.0], axis=0)).sum().backward()   # a gradient unlike y's own
        grads = [p.grad.copy_to_host() if device == "cuda" else p.grad for p in norm.parameters()]
        results.append((y.numpy(), x.grad, grads))
    (y_g, dx_g, dp_g), (y_c, dx_c, dp_c) = results
    np.testing.assert_allclose(y_g, y_c, **TOL)
    np.testing.assert_allclose(dx_g, dx_c, **TOL)
    for g, c in zip(dp_g, dp_c):
        np.testing.assert_allclose(g, c, **TOL)


def test_module_to_and_state_dict_round_trip():
    tinyrnn.manual_seed(5)
    model = CharModel(nn.GRU(E, H))
    state = model.state_dict()
    model.to("cuda")
    assert model.device == "cuda"
    gpu_state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in gpu_state.values())
    for key in state:
        np.testing.assert_array_equal(gpu_state[key], state[key])
    model.load_state_dict({k: v * 2 for k, v in state.items()})
    assert model.device == "cuda"
    model.to("cpu")
    np.testing.assert_array_equal(model.embed.weight.data, state["embed.weight"] * 2)


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    lambda ps: optim.AdamW(ps, lr=0.01),
    lambda ps: optim.Adagrad(ps, lr=0.1, weight_decay=0.01),
    lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
])
def test_optimizers_and_clipping_on_the_gpu(make):
    rng = np.random.default_rng(7)
    values = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    grads = [[rng.standard_normal(v.shape).astype(np.float32) for v in values] for _ in range(2)]
    cpu_params = [nn.Parameter(v.copy()) for v in values]
    gpu_params = [nn.Parameter(cuda.to_device(v)) for v in values]
    opt_c, opt_g = make(cpu_params), make(gpu_params)
    for step_grads in grads:
        for pc, pg, g in zip(cpu_params, gpu_params, step_grads):
            pc.grad = g.copy()
            pg.grad = cuda.to_device(g)
        optim.clip_grad_value(cpu_params, 1.0)
        optim.clip_grad_value(gpu_params, 1.0)
        opt_c.step()
        opt_g.step()
    for pc, pg in zip(cpu_params, gpu_params):
        assert is_device_array(pg.data)
        np.testing.assert_allclose(pg.numpy(), pc.data, rtol=1e-6, atol=1e-7)
    state_c, state_g = opt_c.state_dict(), opt_g.state_dict()
    assert state_g["steps"] == state_c["steps"]
    for key in state_c["state"]:
        np.testing.assert_allclose(state_g["state"][key], state_c["state"][key], rtol=1e-6, atol=1e-7)
    opt_g.load_state_dict(state_c)                       # host arrays back into GPU buffers
    opt_g.zero_grad()
    assert not gpu_params[0].grad.copy_to_host().any()


def test_dropout_on_the_gpu_is_seeded_and_scaled():
    x = tinyrnn.tensor(np.ones((20, 25), dtype=np.float32), requires_grad=True)
    g = x.to("cuda")

    def masked(seed):
        tinyrnn.manual_seed(seed)
        return nn.Dropout(0.25)(g)

    a, b, c = masked(1), masked(1), masked(2)
    a_host = a.numpy()
    np.testing.assert_array_equal(a_host, b.numpy())
    assert not np.array_equal(a_host, c.numpy())
    assert set(np.unique(a_host)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.1 < (a_host == 0).mean() < 0.4
    a.sum().backward()
    np.testing.assert_array_equal(x.grad, a_host)   # d(sum(x * mask)) / dx = mask


def test_mixed_devices_are_an_error():
    a = tinyrnn.tensor(np.ones((2, 3)))
    b = tinyrnn.tensor(np.ones((2, 3))).to("cuda")
    with pytest.raises(DeviceError, match="different devices"):
        a + b
    with pytest.raises(DeviceError, match="different devices"):
        ops.linear(b, tinyrnn.tensor(np.ones((4, 3))))
    with pytest.raises(DeviceError, match="different devices"):
        ops.concat([a, b], axis=0)


def test_unsupported_ops_on_cuda_say_so():
    b = tinyrnn.tensor(np.ones((2, 3))).to("cuda")
    for call, name in ((lambda: b.tanh(), "tanh"), (lambda: b.exp(), "exp"), (lambda: b.T, "transpose"),
                       (lambda: b.sum(axis=0), "sum over some axes")):
        with pytest.raises(DeviceError, match=f"{name}.*CUDA.*CPU"):
            call()
    with pytest.raises(DeviceError, match="broadcasting"):
        b + tinyrnn.tensor(np.ones(3)).to("cuda")


def test_require_device_without_a_gpu():
    assert tinyrnn.require_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        tinyrnn.require_device("tpu")
    code = ("import tinyrnn\n"
            "try:\n    tinyrnn.require_device('cuda')\nexcept ValueError as e:\n    print(e)\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")   # hide any real GPU too
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip()
    assert out == "--device cuda: no CUDA GPU found (numba.cuda.is_available() is False); use --device cpu"


# The simulator runs kernels as Python and accepts code numba cannot compile for a GPU: compile
# every kernel of tinyrnn/kernels/cuda/arrays.py to PTX (sm_90) with the argument types the
# helpers pass (as tests/test_kernels_cuda.py does for the spec's kernels). Needs NVVM.
_ARRAYS_PTX_CHECK = r'''
import sys
import numpy as np
import numba
from numba import cuda
from numba.cuda.cudadrv import nvvm
from numba.cuda.cudadrv.error import NvvmSupportError
try:
    nvvm.NVVM()
except NvvmSupportError as e:       # only "the CUDA toolkit's libNVVM is not installed" skips
    print("NVVM/CUDA toolkit not available:", " ".join(str(e).split()))
    sys.exit(77)
import types
from numba.cuda import dispatcher
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))  # device functions
from numba.cuda.random import xoroshiro128p_dtype
from tinyrnn.kernels.cuda import arrays as A
from tinyrnn.kernels.cuda import device as D

ty = numba.typeof
n = 0
for dt in (np.float32, np.float64):
    v1, s1 = np.zeros(6, dt), np.zeros(1, dt)
    for nd in (1, 2, 3, 4):
        view = np.zeros((3,) * nd, dt)[..., ::-1]            # a strided ('A' layout) view
        cuda.compile_ptx(A._STRIDED[nd].py_func, (ty(view), ty(view), numba.boolean), cc=(9, 0))
        n += 1
    f = ty(dt(0))
    jobs = [(A._binary_kernel, (ty(v1), ty(v1), ty(v1), numba.int64)),
            (A._affine_kernel, (ty(v1), ty(v1), f, f)),
            (A._scale_by_kernel, (ty(v1), ty(s1))),
            (A._broadcast_kernel, (ty(s1), ty(v1), f)),
            (A._clip_kernel, (ty(v1), f, f)),
            (D._partial_sums_kernel, (ty(v1), numba.boolean, ty(np.zeros(2)))),
            (D._finish_sum_kernel, (ty(np.zeros(2)), ty(s1), numba.float64, numba.boolean)),
            (A._dropout_mask_kernel, (ty(np.zeros(4, xoroshiro128p_dtype)), ty(v1), numba.float64, f))]
    for kernel, sig in jobs:
        cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        n += 1
print(n, "arrays kernels compiled to PTX")
'''


def test_array_kernels_compile_to_ptx():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _ARRAYS_PTX_CHECK], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode == 77 and proc.stdout.startswith("NVVM/CUDA toolkit not available"):
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "arrays kernels compiled to PTX" in proc.stdout


def test_a_cuda_toolchain_that_cannot_compile_is_one_clear_line(monkeypatch):
    """numba-cuda 0.30.4 beside numpy 2.5 fails in its first compile (AttributeError: np.row_stack,
    seen on an H200): `--device cuda` then says so in one line, with the versions and the way out,
    instead of an 'unexpected error' from inside the first op."""
    from tinyrnn import backend
    from tinyrnn.errors import TinyRNNError
    from tinyrnn.kernels.cuda import device

    def broken_fill(d, value):
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(device, "_toolchain_checked", [])
    monkeypatch.setattr(device, "fill", broken_fill)
    with pytest.raises(ValueError) as caught:
        backend.require_device("cuda")
    message = str(caught.value)
    assert "\n" not in message and "could not compile a kernel" in message and "row_stack" in message
    assert "numpy " in message and "--device cpu" in message, message
    with pytest.raises(TinyRNNError, match="could not compile a kernel"):
        backend.use_device("cuda")              # what the command line calls: one line, exit 1
    assert backend.get_device() == "cpu"
    monkeypatch.setattr(device, "_toolchain_checked", [])
    monkeypatch.undo()                          # the real fill: the simulator (or GPU) compiles it
    assert device.toolchain_problem() is None and backend.require_device("cuda") == "cuda"
