"""tinyrnn: a tiny reverse-mode autodiff engine with Numba-compiled RNN, LSTM and GRU kernels.

    import numpy as np, tinyrnn
    from tinyrnn import nn, optim

    rnn = nn.LSTM(input_size=8, hidden_size=16, num_layers=2, bidirectional=True)
    x = tinyrnn.tensor(np.random.randn(10, 4, 8), np.float32)   # (T, B, I)
    out, (h_n, c_n) = rnn(x)                             # out: (T, B, 2*16)
    out.sum().backward()

Where things live: ``tensor`` (the tape), ``ops`` (primitive ops, forward and backward side by
side; also importable as ``tinyrnn.functional``), ``kernels/`` (numpy reference, Numba CPU, CUDA),
``nn/`` (modules, cells, sequence layers), ``optim/``, ``gradcheck``, and for character models
``data``, ``models``, ``train``, ``generate``, ``checkpoint``.

On a GPU: ``tinyrnn.set_device('cuda')`` before building the model (or ``model.to('cuda')``,
``x.to('cuda')``); the same code then runs with numba.cuda kernels.

Importing tinyrnn compiles nothing and does not import numba: kernels load on first use and are
cached on disk.
"""
from . import ops
from . import ops as functional
from .backend import DeviceError, get_device, require_device, set_device, set_num_threads
from .gradcheck import GradcheckError, gradcheck
from .random import manual_seed
from .tensor import Tensor, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError", "manual_seed",
           "set_num_threads", "set_device", "get_device", "require_device", "DeviceError",
           "ops", "functional", "nn", "optim"]


def __getattr__(name):
    # nn and optim load on first access, keeping `import tinyrnn` quick.
    if name in ("nn", "optim", "data", "models", "train", "generate", "checkpoint"):
        import importlib

        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'tinyrnn' has no attribute {name!r}")
