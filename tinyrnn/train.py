"""Training a character model: what ``tinyrnn train`` runs, usable from Python.

    from tinyrnn.train import TrainConfig, train
    summary = train(TrainConfig(corpus="poems.txt", cell="gru", steps=2000), out="runs/poems")
    print(summary["val_bpc"])

The loop itself (optimizer, schedule, budget, progress, metrics, checkpoints, resume) is the shared
``tinyrnn.trainer.Trainer``; this module is the character model's ``Task``: the corpus, the
batches, the model and its loss. One step (unidirectional):

    x (T+1, B) window of every stream  ->  logits, state = model(x[:-1], state)
    loss = cross_entropy(logits, x[1:])                    (the Trainer: backward, clip, step, ...)
    state is carried into the next window, detached: truncated BPTT

Bidirectional (``bidir=True``): logits = model.fill_logits(x) on windows of T characters, loss
against x itself (no position sees its own character; see ``models.py``); no state is carried.

The run directory holds ``last`` and ``best`` checkpoints (``.npz``, each with a readable ``.json``
copy), ``metrics.jsonl``, the ``.lock`` of the process training it and, when matplotlib is
installed, ``loss.png``.

A checkpoint records the corpus's fingerprint (its size and SHA-256); ``--resume`` on a corpus
whose bytes differ stops, unless ``allow_changed_data`` (``--allow-changed-data``) is set.
"""
import math
import os
import stat
from dataclasses import dataclass, replace
from typing import ClassVar

from .data import Corpus, StreamBatches, Vocab, describe_chars, load_corpus, remap
from .distributed import rows
from .errors import TinyRNNError
from .trainer import LoopConfig, Task, Trainer, TrainingDiverged  # noqa: F401 (TrainingDiverged: public)

LN2 = math.log(2.0)
CORPORA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpora")
DEFAULT_CORPUS = os.path.join(CORPORA_DIR, "harbour.txt")
DEFAULT_STEPS = 1500


@dataclass
class TrainConfig(LoopConfig):
    corpus: str | None = None          # None: the corpus bundled with the package
    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    embed: int = 64
    dropout: float = 0.0
    bidir: bool = False
    # optimisation (the rest: LoopConfig)
    lr: float = 6e-3                   # measured: 180 s runs on two corpora beat 3e-3 by 0.03-0.10 bits/char (BENCHMARKS.md)
    # data
    batch_size: int = 32
    seq_len: int = 64
    val_frac: float = 0.1
    encoding_errors: str = "strict"
    eval_chars: int = 32768            # validation characters scored at each periodic evaluation, spread
                                       # over the held-out text (generate.stream_rows); `tinyrnn eval`: all
    allow_changed_data: bool = False   # resume even when the corpus's bytes differ from the saved run's

    DEFAULT_STEPS: ClassVar[int] = DEFAULT_STEPS
    FINAL_LR: ClassVar[float] = 0.0    # measured: 180 s GRU 2x384 runs end 0.01 bits/char lower than at lr/10 (BENCHMARKS.md)
    PATH_FIELDS: ClassVar[tuple] = ("corpus",)
    TRANSIENT: ClassVar[tuple] = ("allow_changed_data",)
    FINITE: ClassVar[tuple] = LoopConfig.FINITE + ("dropout", "val_frac")
    RESUMABLE: ClassVar[frozenset] = LoopConfig.RESUMABLE | {"eval_chars"}
    POSITIVE: ClassVar[tuple] = LoopConfig.POSITIVE + ("layers", "hidden", "embed", "batch_size", "seq_len",
                                                       "eval_chars")

    def validate(self):
        from .models import CELLS

        super().validate()
        for name in ("dropout", "val_frac"):
            if not math.isfinite(getattr(self, name)):
                raise TinyRNNError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if self.cell not in CELLS:
            raise TinyRNNError(f"unknown cell {self.cell!r}: use one of {', '.join(CELLS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise TinyRNNError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.val_frac < 1.0:
            raise TinyRNNError(f"--val-frac must be in [0, 1), got {self.val_frac}")
        if self.encoding_errors not in ("strict", "replace"):
            raise TinyRNNError(f"--encoding-errors must be strict or replace, got {self.encoding_errors!r}")
        return self


# A time budget alone (``tinyrnn train CORPUS --time-limit S``, none of BUDGET_CHOICES given): the
# settings that scored best after a few minutes on 2 cores. `tinyrnn eval` on tinyshakespeare's last
# 10% (Zen 4 VM, BENCHMARKS.md): after 180 s 2.086 bits/char against the plain defaults' 2.105 (an
# LSTM 2x256, windows of 64, lr 6e-3) and a GRU 2x512's 2.111; after 60 s 2.256 against 2.267. The
# same settings scored 2.069 on an Intel VM and 2.083 on a Zen 5 VM; on EWT's running text they are
# level with the LSTM (2.095 against 2.094, means of 2 and 3 runs). A GRU goes ~30% further per second
# than an LSTM of the same width, and windows of 96 beat 64 for it (32: 0.13 bits/char worse).
BUDGET_DEFAULTS = {"cell": "gru", "hidden": 384, "seq_len": 96, "lr": 5e-3}
# the options that make a run the user's own design: any of them set, a budget keeps the plain defaults
# (--dropout is not one: it regularises whichever model trains)
BUDGET_CHOICES = ("cell", "layers", "hidden", "embed", "bidir", "optimizer", "lr", "batch_size", "seq_len",
                  "steps", "epochs")
# A budget that would read its training text 7 times or more overfits: such a run trains with dropout 0.2
# and stops after 8 passes. Dropout 0.2 against none, by the passes the run without dropout made in the
# same seconds (Zen 4 VM, BENCHMARKS.md): tinyshakespeare (1.0 M training characters) -0.056 bits/char at
# 3.4 passes, -0.015 at 5.8, +0.002 at 7.5, +0.025 at 12; its first 297K characters -0.034 at 3.9, -0.009
# at 6.1, +0.012 at 7.5, +0.029 at 8.3, +0.11 at 12; EWT's first 297K -0.058 at 4.2, -0.012 at 6.5,
# +0.031 at 7.9, +0.10 at 12: it turns between 6.5 and 7.5 passes on all three. With dropout 0.2, 7-8
# passes beat 10-12 on all three (by 0.005, 0.033, 0.017). A larger text of another kind, 2.52 M characters
# of Python source at 1200 s: +0.053 at 8 passes (1.861 against dropout's 1.808; both runs rolled back
# once). The passes are foreseen from the budget GRU's speed on 2 cores: a faster machine reads the text
# more often than foreseen, a slower one less: a run checks again once its pace is measured
# (``budget_pace_rule``).
BUDGET_DROPOUT, BUDGET_DROPOUT_FROM, BUDGET_PASSES, BUDGET_CHARS_PER_S = 0.2, 7.0, 8.0, 20_000
# A long budget does better at half the learning rate. `tinyrnn eval` on the last 10% (Zen 4 VM,
# BENCHMARKS.md), lr 5e-3 against 2.5e-3: tinyshakespeare at 180 s (about 1,200 updates) 2.076, 2.114;
# at 220 s (1,480-1,515) 2.068, 2.080 and with another seed 2.078, 2.081; at 265 s (1,800-1,880) 2.088,
# 2.064 and 2.074, 2.067; at 600 s (it stops after 8 passes: 2,600 updates) 2.086, 2.069. EWT's running
# text at 265 s (1,700-1,800) 2.067, 2.060; at 600 s (8 passes: 2,352) 2.082, 2.053. 2.52 M characters
# of Python source at 180 s (1,170-1,190) 1.887, 1.878; at 265 s (1,800-1,850, 2.3 passes: the updates
# decide, not overfitting) 1.870, 1.810; at 1200 s (8 passes: 6,552) 1.808 (its loss climbed away at
# update 1,550 and it rolled back), 1.754. Python source wants the half rate sooner; tinyshakespeare's
# switch, where the differences (means over its two seeds) interpolated in log updates cross, is 1,600.
BUDGET_LONG_FROM, BUDGET_LONG_LR = 1600, 2.5e-3


def budget_passes(cfg):
    """How many times a budget run is foreseen to read its training text: ``time_limit`` seconds at
    BUDGET_CHARS_PER_S over the corpus's training part (its size in bytes, less ``val_frac``). 0 when
    the size is not known beforehand (a pipe; a missing file, whose error comes when it is read)."""
    try:
        st = os.stat(corpus_path(cfg))
    except OSError:
        return 0.0
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return 0.0
    return cfg.time_limit * BUDGET_CHARS_PER_S / max(1.0, st.st_size * (1.0 - cfg.val_frac))


def budget_updates(cfg, passes):
    """The updates a budget run is foreseen to train: ``time_limit`` seconds at BUDGET_CHARS_PER_S in
    batches of ``batch_size`` windows of BUDGET_DEFAULTS' ``seq_len``, or fewer when it stops after
    BUDGET_PASSES passes (foreseen to read its text ``passes`` times: BUDGET_DROPOUT_FROM or more)."""
    updates = cfg.time_limit * BUDGET_CHARS_PER_S / (cfg.batch_size * BUDGET_DEFAULTS["seq_len"])
    return updates * min(1.0, BUDGET_PASSES / passes) if passes >= BUDGET_DROPOUT_FROM else updates


def budget_lr(updates):
    """The budget's peak learning rate for a run of ``updates`` updates."""
    return BUDGET_LONG_LR if updates >= BUDGET_LONG_FROM else BUDGET_DEFAULTS["lr"]


def budget_defaults(cfg, explicit, resume=False):
    """``cfg`` with BUDGET_DEFAULTS in place of the plain defaults when it is a run on a time budget
    alone: ``time_limit`` set, on the CPU, no option of BUDGET_CHOICES among ``explicit`` (the
    names the user set), not resuming (a resumed run keeps its own model). When such a run is
    foreseen to read its text BUDGET_DROPOUT_FROM times or more, it stops after BUDGET_PASSES epochs
    and takes BUDGET_DROPOUT unless ``dropout`` is among ``explicit``; foreseen to train
    BUDGET_LONG_FROM updates or more, it trains at BUDGET_LONG_LR. Else ``cfg`` itself."""
    if resume or not cfg.time_limit or cfg.device != "cpu" or set(explicit) & set(BUDGET_CHOICES):
        return cfg
    passes = budget_passes(cfg)
    stop = _passes_settings(passes, "dropout" in explicit) if passes >= BUDGET_DROPOUT_FROM else {}
    return replace(cfg, **{**BUDGET_DEFAULTS, "lr": budget_lr(budget_updates(cfg, passes))}, **stop)


def _passes_settings(passes, user_dropout, done_epochs=0.0):
    """The budget's stop and dropout for a run that reads its text ``passes`` times: from
    BUDGET_DROPOUT_FROM, stop after BUDGET_PASSES epochs (or now, past them) with BUDGET_DROPOUT;
    below, neither. The dropout is left alone when the user chose it."""
    over = passes >= BUDGET_DROPOUT_FROM
    settings = {"epochs": max(BUDGET_PASSES, done_epochs) if over else None}
    if not user_dropout:
        settings["dropout"] = BUDGET_DROPOUT if over else 0.0
    return settings


def budget_pace_rule(trainer, steps, user_dropout):
    """The budget's rule again, on the pace the run measures in its first seconds (``Trainer.pace_rule``):
    the whole budget is foreseen to train ``steps`` steps. ``budget_passes`` foresaw the passes at 2
    cores' speed, and a faster machine (or a pipe, whose size is not known beforehand) may read the text
    BUDGET_DROPOUT_FROM times or more, a slower one fewer. The run is then set as if foreseen from its
    pace: it stops after BUDGET_PASSES epochs and, unless ``user_dropout`` (the user set --dropout),
    trains with BUDGET_DROPOUT from that step on; or it loses that stop and dropout. Likewise its
    learning rate, when the updates it will now train cross BUDGET_LONG_FROM."""
    per_epoch = trainer.task.steps_per_epoch
    passes, capped = steps / per_epoch, trainer.cfg.epochs is not None
    over = passes >= BUDGET_DROPOUT_FROM
    if over != capped:
        _pace_passes(trainer, passes, user_dropout)
    updates = min(steps, trainer.total) if trainer.total is not None else steps
    if (updates >= BUDGET_LONG_FROM) != (trainer.cfg.lr == BUDGET_LONG_LR):
        trainer.retarget(lr=budget_lr(updates))    # the warm-up and the decay after it, from this step on
        trainer.say(f"at the pace measured, the run would train about {updates:.0f} updates: lr {trainer.cfg.lr:g} "
                    f"from step {trainer.step} on (from {BUDGET_LONG_FROM} updates a budget trains at "
                    f"{BUDGET_LONG_LR:g}, below at {BUDGET_DEFAULTS['lr']:g}; set --lr to choose)")


def _pace_passes(trainer, passes, user_dropout):
    """``budget_pace_rule``'s stop and dropout for a run now foreseen to read its text ``passes`` times."""
    per_epoch, capped = trainer.task.steps_per_epoch, trainer.cfg.epochs is not None
    changes = _passes_settings(passes, user_dropout, trainer.step / per_epoch)
    if "dropout" in changes:
        trainer.model.set_dropout(changes["dropout"])
    trainer.retarget(**changes)
    done = f"no stop after {BUDGET_PASSES:g} passes" if capped else f"stopping after {trainer.cfg.epochs:g} passes"
    if not user_dropout:
        done += f", {'no dropout' if capped else f'dropout {BUDGET_DROPOUT:g}'} from step {trainer.step} on"
    trainer.say(f"at the pace measured, {trainer.cfg.time_limit:g} s would read the text about {passes:.1f} "
                f"times: {done} (from {BUDGET_DROPOUT_FROM:g} passes the model overfits; set --epochs or "
                "--dropout to choose)")


def describe_budget_defaults(cfg):
    """The line a budget run starts with: which settings it took, and how to choose others."""
    dropout = f" with dropout {cfg.dropout:g}" if cfg.dropout else ""
    passes, stop = budget_passes(cfg), ""
    if cfg.epochs:
        stop = (f", stopping after {cfg.epochs:g} passes over the text ({cfg.time_limit:g} s would read it about "
                f"{passes:.0f} times on 2 cores; from {BUDGET_DROPOUT_FROM:g} the model overfits)")
    lr = f"lr {cfg.lr:g}"
    if cfg.lr == BUDGET_LONG_LR:
        lr += (f" (about {budget_updates(cfg, passes):.0f} updates foreseen: from {BUDGET_LONG_FROM} "
               f"a budget halves its {BUDGET_DEFAULTS['lr']:g})")
    return (f"a {cfg.time_limit:g} s budget: training a {cfg.cell.upper()} {cfg.layers}x{cfg.hidden} on windows "
            f"of {cfg.seq_len} at {lr}{dropout}{stop}, the settings measured best for a few minutes on "
            "2 cores (set --cell, --hidden, --seq-len, --lr, --dropout, --epochs or another model option to "
            "choose your own)")


def corpus_path(cfg):
    return cfg.corpus if cfg.corpus is not None else DEFAULT_CORPUS


def default_out_dir(cfg, root="runs"):
    """runs/<corpus name>-<cell>[-bidir], with -2, -3... appended if that already exists."""
    name = os.path.splitext(os.path.basename(corpus_path(cfg)))[0] + f"-{cfg.cell}" + ("-bidir" if cfg.bidir else "")
    path, k = os.path.join(root, name), 2
    while os.path.exists(path):
        path, k = os.path.join(root, f"{name}-{k}"), k + 1
    return path


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


class CharTask(Task):
    """A character model on a corpus: streams of text, next-character (or fill-in) cross-entropy,
    validation bits/char."""

    family, unit, metric, higher_is_better = "char", "chars", "val_bpc", False
    shardable = True             # MPI: batch() reads only this rank's streams (see distributed.py)
    loss_name, loss_scale, loss_unit, short_metric = "loss_bpc", 1 / LN2, "bits/char", "val {:.3f} bpc"

    def __init__(self, cfg, saved, log):
        self.cfg = cfg
        self.path = path = corpus_path(cfg)
        corpus = load_corpus(path, encoding_errors=cfg.encoding_errors)
        if saved is not None:                  # resuming: the same text, and the model's own vocabulary
            _check_fingerprint(saved, corpus, path, cfg.allow_changed_data, log)
            corpus = _in_vocab(corpus, Vocab(saved["vocab"]), path)
        self.corpus, self.vocab = corpus, corpus.vocab
        self.train_ids, self.val_ids = corpus.split(cfg.val_frac)
        window = cfg.seq_len if cfg.bidir else cfg.seq_len + 1
        self.batch_size = fit_batch_size(len(self.train_ids), cfg, window, path, log)
        self.batches = StreamBatches(self.train_ids, self.batch_size, window, cfg.seq_len, seed=cfg.seed)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.has_eval = len(self.val_ids) >= 2

    def build_model(self):
        from .models import CharRNN

        cfg = self.cfg
        _check_model_size(cfg, len(self.vocab))
        self.model = CharRNN(len(self.vocab), cfg.cell, cfg.hidden, cfg.layers, cfg.embed, cfg.dropout, cfg.bidir)

    def kernel_workload(self):
        from .kernels.precompile import workload

        return workload("char", self.cfg.cell, self.cfg.bidir)

    def batch(self, step):
        return self.batches.batch(step, rows(self.batch_size, *self.shard))    # MPI hook: this rank's streams

    def units(self, x):
        return x.shape[1] * self.cfg.seq_len

    def loss(self, x, state):
        from . import ops

        if self.cfg.bidir:
            logits, state, targets = self.model.fill_logits(x), None, x
        else:
            logits, state = self.model(x[:-1], state)
            targets = x[1:]
        return ops.cross_entropy(logits.reshape(-1, len(self.vocab)), targets.reshape(-1)), state

    def evaluate(self):
        from .generate import evaluate

        loss, _ = evaluate(self.model, self.val_ids, batch_size=16, seq_len=self.cfg.seq_len,
                           max_chars=self.cfg.eval_chars)
        return loss / LN2

    def _samples(self):
        """Whether the periodic validation scores a sample (``eval_chars``) rather than all held out."""
        return bool(self.cfg.eval_chars) and self.cfg.eval_chars < len(self.val_ids)

    def scoring(self):
        n = len(self.val_ids)
        if not self._samples():
            return f"all {n:,} held-out characters"
        return f"{self.cfg.eval_chars:,} characters spread over the {n:,} held out"

    def saved_scoring(self, best):
        """A best saved before tinyrnn recorded its scoring (2026-12-07) was, but for the last hours
        before it, scored on the held-out text's first ``eval_chars`` characters (rescoring the few
        already spread finds their own score again)."""
        if "scored_on" in best or not self._samples():
            return super().saved_scoring(best)
        return f"the first {self.cfg.eval_chars:,} held-out characters"

    def checkpoint_meta(self):
        return {"model": self.model.config(), "vocab": self.vocab.chars,
                "data": {"corpus": os.path.abspath(self.path), "chars": len(self.corpus),
                         "train_chars": len(self.train_ids), "val_chars": len(self.val_ids),
                         "batch_size": self.batch_size, **(self.corpus.fingerprint or {})}}

    def check_checkpoint(self, meta, arrays, stem):
        """The saved model config is the one this config builds; the carried state fits it."""
        from .runcheck import damaged

        if meta["model"] != self.model.config():
            raise damaged(stem, f"its model {meta['model']} is not the one its training config builds "
                                f"({self.model.config()})")
        want = (self.cfg.layers, self.batch_size, self.cfg.hidden)
        for key, a in arrays.items():
            if key.startswith("state/") and (key not in ("state/h", "state/c") or tuple(a.shape) != want
                                             or a.dtype.kind != "f"):
                raise damaged(stem, f"the carried state {key} is {a.dtype} {tuple(a.shape)}, expected float {want}")

    def uniform_loss(self):
        return math.log(len(self.vocab))

    def describe(self, value, best):
        if value is None:
            return "no validation text"
        text = f"val {'fill-in ' if self.cfg.bidir else ''}{value:.3f} bits/char"
        if best is not None:
            text += f" (best {best['val_bpc']:.3f} at step {best['step']})"
        return text


def _check_fingerprint(saved, corpus, path, allow, log):
    """Stop (or with ``allow`` warn) when the corpus's bytes are not the ones the run was trained on."""
    was, now = saved.get("data", {}), corpus.fingerprint or {}
    if "sha256" not in was or not now or (was["sha256"], was.get("bytes")) == (now["sha256"], now["bytes"]):
        return
    what = (f"{path} is not the text the run was trained on ({was.get('bytes')} bytes, "
            f"sha256 {str(was['sha256'])[:12]}; now {now['bytes']} bytes, sha256 {now['sha256'][:12]})")
    if not allow:
        raise TinyRNNError(f"{what}: resume on the original file, or pass --allow-changed-data to continue on "
                           "the new text")
    log(f"warning: {what}; continuing on the new text (--allow-changed-data)")


def _check_model_size(cfg, vocab_size):
    """Refuse a model whose weights, gradients and optimizer state cannot fit in this machine's memory."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cfg.cell]
    per_stack = gates * cfg.hidden * ((cfg.embed + cfg.hidden + 2) + (cfg.layers - 1) * (2 * cfg.hidden + 2))
    stacks = 2 if cfg.bidir else 1
    params = vocab_size * cfg.embed + stacks * per_stack + (stacks * cfg.hidden + 1) * vocab_size
    need = params * 4 * 4                      # float32 weights + gradients + two optimizer buffers
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > memory:
        raise TinyRNNError(f"the model ({params:,} parameters: --hidden {cfg.hidden} --layers {cfg.layers} "
                           f"--embed {cfg.embed}) needs about {need / 2 ** 30:,.0f} GiB, this machine has "
                           f"{memory / 2 ** 30:,.0f} GiB: use a smaller --hidden, --layers or --embed")


def _in_vocab(corpus, vocab, path):
    """The corpus re-indexed into a resumed model's vocabulary (its own may differ in order or size)."""
    if vocab == corpus.vocab:
        return corpus
    ids, unknown = remap(corpus.ids, corpus.vocab, vocab)
    if unknown:
        raise TinyRNNError(f"{path} has characters the resumed model's vocabulary lacks: "
                           f"{describe_chars(''.join(unknown))}; resume on the original corpus")
    return Corpus(path, vocab, ids.astype(vocab.dtype))


def train(cfg=None, out=None, resume=False, explicit=(), progress=True, log=None, budget=False):
    """Train (or with ``resume=True`` continue) a character model; returns a summary dict.

    out: the run directory (default: a fresh ``runs/<corpus>-<cell>``). explicit: the option names
    the user set (when resuming, these must agree with the saved run unless they are resumable).
    budget: apply ``budget_defaults`` (what ``tinyrnn train`` does; from Python a config is taken
    as it is). Raises TinyRNNError for bad input, TrainingDiverged when the loss becomes NaN/inf.
    """
    cfg = cfg or TrainConfig()
    chosen = budget_defaults(cfg, explicit, resume) if budget else cfg
    pace = {"user_dropout": "dropout" in explicit} if chosen is not cfg else None   # a resumed run's: saved
    trainer = Trainer(CharTask, chosen, out=out, resume=resume, explicit=explicit, progress=progress, log=log,
                      default_out=default_out_dir, pace_rule=budget_pace_rule if budget else None, pace=pace)
    if chosen is not cfg:
        trainer.log(describe_budget_defaults(chosen))
    summary = trainer.run()
    summary.update(train_bpc=summary["train_loss"], fill_in=trainer.cfg.bidir)
    return summary
