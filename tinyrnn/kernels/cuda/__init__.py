"""numba.cuda kernels; same names and arguments as the reference, over device arrays.

Names are looked up lazily in the submodules, so importing this package compiles nothing.
"""
from .. import lazy_lookup

__getattr__ = lazy_lookup(__name__, globals())
