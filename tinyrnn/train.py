"""Training a character model: the loop behind ``tinyrnn train``, usable from Python.

    from tinyrnn.train import TrainConfig, train
    summary = train(TrainConfig(corpus="poems.txt", cell="gru", steps=2000), out="runs/poems")
    print(summary["val_bpc"])

One step (unidirectional):

    x (T+1, B) window of every stream  ->  logits, state = model(x[:-1], state)
    loss = cross_entropy(logits, x[1:])  ->  backward  ->  clip  ->  optimizer step  ->  lr schedule
    state = detach(state)             # carried into the next window: truncated BPTT

Bidirectional (``bidir=True``): logits = model.fill_logits(x) on windows of T characters, loss
against x itself (no position sees its own character; see ``models.py``); no state is carried.

The run directory holds ``last`` and ``best`` checkpoints (``.npz`` + ``.json``), ``metrics.jsonl``
and, when matplotlib is installed, ``loss.png``. Everything needed to continue exactly is in the
checkpoint: weights, optimizer buffers, lr-schedule position, the library's RNG state, the
carried hidden state and the step (batches are a pure function of seed and step).
"""
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import checkpoint
from .data import Corpus, StreamBatches, Vocab, describe_chars, load_corpus, remap
from .errors import TinyRNNError

LN2 = math.log(2.0)
CORPORA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpora")
DEFAULT_CORPUS = os.path.join(CORPORA_DIR, "harbour.txt")
DEFAULT_STEPS = 1500
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
SCHEDULES = ("cosine", "constant", "step")
# Options that may differ when resuming; everything else must match the run being continued.
RESUMABLE = {"steps", "epochs", "time_limit", "eval_every", "save_every", "threads", "clip", "eval_chars",
             "log_every", "device"}


@dataclass
class TrainConfig:
    corpus: str | None = None          # None: the corpus bundled with the package
    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    embed: int = 64
    dropout: float = 0.0
    bidir: bool = False
    # optimisation
    optimizer: str = "adam"
    lr: float = 3e-3
    lr_schedule: str = "cosine"
    warmup: int = 50
    clip: float = 5.0
    batch_size: int = 32
    seq_len: int = 64
    steps: int | None = None           # default: DEFAULT_STEPS unless epochs or time_limit is given
    epochs: float | None = None
    time_limit: float | None = None    # seconds
    # data
    val_frac: float = 0.1
    encoding_errors: str = "strict"
    # bookkeeping
    eval_every: int = 250
    save_every: int = 500
    eval_chars: int = 32768            # validation characters scored at each periodic evaluation
    log_every: int = 10
    seed: int = 1337
    threads: int | None = None
    device: str = "cpu"                # 'cpu' or 'cuda'

    def validate(self):
        from .models import CELLS

        if self.cell not in CELLS:
            raise TinyRNNError(f"unknown cell {self.cell!r}: use one of {', '.join(CELLS)}")
        if self.optimizer not in OPTIMIZERS:
            raise TinyRNNError(f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in SCHEDULES:
            raise TinyRNNError(f"unknown lr schedule {self.lr_schedule!r}: use one of {', '.join(SCHEDULES)}")
        for name in ("layers", "hidden", "embed", "batch_size", "seq_len", "steps", "eval_every", "save_every",
                     "eval_chars", "log_every", "threads"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise TinyRNNError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("lr", "epochs", "time_limit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TinyRNNError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.warmup < 0:
            raise TinyRNNError(f"--warmup must be >= 0, got {self.warmup}")
        if not self.clip >= 0:
            raise TinyRNNError(f"--clip must be >= 0 (0 disables clipping), got {self.clip}")
        if not 0.0 <= self.dropout < 1.0:
            raise TinyRNNError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.val_frac < 1.0:
            raise TinyRNNError(f"--val-frac must be in [0, 1), got {self.val_frac}")
        if self.encoding_errors not in ("strict", "replace"):
            raise TinyRNNError(f"--encoding-errors must be strict or replace, got {self.encoding_errors!r}")
        return self


class TrainingDiverged(TinyRNNError):
    """The loss became NaN or infinite."""


def corpus_path(cfg):
    return cfg.corpus if cfg.corpus is not None else DEFAULT_CORPUS


def default_out_dir(cfg, root="runs"):
    """runs/<corpus name>-<cell>[-bidir], with -2, -3... appended if that already exists."""
    name = os.path.splitext(os.path.basename(corpus_path(cfg)))[0] + f"-{cfg.cell}" + ("-bidir" if cfg.bidir else "")
    path, k = os.path.join(root, name), 2
    while os.path.exists(path):
        path, k = os.path.join(root, f"{name}-{k}"), k + 1
    return path


# ----------------------------------------------------------------------------- building blocks

def make_optimizer(cfg, params):
    from . import optim

    kinds = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD, "rmsprop": optim.RMSprop,
             "adagrad": optim.Adagrad}
    return kinds[cfg.optimizer](params, lr=cfg.lr)


def make_schedule(cfg, opt, total_steps):
    """Linear warm-up, then cosine decay to lr/10 over the run (constant when the length is unknown)."""
    from . import optim

    after = None
    if cfg.lr_schedule == "cosine" and total_steps:
        after = optim.CosineLR(opt, max(1, total_steps - cfg.warmup), min_lr=cfg.lr / 10)
    elif cfg.lr_schedule == "step" and total_steps:
        after = optim.StepLR(opt, max(1, total_steps // 3), gamma=0.3)
    return optim.WarmupLR(opt, cfg.warmup, after=after)


def fit_batch_size(n_train, cfg, window, path, warn):
    """The batch size to use: ``cfg.batch_size``, shrunk (with a warning) when the corpus is short."""
    if n_train >= cfg.batch_size * window:
        return cfg.batch_size
    fitted = n_train // window
    if fitted >= 1:
        warn(f"warning: {path} has {n_train} training characters, too few for {cfg.batch_size} streams "
             f"of {window}; using --batch-size {fitted}")
        return fitted
    need = math.ceil(window / (1.0 - cfg.val_frac)) if cfg.val_frac < 1 else window
    raise TinyRNNError(f"{path} is too short: {n_train} training characters; --seq-len {cfg.seq_len} needs at "
                       f"least {need} characters in the corpus (use a shorter --seq-len or more text)")


def _load_resume(out):
    stem = os.path.join(out, "last")
    if not os.path.exists(stem + ".json"):
        raise TinyRNNError(f"nothing to resume in {out}: no {stem}.json (start a run without --resume)")
    return checkpoint.load(stem)


def _check_conflicts(cfg, saved, explicit):
    for name in sorted(explicit):
        if name in RESUMABLE or name not in saved:
            continue
        mine, theirs = getattr(cfg, name), saved[name]
        if name == "corpus":
            same = (mine is None and theirs is None) or (
                mine is not None and theirs is not None and os.path.realpath(mine) == os.path.realpath(theirs))
        else:
            same = mine == theirs
        if not same:
            flag = "CORPUS" if name == "corpus" else "--" + name.replace("_", "-")
            raise TinyRNNError(f"{flag} {mine} conflicts with the run being resumed ({name} = {theirs}): drop it to "
                               "continue that run, or start a new run with another --out")


def _plot(out):
    """loss.png from metrics.jsonl, if matplotlib is installed (it is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    train = [(r["step"], r["loss_bpc"]) for r in rows if "loss_bpc" in r]
    val = [(r["step"], r["val_bpc"]) for r in rows if "val_bpc" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.legend()
    ax.grid(alpha=0.3)
    path = os.path.join(out, "loss.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def read_metrics(path):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass                  # a line cut short by a crash
    return rows


class _SigintFlag:
    """While active, Ctrl-C sets ``.hit`` instead of raising; the loop saves and stops. A second
    Ctrl-C raises KeyboardInterrupt as usual."""

    def __enter__(self):
        self.hit, self.previous = False, None
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:          # not the main thread: leave Ctrl-C alone
            pass
        return self

    def _handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def save_model(stem, model, vocab, **meta):
    """Write a checkpoint that only holds a model (no optimizer): ``tinyrnn sample``/``eval``/``fill`` load it.

    stem: e.g. ``runs/imported/best`` (the directory is created).
    """
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    checkpoint.save(stem, arrays, {"model": model.config(), "vocab": vocab.chars, "step": 0, **meta})


def use_device(device: str):
    """Make ``device`` the default for new tensors, or raise TinyRNNError with one clear line."""
    from .backend import set_device

    try:
        set_device(device)
    except ValueError as e:
        raise TinyRNNError(str(e)) from None


def load_model(path, device="cpu"):
    """A checkpoint -> (model, vocab, meta), ready for sampling / evaluation on ``device``."""
    from .models import CharRNN

    use_device(device)
    meta, arrays = checkpoint.load(path)
    try:
        model = CharRNN(**meta["model"])
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        vocab = Vocab(meta["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise TinyRNNError(f"checkpoint {path} is incomplete or inconsistent ({e}): use another checkpoint "
                           "or retrain") from None
    model.to(device)
    model.eval()
    return model, vocab, meta


# ----------------------------------------------------------------------------- the loop

def train(cfg=None, out=None, resume=False, explicit=(), progress=True, log=None):
    """Train (or with ``resume=True`` continue) a character model; returns a summary dict.

    out: the run directory (default: a fresh ``runs/<corpus>-<cell>``). explicit: the option names
    the user set (when resuming, these must agree with the saved run unless they are in RESUMABLE).
    log: a function for messages (default: print to stderr). Raises TinyRNNError for bad input,
    TrainingDiverged when the loss becomes NaN/inf.
    """
    import tinyrnn
    from . import ops, optim, random
    from .generate import evaluate
    from .models import CharRNN, detach_state, state_arrays, state_from_arrays
    from .progress import Progress, format_duration, format_rate

    cfg = cfg or TrainConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if resume:
        if out is None:
            raise TinyRNNError("--resume needs --out DIR, the run to continue")
        meta, arrays = _load_resume(out)
        saved = meta["train_config"]
        _check_conflicts(cfg, saved, set(explicit) | ({"corpus"} if cfg.corpus is not None else set()))
        overrides = {name: getattr(cfg, name) for name in explicit if name in RESUMABLE}
        cfg = TrainConfig(**{**{f.name: saved.get(f.name, getattr(TrainConfig, f.name, None))
                                for f in fields(TrainConfig)}, **overrides})
    cfg.validate()
    out = out or default_out_dir(cfg)
    if not resume and os.path.exists(os.path.join(out, "last.json")):
        raise TinyRNNError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if cfg.threads:
        tinyrnn.set_num_threads(cfg.threads)
    use_device(cfg.device)

    # ---- data
    path = corpus_path(cfg)
    corpus = load_corpus(path, encoding_errors=cfg.encoding_errors)
    vocab = corpus.vocab
    if resume:
        vocab = Vocab(meta["vocab"])
        if vocab != corpus.vocab:
            ids, unknown = remap(corpus.ids, corpus.vocab, vocab)
            if unknown:
                raise TinyRNNError(f"{path} has characters the resumed model's vocabulary lacks: "
                                   f"{describe_chars(''.join(unknown))}; resume on the original corpus")
            corpus = Corpus(path, vocab, ids.astype(vocab.dtype))
    train_ids, val_ids = corpus.split(cfg.val_frac)
    window = cfg.seq_len if cfg.bidir else cfg.seq_len + 1
    batch_size = fit_batch_size(len(train_ids), cfg, window, path, log)
    batches = StreamBatches(train_ids, batch_size, window, cfg.seq_len, seed=cfg.seed)
    total = cfg.steps or (math.ceil(cfg.epochs * batches.steps_per_epoch) if cfg.epochs else None)
    if total is None and not cfg.time_limit:
        total = DEFAULT_STEPS
    has_val = len(val_ids) >= 2
    os.makedirs(out, exist_ok=True)          # only now: bad input leaves no empty run directory behind

    # ---- model, optimizer, schedule
    random.manual_seed(cfg.seed)
    model = CharRNN(len(vocab), cfg.cell, cfg.hidden, cfg.layers, cfg.embed, cfg.dropout, cfg.bidir)
    model.to(cfg.device)              # before the optimizer: its buffers live where the parameters do
    params = model.parameters()
    opt = make_optimizer(cfg, params)
    sched = make_schedule(cfg, opt, total)
    step, state, best, history = 0, None, None, {}
    if resume:
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        opt.load_state_dict(checkpoint.unpack(meta["optimizer"], arrays))
        sched.load_state_dict({**sched.state_dict(), "t": meta["schedule"]["t"]})   # keep the (new) length
        random.set_state(meta["rng"])
        state = state_from_arrays({k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")})
        step = int(meta["step"])
        best = meta["metrics"].get("best")
        history = meta["metrics"]
        rows = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if r.get("step", 0) <= step]
        checkpoint.atomic_write(os.path.join(out, "metrics.jsonl"),
                                "".join(json.dumps(r) + "\n" for r in rows).encode())
        log(f"resuming {out} at step {step}")
    model.train()

    metrics_file = open(os.path.join(out, "metrics.jsonl"), "a", encoding="utf-8")

    def record(row):
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()

    def save(name, at_step, carried, metrics):
        arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
        arrays.update({f"state/{k}": v for k, v in state_arrays(carried).items()})
        meta = {"model": model.config(), "vocab": vocab.chars, "step": at_step,
                "train_config": asdict(cfg) | {"corpus": cfg.corpus and os.path.abspath(cfg.corpus)},
                "data": {"corpus": os.path.abspath(path), "chars": len(corpus), "train_chars": len(train_ids),
                         "val_chars": len(val_ids), "batch_size": batch_size},
                "optimizer": checkpoint.pack(opt.state_dict(), arrays, "optim"),
                "schedule": sched.state_dict(), "rng": random.get_state(), "metrics": metrics}
        checkpoint.save(os.path.join(out, name), arrays, meta)

    def validate():
        loss, _ = evaluate(model, val_ids, batch_size=16, seq_len=cfg.seq_len, max_chars=cfg.eval_chars)
        return loss / LN2

    bar = Progress(total=total, time_limit=cfg.time_limit, enabled=progress)
    chars_per_step = batch_size * cfg.seq_len
    start_step, t_start = step, time.perf_counter()
    window_loss, window_n, t_window = 0.0, 0, t_start
    last_val = history.get("val_bpc")
    last_loss, rate = None, None
    stopped = "done"
    try:
        with _SigintFlag() as sigint:
            while total is None or step < total:
                x, new_epoch = batches.batch(step)
                if new_epoch or cfg.bidir:
                    state = None
                if cfg.bidir:
                    logits, new_state, targets = model.fill_logits(x), None, x
                else:
                    logits, new_state = model(x[:-1], state)
                    targets = x[1:]
                loss = ops.cross_entropy(logits.reshape(-1, len(vocab)), targets.reshape(-1))
                loss_value = float(loss.item())
                norm = 0.0
                if math.isfinite(loss_value):
                    model.zero_grad()
                    loss.backward()
                    norm = optim.clip_grad_norm(params, cfg.clip) if cfg.clip > 0 else 0.0
                if not (math.isfinite(loss_value) and math.isfinite(norm)):
                    what = (f"loss became {loss_value}" if not math.isfinite(loss_value)
                            else f"the gradient norm became {norm}")
                    good = all(np.isfinite(p.numpy()).all() for p in params)
                    if good:                     # the weights before this update are fine: keep them
                        save("last", step, state, history)
                    saved_step = checkpoint.load(os.path.join(out, "last"))[0]["step"] \
                        if os.path.exists(os.path.join(out, "last.json")) else None
                    where = (f"the last good checkpoint is {os.path.join(out, 'last')} (step {saved_step})"
                             if saved_step is not None else "no checkpoint was saved")
                    raise TrainingDiverged(f"{what} at step {step + 1}; stopped, {where}. "
                                           f"Try a lower --lr (was {cfg.lr:g}) or --clip")
                opt.step()
                sched.step()
                state = detach_state(new_state)
                step += 1

                window_loss += loss_value
                window_n += 1
                if step % cfg.log_every == 0 or step == total:
                    now = time.perf_counter()
                    rate = window_n * chars_per_step / max(now - t_window, 1e-9)
                    last_loss = window_loss / window_n / LN2
                    record({"step": step, "loss_bpc": round(last_loss, 5), "lr": opt.lr,
                            "chars_per_s": round(rate, 1), "time": round(now - t_start, 3)})
                    window_loss, window_n, t_window = 0.0, 0, now
                if has_val and step % cfg.eval_every == 0:
                    last_val = validate()
                    record({"step": step, "val_bpc": round(last_val, 5)})
                    history = {"val_bpc": last_val, "best": best, "train_bpc": last_loss}
                    if best is None or last_val < best["val_bpc"]:
                        best = {"val_bpc": last_val, "step": step}
                        history["best"] = best
                        save("best", step, state, history)
                if step % cfg.save_every == 0:
                    save("last", step, state, history)
                elapsed = time.perf_counter() - t_start
                bar.update(step, loss=last_loss, val_bpc=last_val, chars_per_s=rate,
                           eta=bar.eta(step, elapsed, start_step))
                if sigint.hit:
                    stopped = "interrupted"
                    break
                if cfg.time_limit and elapsed >= cfg.time_limit:
                    stopped = "time limit"
                    break
            # ---- wrap up: final evaluation, last (and maybe best) checkpoint
            if has_val and (step % cfg.eval_every != 0 or last_val is None):
                last_val = validate()
                record({"step": step, "val_bpc": round(last_val, 5)})
            history = {"val_bpc": last_val, "best": best, "train_bpc": last_loss}
            if has_val and (best is None or last_val < best["val_bpc"]):
                best = {"val_bpc": last_val, "step": step}
                history["best"] = best
                save("best", step, state, history)
            save("last", step, state, history)
    finally:
        bar.close()
        metrics_file.close()

    elapsed = time.perf_counter() - t_start
    speed = (step - start_step) * chars_per_step / max(elapsed, 1e-9)
    plot = _plot(out)
    summary = {"out": out, "step": step, "stopped": stopped, "val_bpc": last_val, "best": best,
               "train_bpc": last_loss, "seconds": elapsed, "chars_per_s": speed, "plot": plot,
               "fill_in": cfg.bidir}
    what = "fill-in " if cfg.bidir else ""
    val_text = f"val {what}{last_val:.3f} bits/char" if last_val is not None else "no validation text"
    if best is not None:
        val_text += f" (best {best['val_bpc']:.3f} at step {best['step']})"
    summary["line"] = (f"{stopped}: step {step}{f'/{total}' if total else ''} in {format_duration(elapsed)} "
                       f"({format_rate(speed)} chars/s); {val_text}; checkpoints in {out}")
    return summary
