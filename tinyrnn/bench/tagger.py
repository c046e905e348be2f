"""The tagger rows (issue 11): training and tagging tokens/s of the default ``Tagger``, and the same
model written in PyTorch, each measured in its own worker process (see ``workers.py``).

    training   tokens/s of one step (forward, backward, clip 5, Adam 2e-3) on batches of 32 sentences
    predict    tokens/s of ``Tagger.predict`` (batches of at most 256 sentences and 4,096 padded words)
               over ~25,000 tokens, in process;
               PyTorch's batched inference of the same model over the same sentences, for scale
    end to end tokens/s of the real ``tinyrnn tag predict RUN FILE`` in a fresh process on a
               synthetic CoNLL-U file of that size (start-up, loading, reading, tagging, writing)

The data: a synthetic treebank shaped like UD English EWT (12,543 training sentences; lengths
lognormal, mean ~16 tokens, clipped to [1, 80]; words of 1-12 characters from a vocabulary of
20,000 forms over 100 characters, drawn Zipf-like; 17 tags), from a seeded generator, so every
run measures the same batches; or, with ``--tagger-data PATH``, a real CoNLL-U file. Training
batches are cut the way ``tinyrnn tag train`` cuts them (``batch.epoch_batches``: similar lengths
together, then shuffled), with word dropout 0.25, encoded once before timing (encoding is the
same numpy code for both frameworks); both frameworks get the same batches, in the same order.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .configs import cli_module, median, thread_env

# EWT-like shapes
TRAIN_SENTENCES = 12543
PREDICT_TOKENS = 25000        # EWT dev: 25,148 tokens
WORDS, CHARS, TAGS = 20000, 100, 17
BATCH, PREDICT_BATCH = 32, 256
DEFAULT_STEPS = 10
ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            ".,;:!?'\"()[]{}<>-_/\\@#$%&*+=~^|`" + "éèàçöüñßøåæ")[:CHARS]
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X"]


# ---- data ----------------------------------------------------------------------------------------
def sentence_lengths(n, rng):
    """n sentence lengths like EWT's: lognormal (mean ~16, long tail), clipped to [1, 80]."""
    return np.clip(np.rint(rng.lognormal(2.55, 0.65, n)), 1, 80).astype(np.int64)


def synthetic_sentences(n_sentences=None, n_tokens=None, seed=0):
    """Sentences (``conll.Sentence`` with tags) of a fixed synthetic treebank: n_sentences of them,
    or as many as reach n_tokens."""
    from tinyrnn.tagging.conll import Sentence

    rng = np.random.default_rng(seed)
    forms_rng = np.random.default_rng(12345)            # the same 20,000 forms in every set
    form_lengths = forms_rng.integers(1, 13, WORDS)
    letters = np.array(list(ALPHABET))
    forms = ["".join(letters[forms_rng.integers(0, CHARS, k)]) for k in form_lengths]
    rank_p = 1.0 / np.arange(1, WORDS + 1)               # Zipf: frequent words recur, as in text
    rank_p /= rank_p.sum()
    if n_sentences is None:
        lengths = sentence_lengths(max(8, 4 * n_tokens // 16), rng)
        cut = int(np.searchsorted(np.cumsum(lengths), n_tokens)) + 1
        lengths = lengths[:cut]
    else:
        lengths = sentence_lengths(n_sentences, rng)
    word_ids = rng.choice(WORDS, size=int(lengths.sum()), p=rank_p)
    tag_ids = rng.integers(0, TAGS, size=int(lengths.sum()))
    out, at = [], 0
    for n in lengths.tolist():
        out.append(Sentence([forms[i] for i in word_ids[at:at + n]], [UPOS[t] for t in tag_ids[at:at + n]]))
        at += n
    return out


def corpus(data, seed=0):
    """(training sentences, sentences to tag): ``data`` a CoNLL-U path, or None for the synthetic set."""
    if data:
        from tinyrnn.tagging import conll

        sentences = conll.read_any(data, column="upos")[1]
        tokens, held = 0, []
        for s in sentences:                      # the first ~25,000 tokens are tagged, all of it trains
            if tokens >= PREDICT_TOKENS:
                break
            held.append(s)
            tokens += len(s)
        return sentences, held
    return synthetic_sentences(TRAIN_SENTENCES, seed=seed), synthetic_sentences(n_tokens=PREDICT_TOKENS, seed=seed + 1)


def training_batches(vocabs, sentences, count, seed=0):
    """``count`` encoded batches of ``BATCH`` sentences, cut as ``tinyrnn tag train`` cuts them."""
    from tinyrnn.tagging.batch import encode_batch, epoch_batches

    rng = np.random.default_rng(seed)
    lengths = [len(s) for s in sentences]
    plan = []
    epoch = 0
    while len(plan) < count:
        plan += epoch_batches(lengths, BATCH, seed, epoch)
        epoch += 1
    out = []
    for rows in plan[:count]:
        chosen = [sentences[i] for i in rows]
        out.append(encode_batch(vocabs, [s.words for s in chosen], [s.tags for s in chosen], alpha=0.25, rng=rng))
    return out


def build_vocabs(sentences):
    from tinyrnn.tagging.task import build_vocabs as build

    return build(sentences)


# ---- tinyrnn -------------------------------------------------------------------------------------
def tinyrnn_tagger(vocabs):
    from tinyrnn import manual_seed
    from tinyrnn.tagging.model import Tagger

    manual_seed(0)
    return Tagger(vocabs)            # the defaults of tinyrnn tag train


def tinyrnn_train_step_fn(vocabs):
    from tinyrnn import optim

    from .training import tinyrnn_update

    model = tinyrnn_tagger(vocabs)
    model.train()
    opt = optim.Adam(model.parameters(), lr=2e-3)

    def step(batch):
        return tinyrnn_update(model, opt, model.loss(batch), clip=5.0)

    return step


def tinyrnn_predict_fn(vocabs):
    model = tinyrnn_tagger(vocabs)
    return lambda sentences: model.predict(sentences, PREDICT_BATCH)


# ---- PyTorch -------------------------------------------------------------------------------------
def torch_tagger(vocabs):
    """The default Tagger in PyTorch: same sizes, packed sequences for the char and sentence BiLSTMs."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class TorchTagger(nn.Module):
        def __init__(self, words, chars, tags, word_dim=100, char_dim=50, char_hidden=50, hidden=128, layers=2,
                     dropout=0.33):
            super().__init__()
            self.char_hidden = char_hidden
            self.word_embed = nn.Embedding(words, word_dim)
            self.char_embed = nn.Embedding(chars, char_dim)
            self.char_rnn = nn.LSTM(char_dim, char_hidden, 1, bidirectional=True)
            self.drop = nn.Dropout(dropout)
            self.rnn = nn.LSTM(word_dim + 2 * char_hidden, hidden, layers, dropout=dropout, bidirectional=True)
            self.head = nn.Linear(2 * hidden, tags)

        def char_vectors(self, chars, char_lengths):
            packed = pack_padded_sequence(self.char_embed(chars), char_lengths, enforce_sorted=False)
            _, (h_n, _) = self.char_rnn(packed)                                  # (2, U, char_hidden)
            return torch.cat([h_n[0], h_n[1]], dim=1)

        def forward(self, words, lengths, word_index, chars=None, char_lengths=None, table=None):
            vectors = table if table is not None else self.char_vectors(chars, char_lengths)
            x = torch.cat([self.word_embed(words), vectors[word_index]], dim=2)
            packed = pack_padded_sequence(self.drop(x), lengths, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=words.shape[0])
            return self.head(self.drop(out))

    torch.manual_seed(0)
    return TorchTagger(len(vocabs.words), len(vocabs.chars), len(vocabs.tags))


def _torch_batch(batch):
    import torch

    t = torch.from_numpy
    return dict(words=t(batch.words), lengths=t(batch.lengths), word_index=t(batch.word_index),
                chars=None if batch.chars is None else t(batch.chars),
                char_lengths=None if batch.char_lengths is None else t(batch.char_lengths))


def torch_train_step_fn(vocabs):
    import torch

    model = torch_tagger(vocabs)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)

    def step(batch):
        emissions = model(**_torch_batch(batch))
        K = emissions.shape[2]
        loss = torch.nn.functional.cross_entropy(emissions.reshape(-1, K), torch.from_numpy(batch.tags).reshape(-1),
                                                 ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return loss.item()

    return step


def torch_predict_fn(vocabs):
    """Batched inference as ``Tagger.predict`` does it: one char vector per distinct form (chunks of
    2,048 forms of similar length), batches of 256 sentences of similar length, argmax per token."""
    import torch

    from tinyrnn.tagging.batch import encode_batch, encode_forms

    model = torch_tagger(vocabs)
    model.eval()

    def predict(sentences):
        sentences = [getattr(s, "words", s) for s in sentences]
        results = [None] * len(sentences)
        order = np.argsort([len(s) for s in sentences], kind="stable").tolist()
        with torch.no_grad():
            forms = {w: k for k, w in enumerate(dict.fromkeys(w for s in sentences for w in s))}
            listed = list(forms)
            table = torch.zeros((len(listed), 2 * model.char_hidden))
            by_length = np.argsort([len(w) for w in listed], kind="stable")
            for start in range(0, len(by_length), 2048):
                rows = by_length[start:start + 2048]
                chars, lengths = encode_forms([listed[i] for i in rows], vocabs.chars)
                table[torch.from_numpy(rows)] = model.char_vectors(torch.from_numpy(chars), torch.from_numpy(lengths))
            for start in range(0, len(order), PREDICT_BATCH):
                chunk = order[start:start + PREDICT_BATCH]
                batch = encode_batch(vocabs, [sentences[i] for i in chunk], forms=forms)
                best = model(**_torch_batch(batch), table=table).argmax(dim=2).numpy()
                for b, (i, n) in enumerate(zip(chunk, batch.lengths.tolist())):
                    results[i] = vocabs.tags.decode(best[:n, b])
        return results

    return predict


# ---- measurements (inside a worker) --------------------------------------------------------------
def train_rate(framework, steps=0, data=None, warmup=2) -> float:
    """Training tokens/s: the tokens of ``steps`` batches / the seconds of their steps."""
    steps = steps or DEFAULT_STEPS
    train, _ = corpus(data)
    vocabs = build_vocabs(train)
    batches = training_batches(vocabs, train, warmup + steps)
    step = (tinyrnn_train_step_fn if framework == "tinyrnn" else torch_train_step_fn)(vocabs)
    for batch in batches[:warmup]:
        step(batch)
    timed = batches[warmup:]
    t0 = time.perf_counter()
    for batch in timed:
        step(batch)
    return sum(b.tokens for b in timed) / (time.perf_counter() - t0)


def predict_rate(framework, data=None, tokens=0) -> float:
    """Batched tagging tokens/s in process (after one untimed pass over a small part, to warm up)."""
    train, held = corpus(data)
    if tokens:
        held = synthetic_sentences(n_tokens=tokens, seed=1) if not data else held[:max(1, tokens // 16)]
    vocabs = build_vocabs(train)
    predict = (tinyrnn_predict_fn if framework == "tinyrnn" else torch_predict_fn)(vocabs)
    predict(held[:64])
    t0 = time.perf_counter()
    predict(held)
    return sum(len(s) for s in held) / (time.perf_counter() - t0)


def prepare_predict_files(directory, data=None, tokens=0):
    """A tagger checkpoint of the default size with random weights (``directory``/run) and a
    CoNLL-U file to tag (``directory``/input.conllu); returns its number of tokens."""
    from tinyrnn import checkpoint

    train, held = corpus(data)
    if tokens:
        held = synthetic_sentences(n_tokens=tokens, seed=1) if not data else held[:max(1, tokens // 16)]
    vocabs = build_vocabs(train)
    model = tinyrnn_tagger(vocabs)
    meta = {"family": "tagger", "model": model.config(), "column": "upos", "step": 0,
            "data": {"max_length": max(len(s) for s in train)},
            "vocab": {k: v.to_json() for k, v in vocabs._asdict().items()}}
    run = os.path.join(directory, "run")
    os.makedirs(run, exist_ok=True)
    checkpoint.save(os.path.join(run, "best"), {f"model/{k}": v for k, v in model.state_dict().items()}, meta)
    with open(os.path.join(directory, "input.conllu"), "w", encoding="utf-8") as f:
        for n, s in enumerate(held, 1):
            lines = [f"# sent_id = {n}", f"# text = {' '.join(s.words)}"]
            lines += [f"{i}\t{w}\t_\t_\t_\t_\t_\t_\t_\t_" for i, w in enumerate(s.words, 1)]
            f.write("\n".join(lines) + "\n\n")
    return sum(len(s) for s in held)


def end_to_end_rate(threads, repeats, data=None, tokens=0) -> float:
    """tokens/s of ``tinyrnn tag predict RUN FILE --threads N > out`` in a fresh process, wall clock,
    nothing subtracted (median of ``repeats`` after one untimed run that fills the JIT cache)."""
    env = thread_env(threads)
    with tempfile.TemporaryDirectory() as tmp:
        code = (f"from tinyrnn.bench.tagger import prepare_predict_files; "
                f"print(prepare_predict_files({tmp!r}, {data!r}, {tokens}))")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"preparing the tagger files failed:\n{out.stderr[-2000:]}")
        n = int(out.stdout.strip().splitlines()[-1])
        command = [sys.executable, "-m", cli_module(), "tag", "predict", os.path.join(tmp, "run"),
                   os.path.join(tmp, "input.conllu"), "--threads", str(threads)]
        times = []
        for k in range(repeats + 1):
            with open(os.path.join(tmp, "output.conllu"), "w") as sink:
                t0 = time.perf_counter()
                r = subprocess.run(command, env=env, stdout=sink, stderr=subprocess.PIPE, text=True)
                elapsed = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"tinyrnn tag predict failed:\n{r.stderr[-2000:]}")
            if k:
                times.append(elapsed)
        return n / median(times)


def measure(kind, framework, steps=0, data=None, tokens=0) -> float:
    """Inside a worker: tagger_train or tagger_predict tokens/s."""
    if kind == "tagger_train":
        return train_rate(framework, steps, data)
    return predict_rate(framework, data, tokens)


# ---- the rows (in the benchmark's process) -------------------------------------------------------
def run_rows(threads, repeats, have_torch, steps=0, data=None, tokens=0) -> dict:
    """Measure and print the tagger rows; returns them for --json."""
    from .workers import run_worker

    nan = float("nan")
    where = data or "synthetic EWT-like"
    print(f"tagger (issue 11): default Tagger (word 100 + char BiLSTM 50, 2x128 BiLSTM), {where}", flush=True)
    results = {}
    opts = dict(data=data, tokens=tokens)
    for kind, label in (("tagger_train", f"training, B{BATCH} sentences"),
                        ("tagger_predict", f"predict in process, B{PREDICT_BATCH}")):
        ours, theirs = [], []
        for _ in range(repeats):       # interleaved, as the char-model rows
            ours.append(run_worker(kind, "tinyrnn", "", threads, steps, **opts))
            if have_torch:
                theirs.append(run_worker(kind, "torch", "", threads, steps, **opts))
        ours, theirs = median(ours), (median(theirs) if theirs else nan)
        print(f"  {label:<36}tinyrnn {ours:>9.0f} tok/s   torch {theirs:>9.0f} tok/s   ratio {ours / theirs:5.2f}",
              flush=True)
        key = "train" if kind == "tagger_train" else "predict"
        results[key] = dict(tinyrnn=ours, torch=theirs, ratio=ours / theirs)
    e2e = end_to_end_rate(threads, repeats, data, tokens)
    print(f"  {'tag predict end to end (CoNLL-U)':<36}tinyrnn {e2e:>9.0f} tok/s   (target 50000)", flush=True)
    results["predict_end_to_end"] = dict(tinyrnn=e2e)
    results["train"]["target_ratio"] = 1.5
    results["predict_end_to_end"]["target"] = 50000
    return results
