"""Feed-forward layers: ``Linear``, ``Embedding``, ``LayerNorm``, ``Dropout``."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..random import generator
from .module import Module, Parameter


def uniform(shape, bound: float, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound) from the library's generator (PyTorch's default initialisation family)."""
    return generator().uniform(-bound, bound, size=shape).astype(dtype)


class Linear(Module):
    """y = x @ W.T + b.   x: (..., in_features) -> y: (..., out_features); W: (out, in) as in PyTorch.

    Initialisation as PyTorch: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return {"in_features": self.in_features, "out_features": self.out_features}


class Embedding(Module):
    """Rows of a (num_embeddings, embedding_dim) table picked by integer indices; init N(0, 1) as PyTorch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=np.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(generator().standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, idx):
        """idx: integer array (any shape) -> idx.shape + (embedding_dim,)"""
        return ops.embedding(self.weight, idx)

    def extra_repr(self):
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim}


class LayerNorm(Module):
    """Each row of the last axis to mean 0 and variance 1, then a gain and a shift (``ops.layer_norm``).
    x: (..., normalized_shape) -> (..., normalized_shape).

    PyTorch's ``nn.LayerNorm`` over one axis: its names (``weight``, the gain, init 1; ``bias``, the
    shift, init 0), its eps (1e-5), and ``elementwise_affine=False`` or ``bias=False`` for none.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, (tuple, list)):
            if len(normalized_shape) != 1:
                raise ValueError(f"LayerNorm normalises over the last axis only: normalized_shape must be "
                                 f"one number, got {tuple(normalized_shape)}")
            normalized_shape = normalized_shape[0]
        if int(normalized_shape) <= 0:
            raise ValueError(f"normalized_shape must be positive, got {normalized_shape}")
        self.normalized_shape, self.eps = int(normalized_shape), float(eps)
        affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if affine and bias else None

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return {"normalized_shape": self.normalized_shape, "eps": self.eps}


class Dropout(Module):
    """Zero elements with probability p in training mode (scaling the rest by 1/(1-p)); identity in eval."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return ops.dropout(x, self.p, self.training, generator())

    def extra_repr(self):
        return {"p": self.p}
