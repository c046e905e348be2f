"""The safetensors format, written and read here (the ``safetensors`` package is not needed).

A file is three parts:

    8 bytes       N, the header's length (unsigned 64-bit little-endian)
    N bytes       a JSON header: {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [..],
                  "data_offsets": [begin, end]}, ...}, padded with spaces so the data starts at a
                  multiple of 8 bytes
    the data      every tensor's bytes, C order, little-endian, back to back; offsets are relative
                  to the start of this part

tinyrnn writes a model's ``state_dict()`` under its own names, which are PyTorch's
(``embed.weight``, ``rnn.weight_ih_l0``, ``rnn.bias_hh_l1``, ``head.weight``), so the file loads
into ``torch.nn.Embedding`` / ``LSTM`` / ``Linear`` as it is. The metadata (str -> str) holds
``format`` = "tinyrnn", ``family``, and the JSON-encoded ``config`` (``CharRNN``'s constructor
arguments) and ``vocab`` (the characters in index order); ``read_checkpoint`` turns such a file
back into what ``checkpoint.load`` returns, so ``tinyrnn sample model.safetensors`` works.
A tagger's file (``family`` "tagger") holds its ``state_dict()`` (``word_embed.weight``,
``char_rnn.weight_ih_l0_reverse``, ``rnn.*``, ``head.*``, ``crf.*``), ``config`` (``Tagger``'s
arguments), ``vocab`` ({"words", "chars", "tags"}, each ``Vocab.to_json()``) and ``column``;
``tinyrnn tag predict tagger.safetensors`` reads it.
"""
import json
import os
import struct

import numpy as np

from ..errors import TinyRNNError

# safetensors dtype name <-> numpy dtype (little-endian). BF16 is read by widening to float32.
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_HEADER = 100 << 20          # the limit the reference implementation enforces
FORMAT = "tinyrnn"


def dumps(arrays, metadata=None):
    """{name: array} and {str: str} metadata -> the bytes of a safetensors file."""
    header, chunks, offset = {}, [], 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TinyRNNError("safetensors metadata must map str to str: JSON-encode other values")
        header["__metadata__"] = dict(metadata)
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype not in NAMES:
            raise TinyRNNError(f"cannot store {name} ({a.dtype}) in safetensors: use a float or int array")
        data = np.ascontiguousarray(a, dtype=dtype).tobytes()
        header[name] = {"dtype": NAMES[dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path, arrays, metadata=None):
    """Write ``arrays`` ({name: array}) and ``metadata`` ({str: str}) to ``path`` atomically."""
    from . import atomic_write

    atomic_write(path, dumps(arrays, metadata))


def load(path):
    """Read a safetensors file -> ({name: numpy array}, {str: str} metadata).

    Raises TinyRNNError (one line naming the file and the problem) when it is not a safetensors
    file, is truncated, or holds a dtype numpy cannot represent."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TinyRNNError(f"cannot read {path}: {e.strerror or e}") from None
    header, start = _header(path, data)
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        arrays[name] = _tensor(path, name, info, data, start)
    return arrays, dict(header.get("__metadata__") or {})


def _header(path, data):
    """The parsed JSON header and where the data part starts."""
    bad = f"{path} is not a safetensors file"
    if len(data) < 8:
        raise TinyRNNError(f"{bad} (only {len(data)} bytes): export it again")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise TinyRNNError(f"{bad} or it is truncated (header of {n} bytes in a {len(data)}-byte file): export it again")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TinyRNNError(f"{bad} (its header is not JSON: {e}): export it again") from None
    if not isinstance(header, dict):
        raise TinyRNNError(f"{bad} (its header is not a JSON object): export it again")
    return header, 8 + n


def _tensor(path, name, info, data, start):
    """One tensor of the file as a numpy array (a copy; BF16 widened to float32)."""
    try:
        dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise TinyRNNError(f"{path}: the header entry for {name} is malformed: export it again") from None
    width = 2 if dtype == "BF16" else np.dtype(DTYPES[dtype]).itemsize if dtype in DTYPES else None
    if width is None:
        raise TinyRNNError(f"{path}: {name} has dtype {dtype}, which tinyrnn cannot read: save it as F32")
    if not 0 <= begin <= end <= len(data) - start or end - begin != width * int(np.prod(shape)):
        raise TinyRNNError(f"{path}: {name} does not fit the file (truncated or corrupt): export it again")
    raw = data[start + begin:start + end]
    if dtype == "BF16":   # the top half of a float32
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, DTYPES[dtype]).reshape(shape).copy()


# ----------------------------------------------------------------------------- models

def model_metadata(model, vocab, meta=None):
    """The metadata written beside a model's weights: format, family, config and vocab (JSON).

    A tagger's ``vocab`` is {"words", "chars", "tags"} (each ``Vocab.to_json()``); it also carries
    ``column`` and, when the checkpoint knows it, ``max_length`` (the longest training sentence)."""
    if model.family == "tagger":
        text = json.dumps({k: v.to_json() for k, v in vocab._asdict().items()}, ensure_ascii=False)
    else:
        text = json.dumps(vocab.chars, ensure_ascii=False)
    out = {"format": FORMAT, "family": model.family, "config": json.dumps(model.config()), "vocab": text}
    meta = meta or {}
    if "step" in meta:
        out["step"] = str(meta["step"])
    if model.family == "tagger":
        out["column"] = str(meta.get("column", "upos"))
        if (meta.get("data") or {}).get("max_length"):
            out["max_length"] = str(meta["data"]["max_length"])
    return out


def read_checkpoint(path):
    """A ``.safetensors`` model file -> (meta, arrays) shaped like ``checkpoint.load``'s result.

    The metadata must hold the vocabulary (``vocab``: JSON string of the characters in index
    order, as ``tinyrnn export`` writes it); a missing ``config`` is inferred from the weights'
    names and shapes, so a PyTorch ``state_dict`` saved with only ``metadata={"vocab": ...}``
    loads too. A tagger's file (``family`` "tagger"): see ``tagger_checkpoint``."""
    arrays, metadata = load(path)
    family = metadata.get("family", "char")
    if family == "tagger":
        return tagger_checkpoint(path, arrays, metadata)
    if "vocab" not in metadata:
        raise TinyRNNError(f"{path} has no vocabulary in its metadata: save it with "
                           "metadata={'vocab': json.dumps(chars)} (the characters in index order), "
                           "or write it with tinyrnn export --format safetensors")
    try:
        chars = json.loads(metadata["vocab"])
        config = json.loads(metadata["config"]) if "config" in metadata else infer_config(arrays)
        step = int(metadata.get("step", 0))
    except ValueError as e:
        raise TinyRNNError(f"{path}: its metadata is not valid ({e}): export it again") from None
    if not isinstance(chars, str) or "".join(sorted(set(chars))) != chars:
        raise TinyRNNError(f"{path}: the vocabulary in its metadata must be one string of distinct characters "
                           "sorted by code point (the order of the embedding rows)")
    meta = {"family": family, "model": config, "vocab": chars, "step": step,
            "source": os.path.abspath(path)}
    return meta, {f"model/{k}": v for k, v in arrays.items()}


def tagger_checkpoint(path, arrays, metadata):
    """A tagger's file (``tinyrnn export --format safetensors``) -> (meta, arrays) as ``checkpoint.load``'s.

    Its metadata must hold ``config`` (``Tagger``'s constructor arguments) and ``vocab``
    ({"words", "chars", "tags"}, each ``Vocab.to_json()``): a tagger's config is not inferred."""
    try:
        vocab = json.loads(metadata["vocab"]) if "vocab" in metadata else None
        config = json.loads(metadata["config"]) if "config" in metadata else None
        step, max_length = int(metadata.get("step", 0)), int(metadata.get("max_length", 0))
    except ValueError as e:
        raise TinyRNNError(f"{path}: its metadata is not valid ({e}): export it again") from None
    if not isinstance(vocab, dict) or set(vocab) != {"words", "chars", "tags"} or not isinstance(config, dict):
        raise TinyRNNError(f"{path}: a tagger's metadata needs config and vocab (words, chars, tags): "
                           "write it with tinyrnn export --format safetensors")
    meta = {"family": "tagger", "model": config, "vocab": vocab, "step": step,
            "column": metadata.get("column", "upos"), "source": os.path.abspath(path)}
    if max_length:
        meta["data"] = {"max_length": max_length}
    return meta, {f"model/{k}": v for k, v in arrays.items()}


def infer_config(arrays):
    """``CharRNN`` config from PyTorch-named weights: sizes from shapes, the cell from the gate count."""
    try:
        vocab_size, embed = arrays["embed.weight"].shape
        gates_h, hidden = arrays["rnn.weight_hh_l0"].shape
    except (KeyError, ValueError):
        raise TinyRNNError("the weights have no embed.weight / rnn.weight_hh_l0 (2-D): they are not a "
                           "character model in tinyrnn's layout (embed, rnn, head)") from None
    cells = {1: "rnn", 3: "gru", 4: "lstm"}
    if gates_h % hidden or gates_h // hidden not in cells:
        raise TinyRNNError(f"rnn.weight_hh_l0 has shape {(gates_h, hidden)}: expected (G*H, H) with G 1, 3 or 4")
    layers = sum(1 for k in arrays if k.startswith("rnn.weight_hh_l"))
    return dict(vocab_size=int(vocab_size), cell=cells[gates_h // hidden], hidden=int(hidden), layers=layers,
                embed=int(embed), dropout=0.0, bidir="rnn_backward.weight_hh_l0" in arrays)
