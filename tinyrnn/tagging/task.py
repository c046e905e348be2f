"""Training a tagger: what ``tinyrnn tag train`` runs, usable from Python.

    from tinyrnn.tagging.task import TagConfig, train_tagger
    summary = train_tagger(TagConfig(train="en_ewt-ud-train.conllu", dev="en_ewt-ud-dev.conllu"), out="runs/pos")
    print(summary["dev_accuracy"])

The loop (optimizer, schedule, budget, progress, metrics.jsonl, best/last checkpoints, Ctrl-C,
exact resume) is the shared ``tinyrnn.trainer.Trainer``; this module is the tagger's ``Task``:
the treebank, the batches, the model and its loss, dev accuracy. One step:

    batch k of epoch e: sentences of similar length (``batch.epoch_batches(lengths, B, seed, e)``),
    word dropout drawn from a generator seeded by (seed, step)     -> a pure function of (seed, step)
    loss = model.loss(batch)      mean over the batch's real tokens (the Trainer: backward, clip, step)

Defaults (``TagConfig``), the usual ones for a BiLSTM POS tagger (Plank et al. 2016; Lample et
al. 2016; Dozat et al. 2017): word embeddings 100 (lower-cased, trained from scratch), character
embeddings 50 into a 1-layer char BiLSTM of 50 per direction, a 2-layer sentence BiLSTM of 128
per direction, dropout 0.33, word dropout alpha 0.25, Adam at lr 2e-3 (50 warm-up steps, cosine
to lr/10), clip 5, 32 sentences per batch, 20 epochs (Plank et al.); no CRF (for POS it adds little; use --crf
for BIO tags such as named entities).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import TinyRNNError
from ..distributed import rows
from ..trainer import LoopConfig, Task, Trainer
from . import conll
from .batch import TaggerVocabs, encode_batch, epoch_batches
from .vocab import Vocab, build_char_vocab, build_tag_vocab, build_word_vocab


@dataclass
class TagConfig(LoopConfig):
    train: str | None = None           # CoNLL-U or two-column file
    dev: str | None = None             # held out: dev accuracy picks the best checkpoint
    column: str = "upos"               # CoNLL-U tag column: upos or xpos
    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 128                  # per direction
    word_dim: int = 100
    char_dim: int = 50
    char_hidden: int = 50              # per direction; 0: no character features
    dropout: float = 0.33
    crf: bool = False
    # training
    word_dropout: float = 0.25
    batch_size: int = 32               # sentences
    lr: float = 2e-3
    epochs: float | None = 20.0        # --steps takes precedence; --time-limit may stop it earlier

    PATH_FIELDS: ClassVar[tuple] = ("train", "dev")
    POSITIVE: ClassVar[tuple] = LoopConfig.POSITIVE + ("layers", "hidden", "batch_size")

    def validate(self):
        from .model import _check_args

        super().validate()
        if self.column not in conll.TAG_COLUMNS:
            raise TinyRNNError(f"unknown --column {self.column!r}: use upos or xpos")
        _check_args(self.cell, self.cell, self.layers, self.hidden, self.word_dim, self.char_dim,
                    self.char_hidden, self.dropout)
        if not self.word_dropout >= 0:
            raise TinyRNNError(f"--word-dropout must be >= 0, got {self.word_dropout}")
        if self.device != "cpu":
            raise TinyRNNError("the tagger trains on the CPU only for now: drop --device")
        return self


def default_out_dir(cfg, root="runs"):
    """runs/<train file name>-tagger, with -2, -3... appended if that already exists."""
    name = os.path.splitext(os.path.basename(cfg.train or "tagger"))[0] + "-tagger"
    path, k = os.path.join(root, name), 2
    while os.path.exists(path):
        path, k = os.path.join(root, f"{name}-{k}"), k + 1
    return path


def build_vocabs(sentences) -> TaggerVocabs:
    """Vocabularies of a training set: every (lower-cased) word, every character, every tag."""
    words = [s.words for s in sentences]
    return TaggerVocabs(build_word_vocab(words, lower=True), build_char_vocab(words),
                        build_tag_vocab(s.tags for s in sentences))


class TaggerTask(Task):
    """A tagger on a treebank: length-bucketed batches of sentences, per-token loss, dev accuracy."""

    family, unit, metric, higher_is_better = "tagger", "tokens", "dev_accuracy", True
    loss_name, loss_scale, loss_unit, short_metric = "loss", 1.0, "nats/token", "dev {:.2%}"
    shardable = True             # MPI: batch() reads only this rank's sentences (see distributed.py)

    def __init__(self, cfg, saved, log):
        if cfg.train is None:
            raise TinyRNNError("no training file: give TRAIN, a CoNLL-U or two-column file with tags")
        self.cfg, self.log = cfg, log
        self.format, self.train = conll.read_any(cfg.train, column=cfg.column)
        self.dev = conll.read_any(cfg.dev, column=cfg.column)[1] if cfg.dev else None
        self.vocabs = build_vocabs(self.train)
        if saved is not None:               # resuming: the model's own vocabularies, which must match
            stored = TaggerVocabs(*(Vocab.from_json(saved["vocab"][k]) for k in TaggerVocabs._fields))
            if stored != self.vocabs:
                raise TinyRNNError(f"{cfg.train} is not the file the run in progress was trained on (its words "
                                   "or tags differ): resume with the original file, or start a new run")
            self.vocabs = stored
        self.lengths = np.array([len(s) for s in self.train])
        self.steps_per_epoch = math.ceil(len(self.train) / cfg.batch_size)
        self.has_eval = self.dev is not None
        self._plan = (None, None)           # (epoch, its batches): the epoch being trained

    def kernel_workload(self):
        from ..kernels.precompile import workload

        return workload("tagger", self.cfg.cell)

    def build_model(self):
        from .model import Tagger

        c = self.cfg
        self.model = Tagger(self.vocabs, c.cell, c.layers, c.hidden, c.word_dim, c.char_dim, c.char_hidden,
                            c.dropout, c.crf)

    def batch(self, step):
        """Batch number ``step``: a pure function of (seed, step), so resuming rebuilds it exactly."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._plan[0] != epoch:
            self._plan = (epoch, epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch))
        chosen = [self.train[i] for i in self._plan[1][k]]
        if len(chosen) >= self.shard[1]:        # MPI hook: this rank's sentences (a batch smaller than the
            chosen = chosen[rows(len(chosen), *self.shard)]   # number of ranks is run whole by each)
        rng = np.random.default_rng([self.cfg.seed, step, 1])
        return encode_batch(self.vocabs, [s.words for s in chosen], [s.tags for s in chosen],
                            self.cfg.word_dropout, rng), k == 0

    def loss(self, batch, state):
        return self.model.loss(batch), None

    def units(self, batch):
        return batch.tokens

    def evaluate(self):
        """Token accuracy on the dev set (a gold tag the model never saw counts as an error)."""
        predicted = self.model.predict(self.dev)
        right = sum(p == g for s, tags in zip(self.dev, predicted) for p, g in zip(tags, s.tags))
        return right / sum(len(s) for s in self.dev)

    def checkpoint_meta(self):
        data = {"train": os.path.abspath(self.cfg.train), "format": self.format, "sentences": len(self.train),
                "tokens": int(self.lengths.sum()), "max_length": int(self.lengths.max()),
                "dev": self.cfg.dev and os.path.abspath(self.cfg.dev)}
        return {"model": self.model.config(), "column": self.cfg.column, "data": data,
                "vocab": {k: v.to_json() for k, v in self.vocabs._asdict().items()}}

    def describe(self, value, best):
        if value is None:
            return "no dev set (give --dev to measure accuracy)"
        text = f"dev accuracy {value:.2%}"
        if best is not None:
            text += f" (best {best['dev_accuracy']:.2%} at step {best['step']})"
        return text


def train_tagger(cfg=None, out=None, resume=False, explicit=(), progress=True, log=None):
    """Train (or with ``resume=True`` continue) a tagger; returns the Trainer's summary dict.

    out: the run directory (default: a fresh ``runs/<train>-tagger``). explicit: the option names
    the user set (when resuming, these must agree with the saved run unless they are resumable).
    """
    trainer = Trainer(TaggerTask, cfg or TagConfig(), out=out, resume=resume, explicit=explicit,
                      progress=progress, log=log, default_out=default_out_dir)
    return trainer.run()
