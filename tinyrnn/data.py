"""Text corpora as compact integer arrays, and the batches a character model trains on.

A corpus is read twice, in chunks, and never held whole as one Python string:

    pass 1: the vocabulary = the set of Unicode code points in the text (so Chinese, emoji and
            accented letters are single symbols: no byte-splitting);
    pass 2: each character -> its index in the sorted vocabulary, written into an integer array
            of the smallest dtype that holds the vocabulary (uint8 / uint16 / int32).

Small corpora live in memory (1 byte per character for most texts). Large ones are encoded once
into a ``.npy`` file in a cache directory keyed by a hash of (path, size, mtime) and memory-mapped,
so a 1 GB corpus costs page cache, not Python objects.

Pass 1 also hashes the bytes: ``Corpus.fingerprint`` = {"bytes": size, "sha256": hex}, which a
checkpoint records so that ``--resume`` notices a corpus that changed. A pipe or other non-regular
file (``cat f | tinyrnn train /dev/stdin``) is first copied, in chunks, to a temporary file.

Batches (truncated backpropagation through time): the training text is cut into B equal segments,
one per parallel stream. Step k reads, from every stream, the next window of ``seq_len + 1``
characters (inputs and the targets shifted by one); the hidden state after one window is the
initial state of the next. Batches are a pure function of (seed, step), which is what makes
``--resume`` exact.
"""
import codecs
import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass

import numpy as np

from .errors import TinyRNNError

CHUNK_BYTES = 1 << 22            # 4 MiB of file per read
MMAP_MIN_BYTES = 64 << 20        # corpora at least this big are cached on disk and memory-mapped
CACHE_VERSION = 1
MAX_CODE_POINT = 0x10FFFF


def _code_points(text):
    """str -> uint32 array of its code points (no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def index_dtype(vocab_size):
    """The smallest integer dtype that holds indices 0..vocab_size-1."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


class Vocab:
    """The characters a model knows, sorted by code point; index i <-> character ``chars[i]``."""

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise TinyRNNError("the vocabulary is empty: the text has no characters")
        self.index = {c: i for i, c in enumerate(self.chars)}
        cps = _code_points(self.chars)
        self._lut = np.full(int(cps.max()) + 1, -1, dtype=np.int32)   # code point -> index or -1
        self._lut[cps] = np.arange(len(cps), dtype=np.int32)

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self):
        return f"Vocab({len(self)} chars)"

    @property
    def dtype(self):
        return index_dtype(len(self))

    def encode(self, text):
        """str -> int32 array of indices; characters outside the vocabulary become -1."""
        cps = _code_points(text)
        ids = np.full(len(cps), -1, dtype=np.int32)
        known = cps < len(self._lut)
        ids[known] = self._lut[cps[known]]
        return ids

    def missing(self, text):
        """The characters of ``text`` that are not in the vocabulary, in order of first appearance."""
        return "".join(dict.fromkeys(c for c in text if c not in self.index))

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)


def describe_chars(chars, limit=10):
    """'"é", "ß" (U+00DF)' style listing for error messages; control characters shown as U+XXXX."""
    shown = []
    for c in chars[:limit]:
        shown.append(repr(c) if c.isprintable() and not c.isspace() else f"U+{ord(c):04X}")
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(shown) + more


# ----------------------------------------------------------------------------- reading text

def _open(path):
    if os.path.isdir(path):
        raise TinyRNNError(f"{path} is a directory: give a text file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise TinyRNNError(f"no such file: {path}: check the path") from None
    except PermissionError:
        raise TinyRNNError(f"cannot read {path}: permission denied (check its permissions)") from None
    except OSError as e:
        raise TinyRNNError(f"cannot read {path}: {e.strerror or e}") from None


def iter_text(path, encoding_errors="strict", chunk_bytes=CHUNK_BYTES, hasher=None):
    """Yield the decoded text of a UTF-8 file in chunks of about ``chunk_bytes`` bytes.

    Raises TinyRNNError for a NUL byte (a binary file) and, with ``encoding_errors="strict"``,
    for invalid UTF-8, naming the byte offset. ``"replace"`` turns bad bytes into U+FFFD.
    A leading byte-order mark is dropped. ``hasher`` (e.g. ``hashlib.sha256()``) is fed the raw bytes.
    """
    if encoding_errors not in ("strict", "replace", "ignore"):
        raise TinyRNNError(f"unknown encoding_errors {encoding_errors!r}: use strict, replace or ignore")
    decoder = codecs.getincrementaldecoder("utf-8")(errors=encoding_errors)
    offset = 0                                   # file offset of the start of `raw`
    first = True
    with _open(path) as f:
        while True:
            try:
                raw = f.read(chunk_bytes)
            except OSError as e:
                raise TinyRNNError(f"cannot read {path}: {e.strerror or e}") from None
            if hasher is not None:
                hasher.update(raw)
            nul = raw.find(b"\x00")
            if nul >= 0:
                raise TinyRNNError(
                    f"{path} looks like a binary file (NUL byte at byte offset {offset + nul}): "
                    "give a UTF-8 text file")
            pending = len(decoder.getstate()[0])  # bytes of a split character held from the last chunk
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                bad = e.object[e.start:e.start + 1].hex()
                raise TinyRNNError(
                    f"{path} is not valid UTF-8 at byte offset {at} (byte 0x{bad}): "
                    "fix the file, or pass --encoding-errors replace to replace bad bytes") from None
            offset += len(raw)
            if first and text:
                if text[0] == "\ufeff":
                    text = text[1:]
                first = False
            if text:
                yield text
            if not raw:
                return


# ----------------------------------------------------------------------------- corpus

@dataclass
class Corpus:
    """``ids[i]`` is the vocabulary index of character i of the file at ``path``."""
    path: str
    vocab: Vocab
    ids: np.ndarray       # (N,) uint8/uint16/int32, possibly a read-only memmap
    fingerprint: dict | None = None    # {"bytes": size of the file, "sha256": hex digest of its bytes}

    def __len__(self):
        return len(self.ids)

    def split(self, val_frac):
        """(train_ids, val_ids): the last ``val_frac`` of the text is validation (views, no copy)."""
        if not 0.0 <= val_frac < 1.0:
            raise TinyRNNError(f"--val-frac must be in [0, 1), got {val_frac}")
        n_val = int(round(len(self.ids) * val_frac))
        return self.ids[:len(self.ids) - n_val], self.ids[len(self.ids) - n_val:]

    def text(self, start=0, stop=None):
        """Decode a slice back to a string (for samples and tests; keep it small)."""
        return self.vocab.decode(self.ids[start:stop])


def default_cache_dir():
    return os.environ.get("TINYRNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "tinyrnn")


def _cache_key(path, encoding_errors):
    st = os.stat(path)
    ident = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{encoding_errors}|v{CACHE_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def _scan(path, encoding_errors, chunk_bytes, name=None):
    """Pass 1: (vocabulary, number of characters, fingerprint {"bytes", "sha256"})."""
    seen = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
    n, hasher = 0, hashlib.sha256()
    for text in iter_text(path, encoding_errors, chunk_bytes, hasher):
        seen[_code_points(text)] = True
        n += len(text)
    if n == 0:
        raise TinyRNNError(f"{name or path} is empty: give a file with some text")
    size = os.path.getsize(path)
    return Vocab(chr(int(c)) for c in np.flatnonzero(seen)), n, {"bytes": size, "sha256": hasher.hexdigest()}


def file_fingerprint(path, chunk_bytes=CHUNK_BYTES):
    """{"bytes": size, "sha256": hex} of a file, read in chunks."""
    hasher, size = hashlib.sha256(), 0
    with _open(path) as f:
        for raw in iter(lambda: f.read(chunk_bytes), b""):
            hasher.update(raw)
            size += len(raw)
    return {"bytes": size, "sha256": hasher.hexdigest()}


def _copy_stream(path, chunk_bytes=CHUNK_BYTES):
    """A pipe or device copied, in chunks, to a temporary file -> its path (the caller removes it)."""
    fd, tmp = tempfile.mkstemp(prefix="tinyrnn-corpus-", suffix=".txt")
    try:
        with _open(path) as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, chunk_bytes)
    except OSError as e:
        os.unlink(tmp)
        raise TinyRNNError(f"cannot copy {path} to a temporary file: {e.strerror or e}") from None
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _encode_into(out, path, vocab, encoding_errors, chunk_bytes):
    """Pass 2: write the indices of every character into ``out`` (an array or memmap)."""
    pos = 0
    for text in iter_text(path, encoding_errors, chunk_bytes):
        ids = vocab.encode(text)
        out[pos:pos + len(ids)] = ids
        pos += len(ids)
    if pos != len(out):
        raise TinyRNNError(f"{path} changed while it was being read: run again")


def load_corpus(path, encoding_errors="strict", cache_dir=None, chunk_bytes=CHUNK_BYTES,
                mmap_min_bytes=MMAP_MIN_BYTES):
    """Read a UTF-8 text file into a ``Corpus`` (two passes over the file, in chunks).

    Files of at least ``mmap_min_bytes`` are encoded once into ``<cache_dir>/<hash>/ids.npy`` and
    memory-mapped; the hash covers the path, size, modification time and ``encoding_errors``, so an
    edited file is re-encoded. Smaller files are encoded into memory.
    """
    path = os.fspath(path)
    f = _open(path)           # the clear errors for missing / unreadable files, before stat()
    regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    f.close()
    if not regular:           # a pipe (/dev/stdin, <(...)): read it once, into a temporary file
        tmp = _copy_stream(path, chunk_bytes)
        try:
            corpus = _load_in_memory(tmp, encoding_errors, chunk_bytes, name=path)
        finally:
            os.unlink(tmp)
        corpus.path = path
        return corpus
    size = os.path.getsize(path)
    if size == 0:
        raise TinyRNNError(f"{path} is empty: give a file with some text")
    if size < mmap_min_bytes:
        return _load_in_memory(path, encoding_errors, chunk_bytes)

    cache = os.path.join(cache_dir or default_cache_dir(), _cache_key(path, encoding_errors))
    ids_path, meta_path = os.path.join(cache, "ids.npy"), os.path.join(cache, "meta.json")
    if os.path.exists(ids_path) and os.path.exists(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
            if len(ids) == meta["n_chars"]:
                return Corpus(path, Vocab(meta["vocab"]), ids, meta.get("fingerprint") or file_fingerprint(path))
        except (OSError, ValueError, KeyError, TypeError):
            pass                                   # a broken cache entry: rebuild it below
    vocab, n, fingerprint = _scan(path, encoding_errors, chunk_bytes)
    os.makedirs(cache, exist_ok=True)
    tmp = ids_path + f".tmp{os.getpid()}"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=vocab.dtype, shape=(n,))
    _encode_into(out, path, vocab, encoding_errors, chunk_bytes)
    out.flush()
    del out
    os.replace(tmp, ids_path)
    tmp = meta_path + f".tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"source": os.path.realpath(path), "n_chars": n, "vocab": vocab.chars,
                   "fingerprint": fingerprint}, f)
    os.replace(tmp, meta_path)
    return Corpus(path, vocab, np.load(ids_path, mmap_mode="r", allow_pickle=False), fingerprint)


def _load_in_memory(path, encoding_errors, chunk_bytes, name=None):
    vocab, n, fingerprint = _scan(path, encoding_errors, chunk_bytes, name)
    ids = np.empty(n, dtype=vocab.dtype)
    _encode_into(ids, path, vocab, encoding_errors, chunk_bytes)
    return Corpus(path, vocab, ids, fingerprint)


def remap(ids, from_vocab, to_vocab, chunk=1 << 24):
    """Re-index ``ids`` (in ``from_vocab``) into ``to_vocab``.

    Returns (int32 ids with -1 for characters ``to_vocab`` lacks, {char: count} of those characters);
    when the vocabularies are equal, ``ids`` itself.
    """
    if from_vocab == to_vocab:
        return ids, {}                                     # nothing to do: no copy
    table = to_vocab.encode(from_vocab.chars)              # from-index -> to-index or -1
    out = np.empty(len(ids), dtype=np.int32)
    for s in range(0, len(ids), chunk):
        out[s:s + chunk] = table[ids[s:s + chunk]]
    unknown = {}
    if (table < 0).any():
        counts = np.bincount(np.asarray(ids), minlength=len(from_vocab))
        unknown = {from_vocab.chars[i]: int(counts[i]) for i in np.flatnonzero(table < 0) if counts[i]}
    return out, unknown


# ----------------------------------------------------------------------------- batches

def min_chars(batch_size, window):
    """Characters a stream batcher needs: one full window per stream."""
    return batch_size * window


class StreamBatches:
    """B parallel streams over ``ids``, read in consecutive windows (truncated BPTT).

    The text is cut into B equal segments of length L; stream b reads segment b. Step k of
    epoch e is, for every stream, ``segment[o_e + k*stride : o_e + k*stride + window]``, where the
    offset o_e in [0, stride) is drawn from (seed, e) so that each epoch sees different chunk
    boundaries (``random_offset=False`` gives o_e = 0, for evaluation).

    With ``window = stride + 1`` (a unidirectional model) the last character of one window is the
    first of the next: inputs ``w[:-1]``, targets ``w[1:]``, and the hidden state carries over.
    """

    def __init__(self, ids, batch_size, window, stride, seed=0, random_offset=True):
        if batch_size < 1 or window < 1 or stride < 1:
            raise TinyRNNError("batch size, window and stride must be positive")
        self.ids, self.batch_size, self.window, self.stride, self.seed = ids, batch_size, window, stride, seed
        self.segment = len(ids) // batch_size
        slack = self.segment - window
        if slack < 0:
            raise TinyRNNError(
                f"text too short: {len(ids)} characters cannot fill {batch_size} streams of "
                f"{window} characters (need at least {min_chars(batch_size, window)})")
        self.max_offset = min(stride - 1, slack) if random_offset else 0
        self.steps_per_epoch = (slack - self.max_offset) // stride + 1

    def offset(self, epoch):
        if self.max_offset == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch]).integers(0, self.max_offset + 1))

    def batch(self, step, streams=None):
        """(windows (window, B) int64, starts_epoch): batch number ``step`` counted from 0.

        ``starts_epoch`` is True for the first batch of an epoch: the caller resets its hidden state.
        ``streams``: a slice of the B streams to read (one MPI rank's part), default all.
        """
        epoch, k = divmod(step, self.steps_per_epoch)
        start = self.offset(epoch) + k * self.stride
        rows = [self.ids[b * self.segment + start: b * self.segment + start + self.window]
                for b in range(self.batch_size)[streams or slice(None)]]
        return np.stack(rows, axis=1).astype(np.int64), k == 0

    def __iter__(self):
        """One pass (one epoch, from epoch 0's offset)."""
        for k in range(self.steps_per_epoch):
            yield self.batch(k)[0]
