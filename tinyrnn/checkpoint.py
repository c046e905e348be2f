"""Checkpoints: arrays in ``NAME.npz``, everything else in ``NAME.json`` beside it. No pickle.

    run/last.npz    model weights ("model/<param name>"), optimizer arrays ("optim/..."),
                    the carried hidden state ("state/...")
    run/last.json   {"format": "tinyrnn-checkpoint", "version": 1, "weights_sha256": ...,
                     "config": ..., "vocab": ..., "step": ..., "optimizer": <state with array refs>,
                     "rng": ..., "metrics": ...}

Every file is written atomically: a temporary file in the same directory, flushed and fsync'ed,
then ``os.replace``'d over the old one, so a crash leaves either the old file or the new one.
The JSON records the SHA-256 of the ``.npz``; loading checks it, so a weights file from another
save (or a truncated one) is caught instead of silently loaded.

A checkpoint's ``"family"`` says which model it holds (``"char"``: ``CharRNN``); ``load_model``
rebuilds that model for ``sample``/``eval``/``fill`` and refuses a checkpoint of another family.

Nested state (an optimizer's ``state_dict()``) is stored by ``pack``: its arrays go into the
``.npz`` and the JSON holds ``{"__array__": key}`` in their place; ``unpack`` reverses that.
"""
import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import TinyRNNError

FORMAT = "tinyrnn-checkpoint"
VERSION = 1


def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:                                   # make the rename itself durable (not possible everywhere)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def pack(obj, arrays, prefix):
    """Nested dicts/lists of arrays and numbers -> JSON-able structure; arrays go into ``arrays``."""
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: pack(v, arrays, f"{prefix}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, pack(v, arrays, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [pack(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    return obj


def unpack(obj, arrays):
    """Inverse of ``pack``."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        if set(obj) == {"__items__"}:
            return {k: unpack(v, arrays) for k, v in obj["__items__"]}
        return {k: unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, arrays) for v in obj]
    return obj


def save(stem, arrays, meta):
    """Write ``stem.npz`` (arrays) then ``stem.json`` (meta + format, version, checksum)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    meta = {"format": FORMAT, "version": VERSION, "weights": os.path.basename(stem) + ".npz",
            "weights_sha256": hashlib.sha256(data).hexdigest(), **meta}
    text = json.dumps(meta, indent=1, ensure_ascii=False)
    atomic_write(stem + ".npz", data)
    atomic_write(stem + ".json", text.encode("utf-8"))


def resolve(path):
    """A checkpoint given as a run directory (its ``best``, else ``last``), a ``.json``, a ``.npz``
    or a stem -> the stem (path without extension)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("best", "last"):
            if os.path.exists(os.path.join(path, name + ".json")):
                return os.path.join(path, name)
        raise TinyRNNError(f"no checkpoint in {path}: expected {path}/best.json or {path}/last.json "
                           "(train one with: tinyrnn train --out DIR)")
    stem, ext = os.path.splitext(path)
    if ext not in (".json", ".npz"):
        stem = path
    if not os.path.exists(stem + ".json"):
        raise TinyRNNError(f"no checkpoint at {path}: expected {stem}.json and {stem}.npz")
    return stem


def load(path):
    """Read a checkpoint -> (meta dict, {name: array}). Raises TinyRNNError when it is corrupt,
    truncated, inconsistent or from another format version. A ``.safetensors`` file with our
    metadata (``tinyrnn export``, or a PyTorch state dict plus a vocabulary) reads as a checkpoint."""
    if os.fspath(path).endswith(".safetensors"):
        from .export.safetensors import read_checkpoint

        return read_checkpoint(path)
    stem = resolve(path)
    try:
        with open(stem + ".json", encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise TinyRNNError(f"checkpoint {stem}.json is corrupt or truncated ({e}): "
                           "use another checkpoint or retrain") from None
    except OSError as e:
        raise TinyRNNError(f"cannot read checkpoint {stem}.json: {e.strerror or e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TinyRNNError(f"{stem}.json is not a tinyrnn checkpoint")
    if meta.get("version") != VERSION:
        raise TinyRNNError(f"checkpoint {stem} has format version {meta.get('version')}, this tinyrnn reads "
                           f"version {VERSION}: use a matching tinyrnn version or retrain")
    try:
        with open(stem + ".npz", "rb") as f:
            data = f.read()
    except OSError as e:
        raise TinyRNNError(f"cannot read checkpoint weights {stem}.npz: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise TinyRNNError(f"checkpoint weights {stem}.npz do not match {stem}.json (truncated, corrupt or "
                           "from another save): use another checkpoint (last/best) or retrain")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise TinyRNNError(f"checkpoint weights {stem}.npz are corrupt ({e}): use another checkpoint "
                           "or retrain") from None
    return meta, arrays


# ----------------------------------------------------------------------------- models

# family -> (module, class): the class has ``from_checkpoint(meta, arrays) -> (model, vocab)``
FAMILIES = {"char": ("tinyrnn.models", "CharRNN"), "tagger": ("tinyrnn.tagging.model", "Tagger")}
FAMILY_NAMES = {"char": "a character model", "tagger": "a tagger"}


def model_arrays(arrays):
    """The model's weights from a checkpoint's arrays: {parameter name: array}."""
    return {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}


def save_model(stem, model, vocab, **meta):
    """Write a checkpoint that only holds a model (no optimizer): ``tinyrnn sample``/``eval``/``fill`` load it.

    stem: e.g. ``runs/imported/best`` (the directory is created); vocab: the model's ``Vocab``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    save(stem, arrays, {"family": model.family, "model": model.config(), "vocab": vocab.chars, "step": 0, **meta})


def load_model(path, device="cpu", family="char"):
    """A checkpoint -> (model, vocab, meta), ready for inference on ``device``.

    path: a run directory, ``.json``, ``.npz`` or stem (see ``resolve``). family: the kind of model
    the caller needs; a checkpoint of another family raises TinyRNNError naming what it holds."""
    import importlib

    from .backend import use_device

    use_device(device)
    meta, arrays = load(path)
    found = meta.get("family", "char")
    if found != family:
        raise TinyRNNError(f"{path} holds {FAMILY_NAMES.get(found, found)}, not {FAMILY_NAMES[family]}: "
                           f"{_command_for(found)}")
    module, name = FAMILIES[family]
    cls = getattr(importlib.import_module(module), name)
    try:
        model, vocab = cls.from_checkpoint(meta, arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise TinyRNNError(f"checkpoint {path} is incomplete or inconsistent ({e}): use another checkpoint "
                           "or retrain") from None
    model.to(device)
    model.eval()
    return model, vocab, meta


def _command_for(family):
    return {"char": "use tinyrnn sample / eval / fill with it",
            "tagger": "use tinyrnn tag predict / tag eval with it"}.get(family, "use the matching command")
