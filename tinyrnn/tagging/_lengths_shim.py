"""TEMPORARY until lengths= lands in the recurrent layers: ``layer(x, lengths=lengths)`` for layers
that do not take ``lengths`` yet. Delete this file at merge and call ``layer(x, lengths=lengths)``.

    out, state = run(layer, x, lengths)     # x (T, B, I) padded, lengths (B,) ints in [1, T]

Semantics (PyTorch's packed sequences): out (T, B, D*H) is zero at padding, the backward direction
of each sequence starts at its own last token, and the final states are each sequence's own last
step. Emulated exactly by running the layer once per distinct length on the sequences of that
length (cut to it), then putting the results back in batch order.
"""
import inspect

import numpy as np

from .. import ops
from ..tensor import Tensor


def run(layer, x, lengths):
    """``layer(x, lengths=lengths)`` -> (out (T, B, D*H), state), with or without native support."""
    if "lengths" in inspect.signature(layer.forward).parameters:       # the real thing has landed
        return layer(x, lengths=lengths)
    T, B = x.shape[0], x.shape[1]
    lengths = np.asarray(lengths, np.int64)
    if np.all(lengths == T):
        return layer(x)
    outs, finals, order = [], [], []
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        out, state = layer(x[:int(n), idx] if len(idx) < B else x[:int(n)])
        if n < T:
            pad = np.zeros((T - int(n),) + tuple(out.shape[1:]), out.dtype)
            out = ops.concat([out, Tensor(pad)], axis=0)
        outs.append(out)
        finals.append(state if isinstance(state, tuple) else (state,))
        order.append(idx)
    back = np.argsort(np.concatenate(order), kind="stable")             # group order -> batch order
    out = ops.concat(outs, axis=1)[:, back]
    state = tuple(ops.concat([f[k] for f in finals], axis=1)[:, back] for k in range(len(finals[0])))
    return out, state if len(state) > 1 else state[0]
