"""The backend is the only door to the kernels: TINYRNN_KERNELS=reference switches every one of them
(the ops, the fused layers, the optimizers, gradient clipping), and the CPU and CUDA array helpers
offer the same names."""
import json
import os
import subprocess
import sys

import numpy as np

import tinyrnn
from tinyrnn import nn, optim

# One training step of a tiny LSTM + Linear with Adam and clip_grad_norm; prints the loss, the
# updated parameters and whether numba was imported, as JSON.
STEP = """
import json, sys, numpy as np, tinyrnn
from tinyrnn import functional as F, nn, optim
tinyrnn.manual_seed(0)
lstm, head = nn.LSTM(3, 5), nn.Linear(5, 4)
params = list(lstm.parameters()) + list(head.parameters())
opt = optim.Adam(params, lr=0.01)
x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype(np.float32)
y = np.random.default_rng(2).integers(0, 4, (6, 2))
out, _ = lstm(tinyrnn.tensor(x))
loss = F.cross_entropy(head(out), y)
opt.zero_grad(); loss.backward()
norm = optim.clip_grad_norm(params, 0.1)
opt.step()
print(json.dumps({"loss": loss.item(), "norm": norm, "numba": "numba" in sys.modules,
                  "params": [p.numpy().ravel().tolist() for p in params]}))
"""


def _step(kernels):
    env = {k: v for k, v in os.environ.items() if k != "TINYRNN_KERNELS"}
    if kernels:
        env["TINYRNN_KERNELS"] = kernels
    out = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


def test_reference_kernels_switch_everything_and_agree_with_the_default():
    ref, fast = _step("reference"), _step(None)
    assert ref["numba"] is False          # no Numba kernel ran: not the layers', the optimizer's or clip's
    assert fast["numba"] is True
    np.testing.assert_allclose(ref["loss"], fast["loss"], rtol=1e-5)
    np.testing.assert_allclose(ref["norm"], fast["norm"], rtol=1e-5)
    for r, f in zip(ref["params"], fast["params"]):
        np.testing.assert_allclose(r, f, rtol=1e-5, atol=1e-6)


def test_optimizer_updates_a_non_contiguous_parameter_in_place():
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    p, q = nn.Parameter(base.copy().T), nn.Parameter(np.ascontiguousarray(base.T))   # p: a strided view
    assert not p.data.flags.c_contiguous
    view = p.data
    for t in (p, q):
        t.grad = np.ones((4, 3)) * np.arange(3)
    optim.SGD([p], lr=0.5, momentum=0.9).step()
    optim.SGD([q], lr=0.5, momentum=0.9).step()
    assert p.data is view
    np.testing.assert_array_equal(p.data, q.data)


def test_cpu_and_cuda_array_helpers_offer_the_same_names():
    import ast
    import pathlib

    root = pathlib.Path(tinyrnn.__file__).parent / "kernels"

    def public(path):
        names = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for t in (target.elts if isinstance(target, ast.Tuple) else [target]):
                        names.add(t.id)
            elif isinstance(node, ast.ImportFrom) and node.module == "device":
                names.update(a.asname or a.name for a in node.names)
        return {n for n in names if not n.startswith("_") and not n.isupper()}

    cpu = public(root / "reference" / "arrays.py")
    cuda = public(root / "cuda" / "arrays.py")
    helpers = {"blocks_for", "is_simulator", "jit", "sum_into", "threads_for"}   # (imported for its own use)
    assert cpu - cuda == set()
    assert cuda - cpu - helpers == set()


TRAIN_RUN = """
import sys
from tinyrnn import backend
with backend.compile_notice(print):          # a terminal's notice: with the reference kernels, nothing to listen for
    pass
sys.argv = ["tinyrnn", "train", sys.argv[1], "--steps", "2", "--hidden", "8", "--embed", "8", "--seq-len", "16",
            "--batch-size", "2", "--out", sys.argv[2], "--quiet"]
from tinyrnn_cli.main import main
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("numba" in sys.modules)
"""


def test_training_with_the_reference_kernels_never_imports_numba(tmp_path):
    """TINYRNN_KERNELS=reference keeps Numba out of a whole `tinyrnn train` run too: the trainer's
    compile notice (``backend.compile_notice``) imports nothing then."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 20)
    env = dict(os.environ, TINYRNN_KERNELS="reference")
    out = subprocess.run([sys.executable, "-c", TRAIN_RUN, str(corpus), str(tmp_path / "run")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "False"
