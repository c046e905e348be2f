"""One training loop for every model family: set-up, one step, evaluation, checkpoints, the loop.

    trainer = Trainer(CharTask, cfg, out="runs/poems")    # or TaggerTask, ...
    summary = trainer.run()                                # {"step": ..., "line": "done: step ..."}

The Trainer owns what every family shares: the optimizer and its learning-rate schedule (linear
warm-up, then cosine, step or constant), gradient clipping, the budget (``steps``, ``epochs`` or
``time_limit``), the progress bar, ``metrics.jsonl``, the ``last`` and ``best`` checkpoints, Ctrl-C
(save, then stop), the stop on a NaN/inf loss, and exact resume. A *task* brings the rest - data,
model, loss, evaluation - through a small interface (``Task`` below documents it).

One step:

    batch, new_epoch = task.batch(step)          # a pure function of (seed, step): resume is exact
    loss, state = task.loss(batch, state)        # state: what a language model carries (TBPTT) or None
    loss.backward() -> clip -> optimizer step -> lr schedule -> state = detach(state)

Everything needed to continue exactly is in the checkpoint: weights, optimizer buffers, schedule
position, the library's RNG state, the carried state and the step. The ``best`` score records which
held-out data it was scored on (``Task.scoring``): a resumed run whose ``best`` was scored otherwise
scores that checkpoint again, so that a validation never competes with a score it cannot match.

With ``time_limit`` the schedule ends where the budget does (``fit_schedule_to_budget``), from the
pace the run measures; a caller's ``pace_rule`` is told, once, how many steps the budget will
train, and may change the run's length or config (``retarget``; a character model's budget rule
stops it after 8 passes over its text, ``train.budget_pace_rule``). Until it has run, each
checkpoint holds its arguments (``pace``), so a run killed in its first seconds checks its pace
when resumed; a change it makes is saved at once.

Reliability (what a run directory survives):

* One process per run directory: ``RunLock`` (``DIR/.lock``, released by the OS when the process
  dies); a second ``train`` on the same directory stops with a line naming the first one's pid.
* A kill at any instant leaves a run that resumes: a fresh run writes ``last`` at step 0 before
  training, every checkpoint is one file replaced atomically (``checkpoint.save``), and
  ``metrics.jsonl`` is trimmed to the checkpoint's step on resume (a half-written line is dropped).
  The checkpoint's history holds what the loop counts across steps (the open log window's loss,
  the windows counted by the checks below), so a run resumed from any step logs the same rows and
  makes the same decisions as a straight run.
* Nothing in the run directory changes until the whole set-up has succeeded: a resume checks the
  checkpoint completely (``runcheck``), restores it in memory, and only then touches files.
* SIGINT (Ctrl-C) and SIGTERM (``kill``, ``timeout``, schedulers) both stop after the current step
  and save ``last``; a second signal while the checkpoint is written waits for the save; one at
  any other moment stops at once and the error says that nothing was saved.
* Divergence: a NaN/inf loss or gradient norm stops the run at once (saving the last good weights);
  so does a loss that explodes while staying finite: ``EXPLODE_WINDOWS`` logged windows in a row
  whose mean training loss exceeds ``2 * uniform + 1`` nats, where ``uniform`` = log(V) is what
  a uniform guess costs (the task's ``uniform_loss()``). A healthy run starts near log(V) and goes
  down; it never stays above twice that.
* A loss that climbs away from its lowest and stays there (the gradients explode, clipping keeps
  them finite, and the model degrades over a few hundred steps to far worse than it was; measured:
  a GRU 2x384 at lr 5e-3 on Python source, in tinyrnn and in PyTorch alike, BENCHMARKS.md): after
  ``RISE_WINDOWS`` logged windows in a row above both ``RISE_FACTOR`` times the lowest window's
  mean and that + ``RISE_NATS`` nats, the run goes back to its ``best`` checkpoint (weights,
  optimizer, step, data position) with the learning rate halved, says so, trims ``metrics.jsonl``
  to that step (plus a row ``rolled_back_from``) and saves ``last``: the same run as one resumed
  from ``best`` at half the rate. At most ``ROLLBACKS`` times; then, or with no ``best`` to go back
  to, it stops. A run that does not rise is not changed by this, bit for bit.

Under ``mpirun -n N`` the same loop runs on every process: the lines marked ``MPI hook`` (see
``distributed.py``; no-ops without a launcher) compile a cold cache's kernels once a machine, split
each batch, average the gradients with one allreduce, agree on stopping and on the budget's pace
(rank 0's clock), and let rank 0 alone lock the run directory, print and write.
"""
import contextlib
import inspect
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

import numpy as np

from . import checkpoint, distributed, runcheck
from .errors import TinyRNNError
from .runlock import RunLock

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad")
SCHEDULES = ("cosine", "constant", "step")
EXPLODE_WINDOWS = 3          # logged windows in a row far above the uniform-guess loss -> stop
# A loss that climbs away from its lowest: RISE_WINDOWS logged windows in a row above both RISE_FACTOR times
# the lowest window's mean and the lowest + RISE_NATS -> back to ``best`` with the learning rate halved,
# at most ROLLBACKS times (see the module docstring)
RISE_WINDOWS, RISE_FACTOR, RISE_NATS, ROLLBACKS = 3, 1.5, 0.5, 3


@dataclass
class LoopConfig:
    """The options every model family shares (a family's config subclasses this)."""
    optimizer: str = "adam"
    lr: float = 3e-3
    lr_schedule: str = "cosine"
    warmup: int = 50
    clip: float = 5.0
    steps: int | None = None           # default: the family's DEFAULT_STEPS unless epochs or time_limit
    epochs: float | None = None
    time_limit: float | None = None    # seconds
    eval_every: int = 250
    save_every: int = 500
    log_every: int = 10
    seed: int = 1337
    threads: int | None = None
    device: str = "cpu"                # 'cpu' or 'cuda'

    DEFAULT_STEPS: ClassVar[int] = 1500
    FINAL_LR: ClassVar[float] = 0.1      # the cosine ends at lr * FINAL_LR
    PATH_FIELDS: ClassVar[tuple] = ()    # file options, stored as absolute paths and compared by realpath
    # Options that may differ when resuming; everything else must match the run being continued.
    RESUMABLE: ClassVar[frozenset] = frozenset({"steps", "epochs", "time_limit", "eval_every", "save_every",
                                                "threads", "clip", "log_every", "device"})
    POSITIVE: ClassVar[tuple] = ("steps", "eval_every", "save_every", "log_every", "threads")
    TRANSIENT: ClassVar[tuple] = ()      # options of one invocation: not saved, never taken from the saved run
    FINITE: ClassVar[tuple] = ("lr", "clip", "epochs", "time_limit")

    def validate(self):
        if self.optimizer not in OPTIMIZERS:
            raise TinyRNNError(f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in SCHEDULES:
            raise TinyRNNError(f"unknown lr schedule {self.lr_schedule!r}: use one of {', '.join(SCHEDULES)}")
        for name in self.FINITE:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise TinyRNNError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        for name in self.POSITIVE:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise TinyRNNError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.seed < 0:
            raise TinyRNNError(f"--seed must be >= 0, got {self.seed}")
        for name in ("lr", "epochs", "time_limit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TinyRNNError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.warmup < 0:
            raise TinyRNNError(f"--warmup must be >= 0, got {self.warmup}")
        if not self.clip >= 0:
            raise TinyRNNError(f"--clip must be >= 0 (0 disables clipping), got {self.clip}")
        return self

    def to_json(self):
        """The config as stored in a checkpoint (file options as absolute paths)."""
        saved = {k: v for k, v in asdict(self).items() if k not in self.TRANSIENT}
        for name in self.PATH_FIELDS:
            saved[name] = saved[name] and os.path.abspath(saved[name])
        return saved


class Task:
    """What a model family gives the Trainer (subclass it; ``CharTask`` in ``train.py`` is one).

    Built as ``Task(cfg, saved, log)``: ``saved`` is the checkpoint meta of the run being resumed,
    or None. It sets these attributes:
        model            the nn.Module being trained
        steps_per_epoch  batches in one pass over the training data
        has_eval         whether there is held-out data to evaluate on
    and implements:
        batch(step) -> (batch, starts_epoch)   the batch number ``step`` (a pure function of seed, step)
        loss(batch, state) -> (loss, state)    a scalar Tensor (mean over units) and the carried state
        evaluate() -> float                    the held-out metric (``metric``)
        scoring() -> str                       which held-out data ``evaluate`` scores, saved with the
                                               best score (a resumed run rescores a best scored otherwise)
        units(batch) -> int                    characters / tokens in a batch (for rates)
        checkpoint_meta() -> dict              what rebuilds the model: {"model": config, "vocab": ...}
        describe(value, best) -> str           the metric for the final line, e.g. "val 1.23 bits/char"
    and may override:
        check_checkpoint(meta, arrays, stem)   raise TinyRNNError when a saved run does not fit the task
        uniform_loss() -> float | None         the loss (nats) of a uniform guess: the explosion check
        kernel_workload() -> str | None        its kernels' name in kernels/signatures.json (first runs)

    Under mpirun (``distributed.py``) a task with ``shardable = True`` finds ``shard = (rank, size)``
    set before the first batch: ``batch(step)`` then returns only rows ``distributed.rows(B, rank, size)``
    of the global batch, and ``units`` counts that part.
    """
    shardable = False            # whether batch() honours ``shard`` (needed to train under mpirun)
    shard = (0, 1)
    family = "char"              # stored in checkpoints: what ``checkpoint.load_model`` builds
    unit = "chars"               # what the rates count
    metric = "val_bpc"           # the evaluation metric that picks the best checkpoint
    higher_is_better = False
    loss_name, loss_scale = "loss_bpc", 1 / math.log(2)    # training loss as logged: nats * scale
    loss_unit = "bits/char"                                # ... and in words, for messages
    short_metric = "val {:.3f} bpc"                        # the metric on the progress bar

    def check_checkpoint(self, meta, arrays, stem):
        """Called before a resumed run is restored: raise TinyRNNError when it does not fit the task."""

    def scoring(self):
        return "all the held-out data"

    def saved_scoring(self, best):
        """How a saved best score was scored (runs saved before tinyrnn recorded it: the task says)."""
        return best.get("scored_on", self.scoring())

    def uniform_loss(self):
        return None

    def kernel_workload(self):
        """The name of this task's training step in ``kernels/signatures.json`` (its kernels are then
        compiled in parallel on a cold cache, ``backend.precompile``), or None."""
        return None


# ----------------------------------------------------------------------------- carried state

def detach_state(state):
    """Cut the tape between windows (truncated BPTT): same values, no history."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_arrays(state):
    """The carried state as {name: array} (for checkpoints)."""
    if state is None:
        return {}
    if isinstance(state, tuple):
        return {"h": state[0].numpy(), "c": state[1].numpy()}
    return {"h": state.numpy()}


def state_from_arrays(arrays):
    from .tensor import Tensor

    if "h" not in arrays:
        return None
    if "c" in arrays:
        return Tensor(arrays["h"]), Tensor(arrays["c"])
    return Tensor(arrays["h"])


# ----------------------------------------------------------------------------- resume

def load_for_resume(cfg, out, explicit, family="char", metric="val_bpc"):
    """The run in ``out`` to continue -> (merged config, checkpoint meta, arrays); reads, changes nothing.

    ``explicit`` names the options the user set: they must agree with the saved run unless they
    are in ``cfg.RESUMABLE`` (those override it). The checkpoint's metadata is checked completely
    (``runcheck.check_meta``); a damaged field is one TinyRNNError line."""
    stem = os.path.join(out, "last")
    meta, arrays = checkpoint.load(stem)
    kind = type(cfg)
    saved = runcheck.check_meta(meta, stem, kind, family, metric)
    given = set(explicit) | {name for name in cfg.PATH_FIELDS if getattr(cfg, name) is not None}
    _check_conflicts(cfg, meta["train_config"], given)
    overrides = {name: getattr(cfg, name) for name in explicit if name in cfg.RESUMABLE}
    overrides.update({name: getattr(cfg, name) for name in kind.TRANSIENT})
    merged = kind(**{**{f.name: getattr(saved, f.name) for f in fields(kind)}, **overrides})
    return merged, meta, arrays


def _check_conflicts(cfg, saved, given):
    for name in sorted(given):
        if name in cfg.RESUMABLE or name not in saved:
            continue
        mine, theirs = getattr(cfg, name), saved[name]
        if name in cfg.PATH_FIELDS:
            same = (mine is None and theirs is None) or (
                mine is not None and theirs is not None and os.path.realpath(mine) == os.path.realpath(theirs))
        else:
            same = mine == theirs
        if not same:
            flag = name.upper() if name in cfg.PATH_FIELDS else "--" + name.replace("_", "-")
            raise TinyRNNError(f"{flag} {mine} conflicts with the run being resumed ({name} = {theirs}): drop it to "
                               "continue that run, or start a new run with another --out")


# ----------------------------------------------------------------------------- building blocks

def make_optimizer(cfg, params):
    from . import optim

    kinds = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD, "rmsprop": optim.RMSprop,
             "adagrad": optim.Adagrad}
    return kinds[cfg.optimizer](params, lr=cfg.lr)


def make_schedule(cfg, opt, total_steps):
    """Linear warm-up, then cosine decay to lr * cfg.FINAL_LR over the run (or the step schedule).

    The run's length is ``total_steps``; with ``--time-limit`` and no step count, a first guess
    (``cfg.DEFAULT_STEPS``) that ``fit_schedule_to_budget`` replaces as soon as the step rate is known."""
    from . import optim

    horizon = total_steps or (cfg.DEFAULT_STEPS if cfg.time_limit else None)
    after = None
    if cfg.lr_schedule == "cosine" and horizon:
        after = optim.CosineLR(opt, max(1, horizon - cfg.warmup), min_lr=cfg.lr * cfg.FINAL_LR)
    elif cfg.lr_schedule == "step" and horizon:
        after = optim.StepLR(opt, max(1, horizon // 3), gamma=0.3)
    return optim.WarmupLR(opt, cfg.warmup, after=after)


def fit_schedule_to_budget(sched, step, total, warmup, steps_left_in_budget):
    """With ``--time-limit``, the schedule ends where the budget does: the run's horizon becomes
    min(total steps, step + the steps the remaining seconds allow at the rate measured so far),
    so the cosine reaches its floor (or the step schedule its third drop) at the time limit instead of
    being cut off half way. Called at every log window; the horizon is saved with the schedule
    (a resumed run goes on from it). Returns the horizon (None: nothing to fit)."""
    after = getattr(sched, "after", None)
    if after is None:
        return None
    horizon = step + max(0, int(steps_left_in_budget))
    if total:
        horizon = min(horizon, total)
    horizon = max(horizon, step + 1, warmup + 1)
    if hasattr(after, "total_steps"):
        after.total_steps = max(1, horizon - warmup)
    else:
        after.step_size = max(1, horizon // 3)
    sched._apply()
    return horizon


def read_metrics(path):
    """The rows of a metrics.jsonl file (a line cut short by a crash is skipped)."""
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def plot_metrics(out, loss_name, metric):
    """``out/loss.png`` from metrics.jsonl, if matplotlib is installed (it is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    rows = read_metrics(os.path.join(out, "metrics.jsonl"))
    train = [(r["step"], r[loss_name]) for r in rows if loss_name in r]
    val = [(r["step"], r[metric]) for r in rows if metric in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), label="train")
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(loss_name.replace("_", " "))
    ax.legend()
    ax.grid(alpha=0.3)
    path = os.path.join(out, "loss.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


class StopSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM set ``.hit`` (and ``.signum``) instead of stopping the
    process; the loop saves and stops. A second signal while a checkpoint is written (inside
    ``critical()``) is held until the save is done; at any other moment it raises KeyboardInterrupt
    (stop now, without saving)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, log=None):
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.hit, self.signum, self.previous, self.saving = False, None, {}, False

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handler)
            except ValueError:          # not the main thread: leave signals alone
                pass
        return self

    def _handler(self, signum, frame):
        if not self.hit:
            self.hit, self.signum = True, signum
        elif self.saving:
            self.log("still saving the checkpoint; stopping as soon as it is written")
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self):
        """A section (a checkpoint save) that a second signal does not interrupt."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


class TrainingDiverged(TinyRNNError):
    """The loss (or the gradient norm) became NaN or infinite, or exploded while staying finite."""
    agreed = True       # MPI: every rank raises it at the same step (rank 0 alone reports it)


class Interrupted(TinyRNNError):
    """A second signal stopped the run before its checkpoint could be saved."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(signum):
    """The conventional exit status of a process stopped by ``signum``: 128 + its number (130, 143)."""
    return 128 + int(signum or signal.SIGINT)


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Train a task's model (or with ``resume=True`` continue the run in ``out``); ``run()`` returns a summary.

    task_class: a ``Task`` subclass, built by ``setup``. cfg: its config (a ``LoopConfig`` subclass).
    out: the run directory (default: ``default_out(cfg)``). explicit: the option names the user set.
    log: a function for messages (default: print to stderr). Raises TinyRNNError for bad input,
    TrainingDiverged when the loss becomes NaN/inf or explodes.
    """

    def __init__(self, task_class, cfg, out=None, resume=False, explicit=(), progress=True, log=None,
                 default_out=None, pace_rule=None, pace=None):
        self.task_class, self.cfg, self.out, self.resume = task_class, cfg, out, resume
        # a --time-limit run's rule, pace_rule(trainer, steps, **pace), once its pace is measured (see
        # _fit_to_budget); pace (JSON): its arguments while it has not run (a resumed run's come from its
        # checkpoint), None when there is nothing to check
        self.pace_rule, self.pace = pace_rule, (pace if pace_rule is not None else None)
        self.explicit, self.progress = explicit, progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.default_out = default_out
        self.lock, self.stop, self.metrics_file = None, None, None
        self.world = distributed.world()          # MPI hook: Single() (no MPI) unless started by mpirun
        if not self.world.is_root:
            self.log = lambda msg: None

    # ---- set-up ---------------------------------------------------------------------------------
    def setup(self):
        """Config (merged with the saved run when resuming), threads, device, task, optimizer, schedule,
        the saved state restored in memory - and only then the run directory (lock, metrics, step 0)."""
        saved = arrays = None
        if self.resume:
            self._lock_for_resume()
            self.cfg, saved, arrays = load_for_resume(self.cfg, self.out, self.explicit, self.task_class.family,
                                                      self.task_class.metric)
        cfg = self.cfg.validate()
        self.out = self.out or self.default_out(cfg)
        if not self.resume:
            self._check_fresh_out()
        self._set_threads(cfg)
        from .backend import use_device

        use_device(cfg.device)
        self.task = task = self.task_class(cfg, saved, self.log)
        self.world.check_task(task)                  # MPI hook: this rank's shard of every batch
        self.total = self._total_steps(cfg)
        if self.resume and self.total is not None and self.total < saved["step"]:
            raise TinyRNNError(f"the run in {self.out} is at step {saved['step']}, past the {self.total} steps asked "
                               f"for: give --steps {saved['step']} or more to continue it (nothing was changed)")
        self._build()
        self.step, self.state, self.best, self.history = 0, None, None, {}
        if self.resume:
            self._restore(saved, arrays, self._path("last"))
        self.model.train()
        self._prepare_directory()          # the first change to the run directory
        if self.resume and self.best is not None:
            self._rescore_best()
        if self.resume and self.total == self.step:     # a finished run: at most its final evaluation is left
            option = "--epochs" if cfg.epochs and not cfg.steps else "--steps"
            length = {"--steps": cfg.steps, "--epochs": cfg.epochs}[option]
            length = f"{option} {length:g}" if length else "the default length"
            self.log(f"note: the run has already trained its {self.total} steps ({length}); give a larger "
                     f"{option} to train it further")

    def _total_steps(self, cfg):
        """The steps the run trains: --steps, --epochs, or the default (None: until the time limit)."""
        total = cfg.steps or (math.ceil(cfg.epochs * self.task.steps_per_epoch) if cfg.epochs else None)
        return cfg.DEFAULT_STEPS if total is None and not cfg.time_limit else total

    def retarget(self, **changes):
        """Change the running run's config (``pace_rule``: e.g. ``epochs``, ``lr``; ``roll_back``: ``lr``):
        its total steps follow, and a new peak ``lr`` scales the schedule from this step on; the next
        checkpoint saves the new config, which a resumed run then keeps."""
        before = self.cfg.lr
        self.cfg = self.task.cfg = replace(self.cfg, **changes).validate()
        self.total = self.bar.total = self._total_steps(self.cfg)
        if self.cfg.lr != before:
            self.sched.scale(self.cfg.lr / before)

    def say(self, message):
        """A line for the user while the loop runs (above the progress bar on a terminal)."""
        (self.bar.write if self.bar.tty else self.log)(message)

    def _set_threads(self, cfg):
        threads = self.world.threads(cfg.threads)     # MPI hook: cores / local ranks unless --threads
        if threads:
            from . import set_num_threads

            try:
                set_num_threads(threads)
            except ValueError as e:
                raise TinyRNNError(f"--threads {threads} is out of range ({e}): use fewer threads") from None

    def _build(self):
        """The model, its optimizer and schedule (a model too big for memory is one line)."""
        from . import random

        random.manual_seed(self.cfg.seed)
        try:
            self.task.build_model()
        except MemoryError:
            raise TinyRNNError("the model does not fit in memory: use a smaller --hidden, --layers or "
                               "--embed") from None
        self.model = self.task.model
        self.model.to(self.cfg.device)            # before the optimizer: its buffers live where the parameters do
        self.params = self.model.parameters()
        self.opt = make_optimizer(self.cfg, self.params)
        self.sched = make_schedule(self.cfg, self.opt, self.total)

    def _lock_for_resume(self):
        if self.out is None:
            raise TinyRNNError("--resume needs --out DIR, the run to continue")
        if not checkpoint.exists(os.path.join(self.out, "last")):
            why = ("it has no checkpoint yet (it was stopped before its first save): start it again without --resume"
                   if os.path.isdir(self.out) else "no such run directory (start a run without --resume)")
            raise TinyRNNError(f"nothing to resume in {self.out}: {why}")
        if self.world.is_root:                    # MPI: rank 0 alone locks and writes
            self.lock = RunLock(self.out).acquire()

    def _check_fresh_out(self):
        """A fresh run's --out: a directory (or nothing yet) without a run in it, and not in use."""
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise TinyRNNError(f"--out {self.out} is a file, not a directory: choose another --out")
        if not self.world.is_root:                # MPI: rank 0 checks (and aborts the job if it fails)
            return
        if os.path.isdir(self.out):
            self.lock = RunLock(self.out).acquire()
        if checkpoint.exists(self._path("last")):
            raise TinyRNNError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")

    def _prepare_directory(self):
        """Create and lock the run directory, drop temp files a kill left, open metrics.jsonl (trimmed
        to the resumed step, or emptied), and give a fresh run its step-0 checkpoint."""
        if not self.world.is_root:                # MPI: only rank 0 touches the run directory
            self.metrics_file = open(os.devnull, "w", encoding="utf-8")
            if not self.resume:
                self.save("last")                 # takes part in the state gather of rank 0's step-0 save
            return
        try:
            os.makedirs(self.out, exist_ok=True)
        except OSError as e:
            raise TinyRNNError(checkpoint.os_error_line(e, "create the run directory", self.out)) from None
        self.lock = self.lock or RunLock(self.out).acquire()
        if not self.resume and checkpoint.exists(self._path("last")):      # another run started meanwhile
            raise TinyRNNError(f"{self.out} already holds a run: pass --resume to continue it, or choose another --out")
        checkpoint.clean_temp(self.out)
        if self.resume:
            self._trim_metrics()
            self.log(f"resuming {self.out} at step {self.step}")
            if self.saved_processes != self.world.size:              # MPI: resuming on another N is fine
                self.log(distributed.resume_note(self.saved_processes, self.world.size))
        else:
            self._open_metrics("w")
            self.save("last")

    def _open_metrics(self, mode):
        path = self._path("metrics.jsonl")
        try:
            self.metrics_file = open(path, mode, encoding="utf-8")
        except OSError as e:
            raise TinyRNNError(checkpoint.os_error_line(e, "write", path)) from None

    def _trim_metrics(self):
        """metrics.jsonl cut back to the rows up to this step (a resumed or rolled-back run logs on from
        there), then open to append. Rank 0 alone: the others write nowhere."""
        if not self.world.is_root:
            return
        if self.metrics_file is not None:
            self.metrics_file.close()
        path = self._path("metrics.jsonl")
        rows = [r for r in read_metrics(path) if isinstance(r, dict) and r.get("step", 0) <= self.step]
        try:
            checkpoint.atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        except OSError as e:
            raise TinyRNNError(checkpoint.os_error_line(e, "write", path)) from None
        self._open_metrics("a")

    def _restore(self, meta, arrays, stem):
        """The run saved in checkpoint ``stem``, checked and restored in memory (nothing on disk changes here)."""
        from . import random

        try:
            self.task.check_checkpoint(meta, arrays, stem)
            weights = checkpoint.model_arrays(arrays)
            runcheck.check_arrays(self.model, weights, stem)
            if set(meta["optimizer"]["hyper"]) != set(self.opt.hyper()):
                raise runcheck.damaged(stem, f"optimizer.hyper has {sorted(meta['optimizer']['hyper'])}, "
                                             f"{self.cfg.optimizer} needs {sorted(self.opt.hyper())}")
            self.model.load_state_dict(weights)
            self.opt.load_state_dict(checkpoint.unpack(meta["optimizer"], arrays))
            # keep the (new) length: a longer --steps stretches the schedule
            self.sched.load_state_dict({**self.sched.state_dict(), "t": meta["schedule"]["t"]})
            random.set_state(meta["rng"])
            state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
            self.state = state_from_arrays(self.world.scatter_state(state))   # MPI hook: this rank's rows
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
            raise runcheck.damaged(stem, f"{type(e).__name__}: {e}") from None
        self.step = int(meta["step"])
        self.history = meta["metrics"]
        self.best = self.history.get("best")
        self.saved_processes = meta.get("processes", 1)
        self.pace = self._saved_pace(meta.get("pace"), stem)

    def _saved_pace(self, pace, stem):
        """A resumed run's pace check not yet run (killed in its first seconds): its saved arguments,
        unless the run has no such rule here or the user now sets its length (--steps, --epochs)."""
        if pace is None or self.pace_rule is None or {"steps", "epochs"} & set(self.explicit):
            return None
        try:
            inspect.signature(self.pace_rule).bind(self, 0, **pace)
        except TypeError as e:
            raise runcheck.damaged(stem, f"pace: {e}") from None
        return pace

    def _path(self, name):
        return os.path.join(self.out, name)

    # ---- one training step ------------------------------------------------------------------------
    def train_step(self):
        """One update: batch, loss, backward, clip, optimizer and schedule step -> (loss in nats, units)."""
        from . import optim

        batch, new_epoch = self.task.batch(self.step)
        if new_epoch:
            self.state = None
        loss, new_state = self.task.loss(batch, self.state)
        value, units = float(loss.item()), self.task.units(batch)
        norm = 0.0
        if math.isfinite(value):
            self.model.zero_grad()
            loss.backward()
        # MPI hook: one allreduce -> every rank holds the global mean gradient and loss (no-op alone)
        value, units = self.world.average_gradients(self.params, value, units)
        if math.isfinite(value):
            norm = optim.clip_grad_norm(self.params, self.cfg.clip) if self.cfg.clip > 0 else 0.0
        if not (math.isfinite(value) and math.isfinite(norm)):
            self._diverged(value, norm)
        self.opt.step()
        self.sched.step()
        self.state = detach_state(new_state)
        self.step += 1
        self.updates += 1          # in this process: the pace (``step`` goes back with a roll-back)
        return value, units

    def _diverged(self, value, norm):
        what = f"loss became {value}" if not math.isfinite(value) else f"the gradient norm became {norm}"
        if all(np.isfinite(p.numpy()).all() for p in self.params):   # the weights before this update are fine
            self.save("last")
        raise TrainingDiverged(f"{what} at step {self.step + 1}; stopped, {self._last_good()}. "
                               f"Try a lower --lr (was {self.cfg.lr:g}) or --clip")

    def _last_good(self):
        last = self._path("last")
        try:
            step = checkpoint.load(last)[0]["step"]
        except TinyRNNError:
            return "no checkpoint was saved"
        return f"the last good checkpoint is {last} (step {step})"

    def check_rise(self, mean_nats):
        """Track the lowest logged window; go back to ``best`` when the loss has climbed away from it
        (``roll_back``; see the module docstring). True when it went back. The lowest window and the
        count of risen windows in a row are kept in the history, which checkpoints save: a resumed run
        goes on counting."""
        scale = self.task.loss_scale
        lowest = self.history.get("lowest_train_loss")
        lowest = mean_nats if lowest is None else min(lowest / scale, mean_nats)
        self.history["lowest_train_loss"] = lowest * scale
        risen = mean_nats > RISE_FACTOR * lowest and mean_nats > lowest + RISE_NATS
        rises = self.history["rise_windows"] = self.history.get("rise_windows", 0) + 1 if risen else 0
        if rises < RISE_WINDOWS:
            return False
        self.roll_back(f"the training loss rose to {mean_nats * scale:.4g} {self.task.loss_unit} at step "
                       f"{self.step}, from {lowest * scale:.4g} at its lowest")
        return True

    def roll_back(self, what):
        """Continue from the ``best`` checkpoint with the learning rate halved (what: why, for the line
        that says so), or stop when there is no ``best`` or the run has rolled back ROLLBACKS times."""
        done, from_step, stem = self.history.get("rollbacks", 0), self.step, self._path("best")
        if self.best is None:
            raise TrainingDiverged(f"{what}; stopped with no best checkpoint to go back to: {self._last_good()}. "
                                   f"Try a lower --lr (was {self.cfg.lr:g}) or --clip")
        if done >= ROLLBACKS:
            raise TrainingDiverged(f"{what}; stopped after {done} roll-backs: the best checkpoint is {stem} (step "
                                   f"{self.best['step']}). Try an --lr below {self.cfg.lr:g}, where it rose last, "
                                   "or a lower --clip")
        try:
            meta, arrays = checkpoint.load(stem)       # every rank reads it, as a resume reads ``last``
            self._restore(meta, arrays, stem)          # the weights, optimizer, step, data position, history
        except TinyRNNError as e:
            raise TrainingDiverged(f"{what}; stopped: cannot go back to the best checkpoint ({e})") from None
        self.retarget(lr=self.cfg.lr / 2)
        self.history["rollbacks"], self.history["rise_windows"] = done + 1, 0
        self._trim_metrics()
        self.record({"step": self.step, "rolled_back_from": from_step, "new_lr": self.cfg.lr})
        self.say(f"{what}: back to the best checkpoint (step {self.step}) with the learning rate halved to "
                 f"{self.cfg.lr:g} (roll-back {done + 1} of at most {ROLLBACKS})")
        self.save("last")

    def check_explosion(self, mean_nats):
        """Stop when the training loss stays far above a uniform guess (see the module docstring)."""
        uniform = self.task.uniform_loss()
        if uniform is None:
            return
        limit = 2 * uniform + 1
        high = self.history.get("explode_windows", 0) + 1 if mean_nats > limit else 0
        self.history["explode_windows"] = high        # in the checkpoint: a resumed run goes on counting
        if high >= EXPLODE_WINDOWS:
            scale = self.task.loss_scale
            raise TrainingDiverged(
                f"the training loss exploded: {mean_nats * scale:.4g} {self.task.loss_unit} at step {self.step}, "
                f"above {limit * scale:.3g} (a uniform guess costs {uniform * scale:.3g}) for {EXPLODE_WINDOWS} "
                f"log windows in a row; stopped, checkpoints in {self.out} are from before. "
                f"Try a lower --lr (was {self.cfg.lr:g}) or --clip")

    # ---- evaluation and checkpoints -----------------------------------------------------------------
    def evaluate(self):
        """Score the held-out data, log it, and save ``best`` when it improved."""
        metric = self.task.metric
        value = self.world.from_root(self.task.evaluate)    # MPI hook: rank 0 evaluates, every rank knows
        self.record({"step": self.step, metric: round(value, 5)})
        self.history[metric] = value
        if self.best is None or (value > self.best[metric] if self.task.higher_is_better
                                 else value < self.best[metric]):
            self.best = {metric: value, "step": self.step, "scored_on": self.task.scoring()}
            self.history["best"] = self.best
            self.save("best")
        return value

    def _rescore_best(self):
        """A resumed run's best score, when it was scored on other held-out data than ``evaluate``
        scores now (an older tinyrnn, or another ``eval_chars``): score the ``best`` checkpoint again,
        so that the run's validations compare like with like. Nothing is written here: the next save
        carries the new score. A ``best`` that cannot be read is left for the next validation to replace."""
        task, metric, old = self.task, self.task.metric, self.best
        old_scoring, scoring = task.saved_scoring(old), task.scoring()
        if old_scoring == scoring or not task.has_eval:
            return
        value = self.world.from_root(self._score_saved_best)     # MPI hook: rank 0 reads and scores it
        if not math.isfinite(value):
            self.best = None
            self.history.pop("best", None)
            return
        self.best = self.history["best"] = {metric: value, "step": old["step"], "scored_on": scoring}
        if abs(value - old[metric]) <= 1e-6 * max(1.0, abs(old[metric])):
            return                                   # it was scored this way after all (saved unmarked)
        self.log(f"best (step {old['step']}) rescored on {scoring}: {task.short_metric.format(value)} "
                 f"(it was {task.short_metric.format(old[metric])} on {old_scoring})")

    def _score_saved_best(self):
        """The metric of the ``best`` checkpoint's weights (the model's own put back after), or NaN
        with a warning when it cannot be read."""
        stem = self._path("best")
        try:
            weights = checkpoint.model_arrays(checkpoint.load(stem)[1])
            runcheck.check_arrays(self.model, weights, stem)
        except TinyRNNError as e:
            self.log(f"warning: cannot rescore the best checkpoint ({e}); the next validation sets a new best")
            return float("nan")
        trained = self.model.state_dict()
        self.model.load_state_dict(weights)
        try:
            return self.task.evaluate()
        finally:
            self.model.load_state_dict(trained)

    def save(self, name):
        """Write the ``name`` checkpoint (``last`` or ``best``) of the run as it is now (a second signal
        during the save waits for it)."""
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        state = self.world.gather_state(state_arrays(self.state))    # MPI hook: the whole batch's state
        if not self.world.is_root:                                   # MPI: rank 0 alone writes
            return
        arrays.update({f"state/{k}": v for k, v in state.items()})
        meta = {"family": self.task.family, **self.task.checkpoint_meta(), "step": self.step,
                "processes": self.world.size, "train_config": self.cfg.to_json(),
                "optimizer": checkpoint.pack(self.opt.state_dict(), arrays, "optim"),
                "schedule": self.sched.state_dict(), "rng": _rng_state(), "metrics": self.history}
        if self.pace is not None:                   # the budget's pace not yet checked: a resume checks it
            meta["pace"] = self.pace
        with self.stop.critical() if self.stop is not None else contextlib.nullcontext():
            checkpoint.save(self._path(name), arrays, meta)

    def record(self, row):
        """Append one row to metrics.jsonl."""
        try:
            self.metrics_file.write(json.dumps(row) + "\n")
            self.metrics_file.flush()
        except OSError as e:
            raise TinyRNNError(checkpoint.os_error_line(e, "write", self._path("metrics.jsonl"))) from None

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self):
        """Set up and train; the summary dict (see ``summary``)."""
        with self.world.guard():          # MPI hook: a rank that raises aborts the job, naming itself
            return self._run()

    def _run(self):
        try:
            self.setup()
            return self._loop()
        finally:
            if self.metrics_file is not None:
                self.metrics_file.close()
            if self.lock is not None:
                self.lock.release()

    def _loop(self):
        from .backend import compile_notice, precompile
        from .progress import Progress

        cfg, task = self.cfg, self.task
        self.bar = Progress(total=self.total, time_limit=cfg.time_limit, enabled=self.progress and self.world.is_root,
                            unit=task.unit)
        start_step, self.t_start, self._first_window, self.updates = self.step, time.perf_counter(), None, 0
        window = _Window(self.t_start)
        rate, self.stopped = None, "done"
        try:
            with StopSignal(self.say) as self.stop, \
                    compile_notice(self.bar.write if self.bar.tty else None):
                try:
                    # a cold cache's kernels, in parallel processes (MPI hook: once a machine)
                    self.world.precompile(lambda: precompile(task.kernel_workload()))
                    while self.total is None or self.step < self.total:
                        window.add(self.history, *self.train_step())
                        rolled_back = False
                        if self.step % cfg.log_every == 0 or self.step == self.total:
                            self.history["train_loss"], rate = window.flush(self, task)
                            self.check_explosion(self.history["train_loss"] / task.loss_scale)
                            rolled_back = self.check_rise(self.history["train_loss"] / task.loss_scale)
                            if cfg.time_limit:
                                self._fit_to_budget(time.perf_counter() - self.t_start)
                        if task.has_eval and self.step % cfg.eval_every == 0 and not rolled_back:
                            self.evaluate()
                        if self.step % cfg.save_every == 0 and not rolled_back:
                            self.save("last")
                        elapsed = time.perf_counter() - self.t_start
                        value = self.history.get(task.metric)
                        self.bar.update(self.step, loss=self.history.get("train_loss"),
                                        metric=None if value is None else task.short_metric.format(value),
                                        rate=rate, eta=self.bar.eta(self.step, elapsed, start_step))
                        # MPI: stop together. A signal can land while the ranks agree (its handler even
                        # runs inside the allreduce): it is never dropped, it is agreed on next step.
                        stop, elapsed = self.world.agree(self.stop.hit, elapsed)
                        if stop:
                            self.stop.hit = True
                            self.stopped = "interrupted"
                            break
                        if cfg.time_limit and elapsed >= cfg.time_limit:
                            self.stopped = "time limit"
                            break
                    self._finish()
                except KeyboardInterrupt:
                    raise Interrupted(f"interrupted again at step {self.step}: stopped without saving; "
                                      f"{self._last_good()} (continue with: tinyrnn train --resume --out {self.out})",
                                      exit_code_for(self.stop.signum)) from None
        finally:
            self.bar.close()
        self.signum = self.stop.signum
        return self.summary(time.perf_counter() - self.t_start, window.total_units)

    def _fit_to_budget(self, elapsed):
        """The schedule's horizon from the step rate (its first log window, which pays for compiling
        the kernels, left out; under MPI rank 0's clock) and the seconds left (see
        ``fit_schedule_to_budget``). The first time the pace is known, ``pace_rule(trainer, steps,
        **pace)`` is told how many steps the whole budget is foreseen to train, and may ``retarget`` the
        run; a run it changed saves ``last`` at once, so a kill cannot take the change back."""
        if self._first_window is None:
            self._first_window = (self.updates, elapsed)
            return
        left = self.world.from_root(lambda: self._steps_left(elapsed))   # MPI: one clock, the same schedule
        if math.isnan(left):
            return
        pace, before = self.pace, self.cfg
        if pace is not None:
            self.pace = None
            self.pace_rule(self, self.step + left, **pace)
        fit_schedule_to_budget(self.sched, self.step, self.total, self.cfg.warmup, left)
        if self.cfg is not before:
            self.save("last")

    def _steps_left(self, elapsed):
        """The steps the seconds left allow at the pace since the first log window (NaN: unknown)."""
        steps, seconds = self.updates - self._first_window[0], elapsed - self._first_window[1]
        if steps <= 0 or seconds <= 0:
            return float("nan")
        return (self.cfg.time_limit - elapsed) * steps / seconds

    def _finish(self):
        """The final evaluation (unless the last step just made one, or a signal asked to stop now) and
        the last checkpoint."""
        if self.stopped != "interrupted" and self.task.has_eval and (
                self.step % self.cfg.eval_every != 0 or self.task.metric not in self.history):
            self.evaluate()
        self.save("last")

    def summary(self, elapsed, units):
        """A dict describing the run, with ``line``: the one-line report the CLI prints."""
        from .progress import format_duration, format_rate

        task, metric = self.task, self.task.metric
        speed = units / max(elapsed, 1e-9)
        last_loss = self.history.get("train_loss")
        summary = {"out": self.out, "step": self.step, "stopped": self.stopped, metric: self.history.get(metric),
                   "best": self.best, "train_loss": last_loss, "seconds": elapsed, f"{task.unit}_per_s": speed,
                   "plot": plot_metrics(self.out, task.loss_name, metric) if self.world.is_root else None,
                   "root": self.world.is_root,
                   "exit_code": exit_code_for(self.signum) if self.stopped == "interrupted" else 0}
        total = f"/{self.total}" if self.total else ""
        summary["line"] = (f"{self.stopped}: step {self.step}{total} in {format_duration(elapsed)} "
                           f"({format_rate(speed)} {task.unit}/s); {task.describe(summary[metric], self.best)}; "
                           f"checkpoints in {self.out}")
        return summary


class _Window:
    """Training loss and speed over the steps since the last log line (and units over the whole run).

    The loss summed so far and its steps are kept in the trainer's history (``window_loss`` in nats,
    ``window_steps``), which every checkpoint saves: a run stopped in the middle of a window (Ctrl-C,
    the time limit) and resumed, or rolled back to a ``best`` saved mid-window, logs the window's mean
    over the same steps as a straight run. The speed is this process's own (units since it started)."""

    def __init__(self, t0):
        self.units, self.t0, self.total_units = 0, t0, 0

    def add(self, history, loss, units):
        history["window_loss"] = history.get("window_loss", 0.0) + loss
        history["window_steps"] = history.get("window_steps", 0) + 1
        self.units, self.total_units = self.units + units, self.total_units + units

    def flush(self, trainer, task):
        """Log the window to metrics.jsonl -> (mean loss as logged, units per second); start a new window."""
        now, history = time.perf_counter(), trainer.history
        rate = self.units / max(now - self.t0, 1e-9)
        mean = history["window_loss"] / history["window_steps"] * task.loss_scale
        trainer.record({"step": trainer.step, task.loss_name: round(mean, 5),
                        "lr": trainer.opt.lr, f"{task.unit}_per_s": round(rate, 1),
                        "time": round(now - trainer.t_start, 3)})
        history["window_loss"], history["window_steps"], self.units, self.t0 = 0.0, 0, 0, now
        return mean, rate


def _rng_state():
    from . import random

    return random.get_state()
