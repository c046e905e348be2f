"""The ops: every differentiable function on tensors, each a forward and its backward side by side.
Also importable as ``tinyrnn.functional`` (``F.linear``, ``F.cross_entropy``, ...).

* ``primitives.py`` - arithmetic, elementwise functions, reductions, shape ops (permute: a gather along an axis), matmul, linear,
  embedding, reverse_padded, dropout, layer_norm, log_softmax and cross_entropy; ``same_device`` and ``unbroadcast``.
* ``recurrent.py``  - the recurrent cells as fused ops: one step (``lstm_step_fused``, ...) and a
  whole layer over T steps (``lstm_sequence``, ..., ``layer_norm_gru_sequence``). Their equations are in ``tinyrnn.nn.cells``.
"""
from .primitives import (add, astype, concat, cross_entropy, div, dropout, embedding, exp, getitem, layer_norm,
                         linear, log, log_softmax, matmul, mean, mul, neg, permute, pow, relu, reshape, reverse_padded, same_device,
                         sigmoid, split, stack, sub, sum, tanh, transpose, unbroadcast)
from .recurrent import (gru_gates_fused, gru_sequence, gru_step_fused, layer_norm_gru_sequence, lstm_sequence,
                        lstm_step_fused, rnn_sequence, rnn_step_fused)

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "astype", "tanh", "sigmoid", "relu", "exp", "log",
           "sum", "mean", "reshape", "transpose", "getitem", "permute", "concat", "stack", "split", "matmul", "linear",
           "embedding", "reverse_padded", "dropout", "layer_norm", "log_softmax", "cross_entropy", "same_device", "unbroadcast",
           "rnn_step_fused", "rnn_sequence", "lstm_step_fused", "lstm_sequence", "gru_step_fused", "gru_gates_fused",
           "gru_sequence", "layer_norm_gru_sequence"]
