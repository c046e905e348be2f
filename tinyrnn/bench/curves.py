"""Learning curves: held-out bits/char against seconds, tinyrnn and PyTorch, same model, same budget.

    python -m tinyrnn.bench.curves CORPUS --time-limit 180 --out benchmarks/curves-NAME [model options]

1. ``tinyrnn train CORPUS --time-limit S --eval-every E [options]``: the command line a user runs.
2. The same model in PyTorch (``nn.Embedding`` -> ``nn.LSTM``/``nn.GRU`` -> ``nn.Linear``), trained
   the same way for the same seconds: the same batches (``tinyrnn.data.StreamBatches`` over the same
   split, state carried across windows), Adam, linear warm-up then a cosine to lr * FINAL_LR (0) whose end is
   refitted to the budget from the measured step rate, gradient clipping, and an evaluation of
   the held-out characters tinyrnn's trainer scores (``TrainConfig.eval_chars`` of them, spread over
   the held-out part: ``tinyrnn.generate.stream_rows``) every E steps, inside the clock as in tinyrnn.
3. Both final models scored on the *whole* held-out part the way ``tinyrnn eval`` scores it (16
   streams, windows of 256, state carried): tinyrnn by ``tinyrnn eval`` itself.

Writes OUT.json (both curves and final scores) and OUT.svg (the picture). Both runs use --threads
threads. PyTorch is needed (it is a reference here, never a tinyrnn dependency).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from xml.sax.saxutils import escape

from ..train import TrainConfig
from .configs import cli_module, thread_env

LN2 = math.log(2.0)
MODEL_OPTIONS = ("cell", "layers", "hidden", "embed", "batch_size", "seq_len", "lr", "warmup", "clip", "seed")


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m tinyrnn.bench.curves", description=__doc__.split("\n")[0])
    p.add_argument("corpus")
    p.add_argument("--out", required=True, help="OUT.json and OUT.svg are written")
    p.add_argument("--time-limit", type=float, default=180.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--title", default=None)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- tinyrnn, through its CLI

def run_tinyrnn(args, run_dir, held_out_file):
    """Train with the CLI; (curve [(seconds, step, bpc)], final bpc of ``tinyrnn eval`` on the held-out text)."""
    cmd = [sys.executable, "-m", cli_module(), "train", args.corpus, "--out", run_dir, "--quiet",
           "--time-limit", str(args.time_limit), "--eval-every", str(args.eval_every),
           "--val-frac", str(args.val_frac), "--threads", str(args.threads)]
    for name in MODEL_OPTIONS:
        cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    subprocess.run(cmd, check=True, env=thread_env(args.threads))
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]
    seconds = {r["step"]: r["time"] for r in rows if "time" in r}
    last = max(seconds.values(), default=args.time_limit)             # a run may end before its first log row
    curve = [(seconds.get(r["step"], last), r["step"], r["val_bpc"]) for r in rows if "val_bpc" in r]
    scored = subprocess.run([sys.executable, "-m", cli_module(), "eval", os.path.join(run_dir, "last"), held_out_file,
                             "--seq-len", "256", "--batch-size", "16"], check=True, capture_output=True, text=True,
                            env=thread_env(args.threads)).stdout
    return curve, float(re.search(r": ([0-9.]+) bits/char", scored).group(1))


# ----------------------------------------------------------------------------- PyTorch, the same recipe

def torch_model(args, vocab_size):
    import torch

    torch.manual_seed(args.seed)
    rnn_type = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[args.cell]
    return torch.nn.ModuleDict(dict(embed=torch.nn.Embedding(vocab_size, args.embed),
                                    rnn=rnn_type(args.embed, args.hidden, num_layers=args.layers),
                                    head=torch.nn.Linear(args.hidden, vocab_size)))


def torch_bpc(model, ids, streams=16, seq_len=256, max_chars=None):
    """Bits/char of a unidirectional model on ids (with ``max_chars``: on a sample spread over them),
    scored as ``tinyrnn.generate.evaluate`` scores it."""
    import torch

    from tinyrnn.generate import stream_rows

    rows = torch.from_numpy(stream_rows(ids, streams, seq_len, max_chars))
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for t0 in range(0, len(rows) - 1, seq_len):
            x = rows[t0:t0 + seq_len + 1]
            out, state = model["rnn"](model["embed"](x[:-1]), state)
            logits = model["head"](out)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[1:].reshape(-1),
                                                             reduction="sum"))
            count += x[1:].numel()
    return total / count / LN2


def lr_at(step, args, horizon):
    """Linear warm-up to lr, then half a cosine to lr * TrainConfig.FINAL_LR at ``horizon`` (the
    character models' default schedule)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, horizon - args.warmup))
    floor = args.lr * TrainConfig.FINAL_LR
    return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


def torch_update(model, opt, x, state, lr, clip):
    """One update of tinyrnn's recipe at learning rate lr: the model ({embed, rnn, head}) reads window
    x (T + 1, B) of character ids from state, the mean cross-entropy of its next-character guesses is
    backpropagated, the gradients clipped to norm clip, and opt steps. Returns the state after the
    window, cut from the graph (a tuple for an LSTM)."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr
    out, state = model["rnn"](model["embed"](x[:-1]), state)
    logits = model["head"](out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def run_torch(args, train_ids, val_ids, vocab_size):
    """(curve [(seconds, step, bpc)], final bpc on the whole held-out part)."""
    import torch

    from tinyrnn.data import StreamBatches

    torch.set_num_threads(args.threads)
    model = torch_model(args, vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = StreamBatches(train_ids, args.batch_size, args.seq_len + 1, args.seq_len, seed=args.seed)
    horizon, step, state, curve = 1500, 0, None, []
    start = time.perf_counter()
    while True:
        x, starts_epoch = batches.batch(step)
        x = torch.from_numpy(x)
        if starts_epoch:
            state = None
        state = torch_update(model, opt, x, state, lr_at(step, args, horizon), args.clip)
        step += 1
        elapsed = time.perf_counter() - start
        if step % 10 == 0:        # refit the cosine's end to the budget, as the Trainer does
            horizon = max(step + 1, args.warmup + 1, step + int((args.time_limit - elapsed) * step / elapsed))
        done = elapsed >= args.time_limit
        if step % args.eval_every == 0 or done:
            sampled = torch_bpc(model, val_ids, max_chars=TrainConfig.eval_chars)
            curve.append((time.perf_counter() - start, step, sampled))
        if done:
            return curve, torch_bpc(model, val_ids)


# ----------------------------------------------------------------------------- the picture

def svg_chart(series, title, xlabel, ylabel, width=640, height=400):
    """A line chart as SVG text. series: {name: (colour, [(x, y), ...])}."""
    left, right, top, bottom = 60, 20, 36, 48
    xs = [x for _, pts in series.values() for x, _ in pts]
    ys = [y for _, pts in series.values() for _, y in pts]
    x_max, y_lo, y_hi = max(xs), math.floor(min(ys) * 10) / 10, math.ceil(min(max(ys), min(ys) + 1.5) * 10) / 10
    px = lambda x: left + (width - left - right) * x / x_max                                 # noqa: E731
    py = lambda y: top + (height - top - bottom) * (y_hi - min(y, y_hi)) / (y_hi - y_lo)     # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for k in range(6):                                                   # grid and tick labels
        x, y = x_max * k / 5, y_lo + (y_hi - y_lo) * k / 5
        out.append(f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{height - bottom}" stroke="#ddd"/>'
                   f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:.0f}</text>')
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{width - right}" y2="{py(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 10}" text-anchor="middle">{escape(xlabel)}</text>'
               f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {(top + height - bottom) / 2})">{escape(ylabel)}</text>')
    for k, (name, (colour, pts)) in enumerate(series.items()):
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = top + 16 + 18 * k
        out.append(f'<line x1="{width - right - 190}" y1="{ly}" x2="{width - right - 165}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/><text x="{width - right - 160}" y="{ly + 4}">{escape(name)}</text>')
    return "\n".join(out + ["</svg>\n"])


def main(argv=None):
    args = _parse(argv)

    from tinyrnn.data import load_corpus

    corpus = load_corpus(args.corpus)
    train_ids, val_ids = corpus.split(args.val_frac)
    with tempfile.TemporaryDirectory() as tmp:
        held_out = os.path.join(tmp, "held_out.txt")
        with open(held_out, "w", encoding="utf-8") as f:
            f.write(corpus.text(len(train_ids)))
        ours, ours_final = run_tinyrnn(args, os.path.join(tmp, "run"), held_out)
    theirs, theirs_final = run_torch(args, train_ids, val_ids, len(corpus.vocab))
    name = os.path.basename(args.corpus)
    model = f"{args.cell.upper()} {args.layers}x{args.hidden}, batch {args.batch_size}, T {args.seq_len}, lr {args.lr:g}"
    print(f"{name}, {model}, {args.time_limit:g} s, {args.threads} threads: held-out bits/char tinyrnn "
          f"{ours_final:.4f} ({ours[-1][1]} steps), PyTorch {theirs_final:.4f} ({theirs[-1][1]} steps)")
    result = dict(corpus=name, options={k: getattr(args, k) for k in MODEL_OPTIONS}, time_limit=args.time_limit,
                  threads=args.threads, tinyrnn=dict(curve=ours, final_bpc=ours_final),
                  torch=dict(curve=theirs, final_bpc=theirs_final))
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    series = {f"tinyrnn (final {ours_final:.3f})": ("#d62728", [(t, b) for t, _, b in ours]),
              f"PyTorch (final {theirs_final:.3f})": ("#1f77b4", [(t, b) for t, _, b in theirs])}
    title = args.title or f"{name}: {model}, {args.time_limit:g} s on {args.threads} threads"
    with open(args.out + ".svg", "w", encoding="utf-8") as f:
        ylabel = f"held-out bits/char ({TrainConfig.eval_chars} chars spread over it)"
        f.write(svg_chart(series, title, "seconds", ylabel))
    return result


if __name__ == "__main__":
    main()
