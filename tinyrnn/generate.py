"""Using a trained character model: sample text, fill in masked characters, measure bits/char.

Everything here runs under ``no_grad``: no tape is built. Generation goes through one function,
``make_stepper(model)``, which returns ``feed(ids) -> logits of the last position``; a faster
batch-1 kernel only has to replace it.
"""
import math

import numpy as np

from . import ops
from .errors import TinyRNNError
from .tensor import no_grad

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- sampling

def sample_index(logits, rng, temperature=1.0, top_k=None, top_p=None, argmax=False):
    """Pick a vocabulary index from one row of logits (V,).

    temperature: divide the logits by it (lower = more conservative); 0 means argmax.
    top_k: keep only the k most likely characters.  top_p: keep the smallest set of most likely
    characters whose probabilities add up to at least p ("nucleus" sampling).
    """
    if argmax or temperature == 0:
        return int(np.argmax(logits))
    z = np.asarray(logits, dtype=np.float64) / temperature
    p = np.exp(z - z.max())
    if top_k is not None and top_k < len(p):
        p[p < np.partition(p, -top_k)[-top_k]] = 0.0
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p)
        cum = np.cumsum(p[order]) / p.sum()
        p[order[np.searchsorted(cum, top_p) + 1:]] = 0.0
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


def make_stepper(model):
    """feed(ids: list of int) -> logits (V,) after the last id; the recurrent state lives inside.

    This is the batch-1 generation loop's only contact with the model (a fused kernel can replace it).
    """
    state = None

    def feed(ids):
        nonlocal state
        x = np.asarray(ids, dtype=np.int64).reshape(-1, 1)          # (T, B=1)
        logits, state = model(x, state)
        return logits.data[-1, 0]

    return feed


def check_sampling_options(length, temperature, top_k, top_p):
    if length is not None and length < 0:
        raise TinyRNNError(f"--length must be >= 0, got {length}")
    if temperature < 0:
        raise TinyRNNError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise TinyRNNError(f"--top-k must be positive, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise TinyRNNError(f"--top-p must be in (0, 1], got {top_p}")


def generate(model, vocab, prime="", length=500, temperature=1.0, top_k=None, top_p=None, seed=None,
             argmax=False):
    """Yield ``length`` generated characters one at a time (the prime itself is not yielded).

    Without a prime, generation starts after a newline (or a space) as if a new paragraph began.
    """
    from .data import describe_chars

    if model.bidir:
        raise TinyRNNError("this is a bidirectional (fill-in) model: generating text left to right needs a "
                           "unidirectional model; use `tinyrnn fill CKPT \"th_ qu_ck\"` to fill in characters")
    check_sampling_options(length, temperature, top_k, top_p)
    missing = vocab.missing(prime)
    if missing:
        raise TinyRNNError(f"--prime has characters the model never saw: {describe_chars(missing)}; "
                           "remove them from the prime")
    if not prime:
        prime = next((c for c in "\n " if c in vocab.index), vocab.chars[0])
    rng = np.random.default_rng(seed)
    model.eval()
    with no_grad():
        feed = make_stepper(model)
        logits = feed(vocab.encode(prime))
        for _ in range(length):
            i = sample_index(logits, rng, temperature, top_k, top_p, argmax)
            yield vocab.chars[i]
            logits = feed([i])


# ----------------------------------------------------------------------------- fill in

def fill(model, vocab, text, mask="_", sweeps=2, temperature=0.0, seed=None):
    """Replace every ``mask`` character of ``text`` by the model's choice; returns the filled text.

    Sweep 1 fills the masks left to right, later masks still holding a placeholder (a space);
    each further sweep re-predicts every mask with all the others filled. Each prediction is one
    pass of both stacks over the whole text: logits[t] depends on every character but x_t.
    """
    from .data import describe_chars

    if not model.bidir:
        raise TinyRNNError("fill needs a bidirectional model: train one with `tinyrnn train --bidir`")
    if len(mask) != 1:
        raise TinyRNNError(f"the mask must be one character, got {mask!r}")
    missing = vocab.missing(text.replace(mask, ""))
    if missing:
        raise TinyRNNError(f"the text has characters the model never saw: {describe_chars(missing)}; "
                           "remove or replace them")
    positions = [i for i, c in enumerate(text) if c == mask]
    if not positions:
        return text
    ids = vocab.encode(text.replace(mask, " " if " " in vocab.index else vocab.chars[0])).astype(np.int64)
    rng = np.random.default_rng(seed)
    model.eval()
    with no_grad():
        for _ in range(max(1, sweeps)):
            for t in positions:
                logits = model.fill_logits(ids.reshape(-1, 1)).data[t, 0]
                ids[t] = sample_index(logits, rng, temperature=temperature)
    return vocab.decode(ids)


# ----------------------------------------------------------------------------- evaluation

def evaluate(model, ids, batch_size=16, seq_len=256, max_chars=None):
    """Mean loss in nats per predicted character on ``ids`` (no unknown ids), and how many were scored.

    Unidirectional: ``batch_size`` streams over the text, each read in windows of ``seq_len`` with
    the state carried across windows; every character but each stream's first is predicted.
    Bidirectional: windows of ``seq_len`` characters, each position filled in from both sides
    within its window (so this is the fill-in loss).
    """
    ids = np.asarray(ids[:max_chars] if max_chars else ids)
    n = len(ids)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with no_grad():
        if model.bidir:
            for start in range(0, n, batch_size * seq_len):
                block = ids[start:start + batch_size * seq_len]
                full = len(block) // seq_len
                pieces = []
                if full:
                    pieces.append(block[:full * seq_len].reshape(full, seq_len).T)     # (T, rows)
                if len(block) % seq_len:
                    pieces.append(block[full * seq_len:].reshape(-1, 1))               # the tail
                for x in pieces:
                    x = x.astype(np.int64)
                    logits = model.fill_logits(x)
                    loss = ops.cross_entropy(logits.reshape(-1, model.vocab_size), x.reshape(-1))
                    total += float(loss.item()) * x.size
                    count += x.size
        else:
            if n < 2:
                return float("nan"), 0
            streams = max(1, min(batch_size, (n - 1) // seq_len))
            seg = (n - 1) // streams                       # targets per stream
            rows = np.stack([ids[b * seg: b * seg + seg + 1] for b in range(streams)], axis=1).astype(np.int64)
            state = None
            for t0 in range(0, seg, seq_len):
                x = rows[t0:t0 + seq_len + 1]
                logits, state = model(x[:-1], state)
                loss = ops.cross_entropy(logits.reshape(-1, model.vocab_size), x[1:].reshape(-1))
                total += float(loss.item()) * x[1:].size
                count += x[1:].size
    model.train(was_training)
    return (total / count if count else float("nan")), count
