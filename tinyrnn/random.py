"""One seeded random generator for the library (weight initialisation, dropout).

``tinyrnn.manual_seed(s)`` makes runs repeatable; ``get_state``/``set_state`` let a checkpoint
store and restore it (the state is a JSON-friendly dict).
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def generator() -> np.random.Generator:
    return _generator


def get_state() -> dict:
    return _generator.bit_generator.state


def set_state(state: dict):
    _generator.bit_generator.state = state
