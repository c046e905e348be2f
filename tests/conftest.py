"""Shared pytest setup.

The CUDA kernels are tested in numba's CUDA simulator, which must be chosen before
``numba.cuda`` is first imported. On a machine with a GPU, run with NUMBA_ENABLE_CUDASIM=0 to
test the real device instead.
"""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
