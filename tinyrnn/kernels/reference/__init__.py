"""Naive numpy kernels: the spec every fast kernel is tested against.

Names are looked up lazily in the submodules, so importing this package compiles nothing.
"""
from .. import lazy_lookup

__getattr__ = lazy_lookup(__name__, globals())
