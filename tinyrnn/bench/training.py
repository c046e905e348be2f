"""Training throughput: one step of tinyrnn or PyTorch on a config, timed; the machine's matmul peak."""
import itertools
import subprocess
import sys
import time

from .configs import VOCAB, median, thread_env


POOL = 16   # batches drawn once and cycled: drawing random numbers is no part of either framework's step


def _batches(cfg, np):
    """A function returning the next (x, y) batch, each (T, B) int64 in [0, VOCAB), the same
    sequence for tinyrnn and PyTorch. They are drawn before timing starts (2048 random integers
    cost 0.1-0.2 ms, 1-2% of a step at config a) and cycled."""
    rng = np.random.default_rng(0)
    pool = [(rng.integers(0, VOCAB, size=(cfg["seq"], cfg["batch"])),
             rng.integers(0, VOCAB, size=(cfg["seq"], cfg["batch"]))) for _ in range(POOL)]
    return itertools.cycle(pool).__next__


# ---- tinyrnn -------------------------------------------------------------------------------------
def tinyrnn_model(cfg):
    from tinyrnn import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            H = cfg["hidden"]
            self.embed = nn.Embedding(VOCAB, H)
            layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg["cell"]]
            self.rnn = layer(H, H, num_layers=cfg["layers"], bidirectional=cfg["bidir"])
            self.head = nn.Linear(H * (2 if cfg["bidir"] else 1), VOCAB)

        def forward(self, x):
            out, _ = self.rnn(self.embed(x))
            return self.head(out)

    return Model()


def tinyrnn_step_fn(cfg):
    import numpy as np

    from tinyrnn import functional as F
    from tinyrnn import manual_seed, optim

    manual_seed(0)
    model = tinyrnn_model(cfg)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    next_batch = _batches(cfg, np)

    def step():
        x, y = next_batch()
        return tinyrnn_update(model, opt, F.cross_entropy(model(x), y), clip=1.0)

    return step


def tinyrnn_update(model, opt, loss, clip):
    """One update as the Trainer makes it: drop the gradients (PyTorch 2's zero_grad default too),
    backward, clip the norm, optimizer step. Returns the loss as a float."""
    from tinyrnn import optim

    model.zero_grad()
    loss.backward()
    optim.clip_grad_norm(model.parameters(), clip)
    opt.step()
    return loss.item()


# ---- PyTorch -------------------------------------------------------------------------------------
def torch_step_fn(cfg):
    import numpy as np
    import torch

    torch.manual_seed(0)
    H, D = cfg["hidden"], 2 if cfg["bidir"] else 1
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cfg["cell"]]
    embed = torch.nn.Embedding(VOCAB, H)
    rnn = layer(H, H, num_layers=cfg["layers"], bidirectional=cfg["bidir"])
    head = torch.nn.Linear(H * D, VOCAB)
    params = list(embed.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    next_batch = _batches(cfg, np)

    def step():
        x, y = next_batch()
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        out, _ = rnn(embed(x))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    return step


def time_steps(step, steps: int, repeats: int, warmup: int = 2) -> float:
    """Median seconds per step over ``repeats`` blocks of ``steps`` steps."""
    for _ in range(warmup):
        step()
    blocks = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        blocks.append((time.perf_counter() - t0) / steps)
    return median(blocks)


_PEAK = """
import time, numpy as np
a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
b = a.copy(); a @ b
times = []
for _ in range(7):
    t0 = time.perf_counter(); a @ b; times.append(time.perf_counter() - t0)
print(2 * 2048 ** 3 / sorted(times)[3] / 1e9)
"""


def matmul_peak_gflops(threads: int) -> float:
    """The machine's float32 GEMM rate: numpy's BLAS at 2048^3, in a fresh process.

    OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed for this one measurement: some environments
    pin OpenBLAS to an older kernel (e.g. Haswell's AVX2) for safety, which understates the peak.
    """
    env = thread_env(threads)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    out = subprocess.run([sys.executable, "-c", _PEAK], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])
