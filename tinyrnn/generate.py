"""Using a trained character model: sample text, fill in masked characters, measure bits/char.

Everything here runs under ``no_grad``: no tape is built. Sampling runs the batch-1 generation
kernels (``lstm_generate`` / ``gru_generate`` / ``rnn_generate`` in ``tinyrnn.kernels``): the whole
loop - embedding, the stacked cells, the head, softmax, top-k/top-p and the draw - stays inside
Numba, with no Python per character. The sampling rule (temperature, top-k, top-p) is described
once, with ``sample_index`` in ``tinyrnn/kernels/reference/sampling.py``. The weight matrices go to
the kernels as float32, as bfloat16 (``weights="bf16"``, stored as uint16) or as int8 with a scale
per row (``weights="int8"``); the formats are described in ``kernels/reference/weight_formats.py``.
``round_to_weights`` gives the model those same numbers, so ``evaluate`` can score a format
(sampling also rounds each product's vector, to bfloat16 or to 8-bit integers, which ``evaluate``
does not: ``python -m tinyrnn.bench.rounding`` measures what that costs, BENCHMARKS.md has it).
"""
import math

import numpy as np

from . import ops
from .backend import kernels
from .errors import TinyRNNError
from .kernels.reference.weight_formats import no_scale, widen
from .kernels.reference.sampling import sample_index
from .nn.cells import GATES
from .tensor import no_grad

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- sampling

WEIGHT_FORMATS = ("bf16", "int8", "f32")
MATRICES = ("w0", "w", "w_out")   # the generation weights a format compacts


def generation_weights(model, weights: str = "f32") -> dict:
    """A unidirectional CharRNN's weights in the layout of the ``*_generate`` kernels
    (``kernels/reference/generate.py``): layer 0's input products as a table of one row per
    character, ``x0`` (V, G*H) = embedding @ w_ih.T (in the model's dtype: V * G*H numbers,
    266 KB for 65 characters at LSTM 256), and its w_hh as ``w0`` (G*H, H); each further layer's
    [w_ih | w_hh] as one matrix, stacked on a leading layer axis as ``w`` (L-1, G*H, 2H). LSTM and
    RNN take one bias b = b_ih + b_hh per layer. Each matrix ``w_x`` comes with its row scales
    ``s_x``: empty for "f32" and "bf16", one float32 per row for "int8". weights "bf16" / "int8":
    the three matrices (w0, w, w_out: all but a few KB of the bytes a character reads) rounded to
    bfloat16 (stored as uint16) or to int8 with a scale per row of each stored matrix; the table
    and biases stay float. Every array starts on a cache line (``kernels/cpu/aligned.py``: sampling
    1.1-1.15x faster than from numpy's placement, BENCHMARKS.md).
    """
    from .kernels.cpu.aligned import aligned_array, aligned_copy, is_aligned

    if weights not in WEIGHT_FORMATS:
        raise TinyRNNError(f"unknown --weights {weights!r}: use one of {', '.join(WEIGHT_FORMATS)}")
    L, H = model.layers, model.hidden
    dtype = model.embed.weight.dtype
    G = GATES[model.cell]
    zeros = np.zeros(G * H, dtype=dtype)
    array = lambda p: zeros if p is None else np.ascontiguousarray(p.numpy())  # noqa: E731
    w_ih, w_hh, b_ih, b_hh = zip(*([array(p) for p in model.rnn.layer_weights(k)] for k in range(L)))
    joined = aligned_array((L - 1, G * H, 2 * H), dtype)      # written once, in place (no concatenate, stack)
    for k in range(1, L):
        joined[k - 1, :, :H], joined[k - 1, :, H:] = w_ih[k], w_hh[k]
    x0 = aligned_array((model.embed.weight.shape[0], G * H), dtype)
    kernels("cpu").matmul_nt(np.ascontiguousarray(model.embed.weight.numpy()), w_ih[0], x0, False)
    # tinyrnn's matmul, not numpy's: BLAS threads spin for ~0.1 s after a product, on the cores
    # sampling then runs on (measured: int8 sampling at half speed for the first 3,000 characters)
    w = dict(x0=x0, w0=w_hh[0], w=joined, w_out=array(model.head.weight), b_out=array(model.head.bias))
    b_ih, b_hh = np.stack(b_ih), np.stack(b_hh)
    if model.cell == "gru":
        w.update(b_ih=b_ih, b_hh=b_hh)
    else:
        w.update(b=b_ih + b_hh)
    for name in MATRICES:
        w[name], w["s" + name[1:]] = compact(w[name], weights)
    # the kernels only read these: an array already on a cache line (a parameter's own) is not copied
    return {name: a if is_aligned(a) else aligned_copy(a) for name, a in w.items()}


def compact(matrix, weights):
    """(stored matrix, row scales) of a float matrix in a weight format ("f32", "bf16", "int8").
    bfloat16 and int8 are rounded by the CPU kernels ``round_to_stored_bfloat16`` (in pairs where the
    kernels read pairs: ``isa.bf16_pairs``) and ``round_to_int8_rows`` (``to_stored_bfloat16``'s and
    ``to_int8_rows``' rules, bit for bit; int8 stored in excess 128 as uint8: ``to_stored_int8``),
    into arrays on a cache line: in numpy the rules took 16.6 ms for the 2 M numbers of c's layer 1
    (bfloat16; ~7 us of each character of a 2,000-character sample, of ~50) and 6.4 ms for c's 3 M
    weights (int8); ``generation_weights`` at c now takes 2.65 ms in bfloat16 against 2.16 in
    float32 (BENCHMARKS.md)."""
    if weights not in ("bf16", "int8"):
        return matrix, no_scale(matrix)
    from .kernels.cpu.aligned import aligned_array
    from .kernels.cpu.generate import round_to_int8_rows, round_to_stored_bfloat16

    rows = np.ascontiguousarray(matrix).reshape(-1, matrix.shape[-1])
    if weights == "bf16":
        stored = aligned_array(matrix.shape, np.uint16)
        round_to_stored_bfloat16(rows, stored.reshape(rows.shape).view(np.int16))
        return stored, no_scale(matrix)
    stored, scales = aligned_array(matrix.shape, np.uint8), np.empty(matrix.shape[:-1], np.float32)
    round_to_int8_rows(rows, stored.reshape(rows.shape), scales.reshape(-1))
    return stored, scales


def rounded(matrix, weights):
    """The float values a matrix has once stored in a weight format (itself for "f32")."""
    return widen(*compact(matrix, weights))


def round_to_weights(model, weights: str):
    """The model with its generation matrices rounded as ``generation_weights(model, weights)``
    stores them (in place, in the model's own dtype): what ``tinyrnn eval --weights`` scores, so the
    bits/char of a format measure the weights sampling multiplies by. Layer 0's w_hh is rounded
    alone (its w_ih stays float: sampling reads its products from the table x0); each further
    layer's w_ih and w_hh as the one matrix [w_ih | w_hh] they are there (int8: one scale a row of
    both). "f32" changes nothing and touches nothing, so it also serves a model on the GPU, whose
    device arrays take no ``[...] =`` from host arrays; the other formats are scored on the CPU."""
    if weights == "f32":
        return model
    w_hh0 = model.rnn.layer_weights(0)[1]
    w_hh0.data[...] = rounded(w_hh0.data, weights)
    for k in range(1, model.layers):
        w_ih, w_hh = model.rnn.layer_weights(k)[:2]
        both = rounded(np.concatenate([w_ih.data, w_hh.data], axis=1), weights)
        w_ih.data[...] = both[:, :w_ih.data.shape[1]]
        w_hh.data[...] = both[:, w_ih.data.shape[1]:]
    model.head.weight.data[...] = rounded(model.head.weight.data, weights)
    return model


LONGEST_CHUNK = 512     # indices one kernel call samples at most (see sample_indices)


def sample_indices(model, prime_ids, length, temperature=1.0, top_k=None, top_p=None, seed=None, chunk=32,
                   weights="f32"):
    """Yield arrays of sampled vocabulary indices, ``length`` in all: ``chunk`` first, then twice as
    many each time, up to LONGEST_CHUNK (or ``chunk``, if larger). A stream starts at once, and a
    long one pays a kernel call's fixed cost (~30 us: the dispatch, the threads, the re-read
    last index) once per 512 indices, not per 32 (sampling 1.07-1.09x faster at b, 1.15x at a;
    BENCHMARKS.md).
    The indices do not depend on the chunks: one uniform per index, drawn in order.

    The model reads ``prime_ids`` first. temperature 0 means argmax; top_k / top_p restrict the
    draw to the k most likely characters / the smallest set with probability >= p. Batch-1
    sampling is bound by latency, not arithmetic, so it always runs the CPU kernel (for a model
    on the GPU too: its weights are copied to the host once). weights: "f32", "bf16" or "int8"
    (see ``generation_weights``).
    """
    w = generation_weights(model, weights)
    L, H = model.layers, model.hidden
    dtype = w["b_out"].dtype
    h = np.zeros((L, H), dtype=dtype)
    c = np.zeros((L, H), dtype=dtype)
    rng = np.random.default_rng(seed)
    top_k = 0 if top_k is None else int(top_k)
    top_p = 1.0 if top_p is None else float(top_p)
    K = kernels("cpu")
    prime = np.ascontiguousarray(prime_ids, dtype=np.int64)
    done = 0
    while done < length:
        n = min(chunk, length - done)
        out = np.empty(n, dtype=np.int64)
        run_generation(K, model, w, h, c, prime, rng.random(n), temperature, top_k, top_p, out)
        yield out
        prime = out[-1:]  # the state now holds everything before the last sampled index
        done += n
        chunk = max(chunk, min(2 * chunk, LONGEST_CHUNK))


def run_generation(K, model, w, h, c, prime, uniforms, temperature, top_k, top_p, out):
    """One call of the kernel module K's ``*_generate`` for model's cell, with the weights w of
    ``generation_weights``: reads prime, fills out, updates h (and c for an LSTM) in place."""
    mats = [w[key] for name in MATRICES for key in (name, "s" + name[1:])]   # w0, s0, w, s, w_out, s_out
    if model.cell == "lstm":
        K.lstm_generate(w["x0"], *mats[:4], w["b"], *mats[4:], w["b_out"],
                        h, c, prime, uniforms, temperature, top_k, top_p, out)
    elif model.cell == "gru":
        K.gru_generate(w["x0"], *mats[:4], w["b_ih"], w["b_hh"], *mats[4:],
                       w["b_out"], h, prime, uniforms, temperature, top_k, top_p, out)
    else:
        K.rnn_generate(w["x0"], *mats[:4], w["b"], model.rnn.nonlinearity == "relu",
                       *mats[4:], w["b_out"], h, prime, uniforms, temperature, top_k, top_p, out)


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
             argmax=False, weights="f32"):
    """Yield ``length`` generated characters one at a time (the prime itself is not yielded).

    Without a prime, generation starts after a newline (or a space) as if a new paragraph began.
    (``generate_text`` yields the same characters a kernel call's worth at a time.)
    """
    for text in generate_text(model, vocab, prime, length, temperature, top_k, top_p, seed, argmax, weights):
        yield from text


def generate_text(model, vocab, prime="", length=500, temperature=1.0, top_k=None, top_p=None, seed=None,
                  argmax=False, weights="f32"):
    """``generate``'s characters as strings, one per call of the sampling kernel (32 characters
    first, then up to 512: ``sample_indices``): what ``tinyrnn sample`` writes, one write and one
    flush a string instead of a character (int8 sampling at b through a pipe: BENCHMARKS.md)."""
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
    temperature = 0.0 if argmax else temperature
    chars = vocab.chars
    for chunk in sample_indices(model, vocab.encode(prime), length, temperature, top_k, top_p, seed, weights=weights):
        yield "".join([chars[i] for i in chunk.tolist()])


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
                logits = model.fill_logits(ids.reshape(-1, 1)).numpy()[t, 0]
                ids[t] = sample_index(np.asarray(logits, np.float64), rng.random(), temperature, 0, 1.0)
    return vocab.decode(ids)


# ----------------------------------------------------------------------------- evaluation

def stream_rows(ids, streams, seq_len, max_chars=None):
    """The unidirectional evaluation's text, (S+1, B) int64: ``ids`` cut into B = ``streams`` (fewer
    on a text shorter than ``streams`` windows) equal contiguous segments of S targets each, side by
    side. With ``max_chars`` below the text's length, only the first ``max_chars // B`` targets of
    each segment: a sample spread over the whole text, each of its positions scored with the same
    state the full evaluation has there (a prefix of the text would score one part of it: on
    tinyshakespeare's held-out 10% the first 32K characters read 0.04-0.10 bits/char below the whole
    and missed overfitting, BENCHMARKS.md)."""
    ids = np.asarray(ids)
    streams = max(1, min(streams, (len(ids) - 1) // seq_len))
    seg = (len(ids) - 1) // streams                  # targets per stream
    take = seg if not max_chars or max_chars >= len(ids) else max(1, min(seg, max_chars // streams))
    return np.stack([ids[b * seg: b * seg + take + 1] for b in range(streams)], axis=1).astype(np.int64)


def fill_in_windows(ids, seq_len, max_chars=None):
    """The bidirectional evaluation's text: (W, T) windows of T = ``seq_len`` characters at
    offsets 0, T, 2T, ... and the tail shorter than T (or None). With ``max_chars`` below the
    text's length, ``max_chars // T`` of those windows evenly spaced over the text, and no tail."""
    ids = np.asarray(ids)
    count = len(ids) // seq_len
    grid = ids[:count * seq_len].reshape(count, seq_len).astype(np.int64)
    if max_chars and max_chars < len(ids) and count:
        picked = max(1, min(count, max_chars // seq_len))
        return grid[np.arange(picked) * count // picked], None
    tail = ids[count * seq_len:].astype(np.int64)
    return grid, (tail if len(tail) else None)


def evaluate(model, ids, batch_size=16, seq_len=256, max_chars=None):
    """Mean loss in nats per predicted character on ``ids`` (no unknown ids), and how many were scored.

    Unidirectional: ``batch_size`` streams over the text, each read in windows of ``seq_len`` with
    the state carried across windows; every character but each stream's first is predicted.
    Bidirectional: windows of ``seq_len`` characters, each position filled in from both sides
    within its window (so this is the fill-in loss). ``max_chars``: score about that many
    characters, spread over the whole text (``stream_rows``, ``fill_in_windows``).
    """
    ids = np.asarray(ids)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with no_grad():
        if model.bidir:
            grid, tail = fill_in_windows(ids, seq_len, max_chars)
            pieces = [grid[b:b + batch_size].T for b in range(0, len(grid), batch_size)]   # (T, rows)
            for x in pieces + ([tail.reshape(-1, 1)] if tail is not None else []):
                logits = model.fill_logits(x)
                loss = ops.cross_entropy(logits.reshape(-1, model.vocab_size), x.reshape(-1))
                total += float(loss.item()) * x.size
                count += x.size
        else:
            if len(ids) < 2:
                return float("nan"), 0
            rows = stream_rows(ids, batch_size, seq_len, max_chars)
            state = None
            for t0 in range(0, len(rows) - 1, seq_len):
                x = rows[t0:t0 + seq_len + 1]
                logits, state = model(x[:-1], state)
                loss = ops.cross_entropy(logits.reshape(-1, model.vocab_size), x[1:].reshape(-1))
                total += float(loss.item()) * x[1:].size
                count += x[1:].size
    model.train(was_training)
    return (total / count if count else float("nan")), count
