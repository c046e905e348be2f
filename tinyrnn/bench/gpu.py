"""Character-model training and batch-1 sampling on a GPU: tinyrnn (numba.cuda) vs PyTorch (cuDNN).

Configs (from the speed issue), vocabulary 65, embedding size = hidden size, Adam + clip 5:
    b: LSTM 2x256, batch 32, 64 steps of BPTT
    c: LSTM 2x512, batch 64, 128 steps of BPTT

Training: a full step per iteration (forward, cross-entropy, backward, clip_grad_norm, Adam),
reading the loss back every step as a training loop does; chars/s = B * T * steps / seconds.
Sampling: batch-1 generation from the trained model (tinyrnn: ``kernels.cuda.lstm_generate``,
whose logits come back to the host each character; PyTorch: one ``model`` call per character).
PyTorch runs in the same process on the same GPU when ``torch.cuda.is_available()``.

    python -m tinyrnn.bench.gpu [--configs b,c] [--steps 20] [--warmup 3] [--chars 300] [--no-torch]
    python -m tinyrnn.bench.gpu --tiny      # tiny sizes, 1 step; runs in the CUDA simulator without a GPU
"""
import argparse
import os
import sys
import time

import numpy as np

CONFIGS = {"b": dict(hidden=256, layers=2, batch=32, seq=64), "c": dict(hidden=512, layers=2, batch=64, seq=128)}
TINY = dict(hidden=8, layers=2, batch=2, seq=4)
VOCAB = 65


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="b,c")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per config")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    p.add_argument("--chars", type=int, default=300, help="characters sampled (batch 1)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, 1 step: a smoke test (simulator if no GPU)")
    args = p.parse_args()
    if args.tiny:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")   # must be set before numba.cuda is imported
        args.steps, args.warmup, args.chars = 1, 0, 3
    return args


# ---- tinyrnn ------------------------------------------------------------------------------------
def tinyrnn_model(cfg):
    import tinyrnn
    from tinyrnn import nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, cfg["hidden"])
            self.rnn = nn.LSTM(cfg["hidden"], cfg["hidden"], cfg["layers"])
            self.head = nn.Linear(cfg["hidden"], VOCAB)

        def forward(self, x):
            out, _ = self.rnn(self.embed(x))
            return self.head(out)

    tinyrnn.manual_seed(0)
    tinyrnn.set_device("cuda")
    try:
        return CharLSTM()
    finally:
        tinyrnn.set_device("cpu")


def tinyrnn_train(cfg, batches, steps, warmup):
    from tinyrnn import ops, optim

    model = tinyrnn_model(cfg)
    params = model.parameters()
    opt = optim.Adam(params, lr=2e-3)
    losses, t0 = [], None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x = batches[i % len(batches)]
        logits = model(x[:-1])
        loss = ops.cross_entropy(logits.reshape(-1, VOCAB), x[1:].reshape(-1))
        losses.append(loss.item())            # the one number that comes back per step
        model.zero_grad()
        loss.backward()
        optim.clip_grad_norm(params, 5.0)
        opt.step()
    seconds = time.perf_counter() - t0
    return model, steps * cfg["batch"] * cfg["seq"] / seconds, losses


def tinyrnn_sample(model, cfg, n_chars):
    """Batch-1 sampling with the fused generator (weights stacked once, on the GPU)."""
    from numba import cuda

    from tinyrnn.kernels import cuda as K

    L, H = cfg["layers"], cfg["hidden"]
    sd = model.state_dict()
    # the generators' layout (kernels/reference/generate.py): layer 0's input products as a table,
    # a row per character, and its w_hh; each further layer's [w_ih | w_hh] as one matrix
    joined = [np.concatenate([sd[f"rnn.weight_ih_l{k}"], sd[f"rnn.weight_hh_l{k}"]], axis=1) for k in range(1, L)]
    dev = lambda a: cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))   # noqa: E731
    args = dict(
        x0=dev(np.float64(sd["embed.weight"]) @ np.float64(sd["rnn.weight_ih_l0"]).T), w0=dev(sd["rnn.weight_hh_l0"]),
        w=dev(np.stack(joined) if L > 1 else np.zeros((0, 4 * H, 2 * H))),
        b=dev(np.stack([sd[f"rnn.bias_ih_l{k}"] + sd[f"rnn.bias_hh_l{k}"] for k in range(L)])),
        w_out=dev(sd["head.weight"]), b_out=dev(sd["head.bias"]),
        h=dev(np.zeros((L, H))), c=dev(np.zeros((L, H))))
    args.update(s0=np.zeros(0), s=np.zeros((L - 1, 0)), s_out=np.zeros(0))  # float weights: empty row scales
    out = np.empty(n_chars, dtype=np.int64)
    uniforms = np.random.default_rng(0).random(n_chars)
    prime = np.array([1], dtype=np.int64)
    t0 = time.perf_counter()
    K.lstm_generate(**args, prime=prime, uniforms=uniforms, temperature=1.0, top_k=0, top_p=1.0, out=out)
    cuda.synchronize()
    return n_chars / (time.perf_counter() - t0), out


# ---- PyTorch ------------------------------------------------------------------------------------
def torch_run(cfg, batches, steps, warmup, n_chars):
    import torch

    dev = torch.device("cuda")
    torch.manual_seed(0)

    class CharLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, cfg["hidden"])
            self.rnn = torch.nn.LSTM(cfg["hidden"], cfg["hidden"], cfg["layers"])
            self.head = torch.nn.Linear(cfg["hidden"], VOCAB)

        def forward(self, x, state=None):
            out, state = self.rnn(self.embed(x), state)
            return self.head(out), state

    model = CharLSTM().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs = [torch.from_numpy(b).to(dev) for b in batches]
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = xs[i % len(xs)]
        logits, _ = model(x[:-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[1:].reshape(-1))
        loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    torch.cuda.synchronize()
    train_rate = steps * cfg["batch"] * cfg["seq"] / (time.perf_counter() - t0)

    with torch.no_grad():
        index, state = torch.tensor([[1]], device=dev), None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n_chars):
            logits, state = model(index, state)
            index = torch.multinomial(torch.softmax(logits[0, 0], -1), 1).view(1, 1)
            index.item()                        # each character comes back, as in an interactive sampler
        sample_rate = n_chars / (time.perf_counter() - t0)
    return train_rate, sample_rate


def main():
    args = parse()
    import tinyrnn
    from tinyrnn.kernels.cuda import device

    tinyrnn.require_device("cuda")
    where = "CUDA simulator" if device.is_simulator() else _gpu_name()
    print(f"device: {where}")
    configs = {"tiny": TINY} if args.tiny else {k: CONFIGS[k] for k in args.configs.split(",")}
    torch_ok = not args.no_torch and not device.is_simulator() and _torch_cuda()
    if not torch_ok and not args.no_torch:
        print("PyTorch with CUDA not available: tinyrnn only")
    rows = []
    for name, cfg in configs.items():
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, VOCAB, size=(cfg["seq"] + 1, cfg["batch"])) for _ in range(4)]
        model, train_rate, losses = tinyrnn_train(cfg, batches, args.steps, args.warmup)
        sample_rate, sample = tinyrnn_sample(model, cfg, args.chars)
        assert np.isfinite(losses).all() and sample.min() >= 0 and sample.max() < VOCAB
        row = {"config": name, "tinyrnn_train_chars_s": train_rate, "tinyrnn_sample_chars_s": sample_rate,
               "first_loss": losses[0]}
        if torch_ok:
            row["torch_train_chars_s"], row["torch_sample_chars_s"] = torch_run(cfg, batches, args.steps,
                                                                                args.warmup, args.chars)
        rows.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def _gpu_name():
    from numba import cuda

    return cuda.get_current_device().name.decode() if isinstance(cuda.get_current_device().name, bytes) \
        else str(cuda.get_current_device().name)


def _torch_cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
