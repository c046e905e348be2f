"""Issue 13's untried model candidates, weight tying and layer normalisation, measured at equal updates.

    python -m tinyrnn.bench.candidates CORPUS --updates 1170 --variant base --variant layernorm ...

Each variant is the time budget's model (a GRU 2x384 reading windows of 96 from 32 streams, a
64-wide embedding: the options' defaults are ``TrainConfig(**BUDGET_DEFAULTS)``'s) changed in one
way, built in PyTorch (a reference here, never a tinyrnn dependency) and trained with tinyrnn's
recipe for a fixed number of updates: the same batches (``tinyrnn.data.StreamBatches``, state
carried across windows), Adam, a linear warm-up then a cosine to 0 at the last update
(``curves.lr_at``), gradient clipping (``curves.torch_update``). The final model is scored on the
whole held-out part as ``tinyrnn eval`` scores it (``curves.torch_bpc``). Equal updates make the
scores a property of the model, not of the machine's speed: a variant worth building into tinyrnn's
fused kernels must win here by more than it would lose to its extra cost per update.

Variants:
  base        the budget's model: Embedding(V, 64) -> GRU 2x384 -> Linear(384, V)
  wide-embed  the embedding as wide as the GRU (384): the control for ``tied``
  tied        wide-embed with the head's weight tied to the embedding (Press & Wolf, 2017)
  layernorm   each GRU layer's input and recurrent projections layer-normalised (over their 3H
              values, with a gain and a shift per value: Ba, Kiros & Hinton, 2016), a Python loop
              over time steps (PyTorch has no fused layer-normalised GRU)
  layernorm-input, layernorm-recurrent
              only one side normalised (the input side can be normalised for all steps at once,
              outside the recurrence); the other side has a bias of 3H, as ``nn.GRU``

Prints a row per variant (held-out bits/char, ms an update) and writes OUT.json with --out.
"""
import argparse
import json
import os
import statistics
import time

from ..train import BUDGET_DEFAULTS, TrainConfig
from .curves import lr_at, torch_bpc, torch_update

VARIANTS = ("base", "wide-embed", "tied", "layernorm", "layernorm-input", "layernorm-recurrent")


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m tinyrnn.bench.candidates", description=__doc__.split("\n")[0])
    p.add_argument("corpus")
    p.add_argument("--updates", type=int, required=True, help="updates each variant trains (the budget's count)")
    p.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable (default: all)")
    p.add_argument("--out", default=None, help="OUT.json is written")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    budget = TrainConfig(**BUDGET_DEFAULTS)         # the model a time budget trains, and its recipe
    for name in ("val_frac", "layers", "hidden", "embed", "batch_size", "seq_len", "lr", "warmup", "clip", "seed"):
        default = getattr(budget, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return p.parse_args(argv)


def layer_norm_gru(input_size, hidden_size, num_layers, inputs=True, recurrent=True):
    """A stack of layer-normalised GRU layers with ``torch.nn.GRU``'s interface:
    (x (T, B, I), h (L, B, H) or None) -> (outputs (T, B, H), h (L, B, H)). Per layer, with
    LN(v) = gain * (v - mean(v)) / sqrt(var(v) + 1e-5) + shift over v's 3H values::

        [a_r, a_z, a_n] = LN_x(W_ih x_t)            [c_r, c_z, c_n] = LN_h(W_hh h_{t-1})
        r = sigmoid(a_r + c_r)      z = sigmoid(a_z + c_z)      n = tanh(a_n + r * c_n)
        h_t = (1 - z) * n + z * h_{t-1}

    (the two shifts stand in for the GRU's biases). A side not normalised (``inputs`` or
    ``recurrent`` False) adds a bias of 3H instead of LN. Weights and biases start as ``nn.GRU``'s
    do, uniform in +-1/sqrt(H); gains at 1, shifts at 0."""
    import torch

    bound = hidden_size ** -0.5

    class Bias(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound))

        def forward(self, v):
            return v + self.bias

    class Layer(torch.nn.Module):
        def __init__(self, n_in):
            super().__init__()
            self.w_ih = torch.nn.Parameter(torch.empty(3 * hidden_size, n_in).uniform_(-bound, bound))
            self.w_hh = torch.nn.Parameter(torch.empty(3 * hidden_size, hidden_size).uniform_(-bound, bound))
            self.norm_x = torch.nn.LayerNorm(3 * hidden_size) if inputs else Bias()
            self.norm_h = torch.nn.LayerNorm(3 * hidden_size) if recurrent else Bias()

        def forward(self, x, h):
            a = self.norm_x(x @ self.w_ih.T)                 # every step's input side at once
            outputs = []
            for t in range(x.shape[0]):
                a_r, a_z, a_n = a[t].chunk(3, dim=-1)
                c_r, c_z, c_n = self.norm_h(h @ self.w_hh.T).chunk(3, dim=-1)
                r, z = torch.sigmoid(a_r + c_r), torch.sigmoid(a_z + c_z)
                h = (1 - z) * torch.tanh(a_n + r * c_n) + z * h
                outputs.append(h)
            return torch.stack(outputs), h

    class Stack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(Layer(input_size if k == 0 else hidden_size) for k in range(num_layers))

        def forward(self, x, state=None):
            if state is None:
                state = x.new_zeros(num_layers, x.shape[1], hidden_size)
            last = []
            for k, layer in enumerate(self.layers):
                x, h = layer(x, state[k])
                last.append(h)
            return x, torch.stack(last)

    return Stack()


def build(variant, args, vocab_size):
    """The variant's model as {embed, rnn, head}, seeded by args.seed."""
    import torch

    torch.manual_seed(args.seed)
    embed = args.hidden if variant in ("wide-embed", "tied") else args.embed
    if variant.startswith("layernorm"):
        rnn = layer_norm_gru(embed, args.hidden, args.layers, inputs=not variant.endswith("recurrent"),
                             recurrent=not variant.endswith("input"))
    else:
        rnn = torch.nn.GRU(embed, args.hidden, num_layers=args.layers)
    model = torch.nn.ModuleDict(dict(embed=torch.nn.Embedding(vocab_size, embed), rnn=rnn,
                                     head=torch.nn.Linear(args.hidden, vocab_size)))
    if variant == "tied":
        model["head"].weight = model["embed"].weight
    return model


def train(model, args, train_ids):
    """args.updates updates of tinyrnn's recipe; the median seconds an update took."""
    import torch

    from tinyrnn.data import StreamBatches

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = StreamBatches(train_ids, args.batch_size, args.seq_len + 1, args.seq_len, seed=args.seed)
    state, seconds = None, []
    for step in range(args.updates):
        start = time.perf_counter()
        x, starts_epoch = batches.batch(step)
        state = torch_update(model, opt, torch.from_numpy(x), None if starts_epoch else state,
                             lr_at(step, args, args.updates), args.clip)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main(argv=None):
    args = _parse(argv)
    import torch

    from tinyrnn.data import load_corpus

    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    train_ids, val_ids = corpus.split(args.val_frac)
    vocab_size = len(corpus.vocab)
    rows = []
    for variant in args.variant or VARIANTS:
        model = build(variant, args, vocab_size)
        per_update = train(model, args, train_ids)
        bpc = torch_bpc(model, val_ids)
        rows.append(dict(variant=variant, seed=args.seed, updates=args.updates, bpc=bpc, ms_per_update=1e3 * per_update,
                         parameters=sum(p.numel() for p in model.parameters())))
        print(f"{os.path.basename(args.corpus)}  {variant:<{max(map(len, VARIANTS))}}  seed {args.seed}  {args.updates} updates  "
              f"{bpc:.4f} bits/char  {1e3 * per_update:.0f} ms an update  {rows[-1]['parameters']:,} parameters",
              flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(dict(options=vars(args), rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
