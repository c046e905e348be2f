"""Start-up costs: importing tinyrnn compiles nothing and does not even import numba."""
import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_tinyrnn_does_not_import_numba():
    out = _run("import sys, tinyrnn, tinyrnn.nn, tinyrnn.optim; print('numba' in sys.modules)")
    assert out == "False"


def test_building_a_model_imports_numba_only_when_a_kernel_runs():
    code = (
        "import sys, numpy as np, tinyrnn\n"
        "from tinyrnn import nn\n"
        "lstm = nn.LSTM(3, 4)\n"
        "print('numba' in sys.modules)\n"
        "lstm(tinyrnn.tensor(np.zeros((2, 1, 3)), dtype=np.float32))\n"
        "print('numba' in sys.modules, 'numba.cuda' in sys.modules)\n"
    )
    assert _run(code).split() == ["False", "True", "False"]


def test_kernels_are_cached_on_disk():
    from tinyrnn.kernels.jit import OPTIONS

    assert OPTIONS["cache"] is True
