"""Shared pytest setup.

The CUDA kernels are tested in numba's CUDA simulator, which must be chosen before
``numba.cuda`` is first imported. The simulator is the default unless this machine has an NVIDIA
GPU (``/dev/nvidia0`` or a working ``nvidia-smi``), in which case the real device is tested.
NUMBA_ENABLE_CUDASIM set by hand wins; set to 0 on a machine without a GPU, the CUDA test files
fail with a message that says so instead of skipping quietly.

Numba's thread count is global: a test that changes it (``tinyrnn train --threads 1`` in-process,
or a test that runs kernels at 1 and 2 threads) would leave every later test on that count. An
autouse fixture restores it after each test.
"""
import os
import shutil
import subprocess

import pytest


def _has_nvidia_gpu() -> bool:
    """Cheap: no numba.cuda import (that would fix the simulator choice too early)."""
    if os.path.exists("/dev/nvidia0"):
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


HAS_GPU = _has_nvidia_gpu()
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0" if HAS_GPU else "1")
CUDASIM = os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0")


def require_cuda_or_simulator():
    """For the CUDA test files, at import: with NUMBA_ENABLE_CUDASIM=0 and no GPU, fail loudly
    (a quiet skip would hide ~80 tests); pass otherwise."""
    if CUDASIM:
        return
    from numba import cuda

    if not cuda.is_available():
        pytest.fail("NUMBA_ENABLE_CUDASIM=0 but numba finds no CUDA GPU "
                    f"(/dev/nvidia0 {'exists' if os.path.exists('/dev/nvidia0') else 'is missing'}): "
                    "unset NUMBA_ENABLE_CUDASIM to test the CUDA kernels in the simulator", pytrace=False)


@pytest.fixture(autouse=True)
def _restore_numba_threads():
    """Every test starts and ends with Numba's full thread count (only if numba is imported by then;
    a module-scoped fixture that trains with --threads 1 is undone here too)."""
    import sys

    def full():
        numba = sys.modules.get("numba")
        if numba is not None and numba.get_num_threads() != numba.config.NUMBA_NUM_THREADS:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    full()
    yield
    full()
