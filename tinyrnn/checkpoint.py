"""Checkpoints: ONE file, ``NAME.npz``, holding the arrays and the metadata. No pickle.

    run/last.npz    a zip archive (``np.load`` reads it, ``allow_pickle=False``):
                      model/<param name>.npy, optim/....npy, state/....npy   the arrays
                      meta.json   {"format": "tinyrnn-checkpoint", "version": 2, "family": ...,
                                   "config": ..., "vocab": ..., "step": ..., "optimizer": <state
                                   with array refs>, "rng": ..., "metrics": ...}
    run/last.json   a human-readable copy of meta.json, written after the archive; never read
                    when the archive holds meta.json (a kill between the two leaves it stale)

A checkpoint is one atomic unit: the whole archive is built in memory (the JSON included), written
to a temporary file in the same directory (``.last.npz.XXXX.tmp``), flushed, fsync'ed and
``os.replace``'d over the old one. A kill at any instant leaves the old checkpoint or the new one,
never a mix; a temporary file left by a kill is removed by ``clean_temp`` (the trainer calls it
when it starts, under the run's lock) and is never read. ``load`` reads the file with one
``read()``, so a checkpoint replaced while it is being read is still read whole (the old inode).
The zip records a CRC-32 of every member, so a truncated or corrupt file is caught on load.

The old layout (version 1: arrays in ``NAME.npz``, metadata in ``NAME.json`` with the archive's
SHA-256) is still read.

JSON is written with ASCII escapes (``\\udcff`` for a byte of a file name that is not UTF-8), so
every string - a path included - round-trips exactly (``os.fsencode`` gives the original bytes).

A checkpoint's ``"family"`` says which model it holds (``"char"``: ``CharRNN``); ``load_model``
rebuilds that model for ``sample``/``eval``/``fill`` and refuses a checkpoint of another family.

Nested state (an optimizer's ``state_dict()``) is stored by ``pack``: its arrays go into the
archive and the JSON holds ``{"__array__": key}`` in their place; ``unpack`` reverses that.
"""
import errno
import glob
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile

import numpy as np

from .errors import TinyRNNError

FORMAT = "tinyrnn-checkpoint"
VERSION = 2
META_MEMBER = "meta.json"
READABLE = (1, 2)                  # versions ``load`` reads


# ----------------------------------------------------------------------------- files

def os_error_line(e, action, path, fix="check the path and its permissions, or choose another --out"):
    """An OSError as one line: '<action> <path>: <strerror> (ENOSPC): <fix>'."""
    name = errno.errorcode.get(e.errno, "") if e.errno else ""
    if e.errno == errno.ENOSPC:
        fix = "free some disk space, or choose another --out"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable --out"
    detail = (e.strerror or str(e)) + (f" ({name})" if name else "")
    return f"cannot {action} {path}: {detail}: {fix}"


def file_mode():
    """The mode a new file gets from the user's umask (0o666 & ~umask), as ``open()`` would."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` atomically: temp file in the same directory (mode from the umask),
    fsync, rename. The temporary file is removed on any error; a kill leaves it for ``clean_temp``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, file_mode())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
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


def clean_temp(directory):
    """Remove the temporary files a killed ``atomic_write`` left in ``directory`` (``.NAME.*.tmp``).

    Only call it while holding the directory's lock: another writer's temp file is in use."""
    for tmp in glob.glob(os.path.join(glob.escape(directory), ".*.tmp")):
        try:
            os.unlink(tmp)
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


def dumps(meta):
    """Meta -> JSON text that always encodes (ASCII escapes: any str, a lone surrogate included)."""
    return json.dumps(meta, indent=1, ensure_ascii=True)


def _readable_copy(meta):
    """The ``.json`` copy: UTF-8 where possible (a vocabulary stays readable), else ASCII escapes."""
    try:
        return json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return dumps(meta).encode("ascii")


def build(arrays, meta):
    """The bytes of a checkpoint archive: every array as ``KEY.npy`` and ``meta.json`` (with format and
    version). Everything is built in memory first, so a value that cannot be saved fails before any
    file is touched."""
    meta = {"format": FORMAT, "version": VERSION, **meta}
    text = dumps(meta).encode("ascii")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(value), allow_pickle=False)
        zf.writestr(META_MEMBER, text)
    return buf.getvalue(), meta


def save(stem, arrays, meta):
    """Write the checkpoint ``stem.npz`` (one atomic replace), then its readable copy ``stem.json``.

    An OSError (a full disk, a read-only directory) becomes one TinyRNNError line naming the path."""
    data, meta = build(arrays, meta)
    copy = _readable_copy({**meta, "note": f"a copy of {os.path.basename(stem)}.npz/{META_MEMBER}; "
                                            "tinyrnn reads the .npz"})
    for path, payload in ((stem + ".npz", data), (stem + ".json", copy)):
        try:
            atomic_write(path, payload)
        except OSError as e:
            raise TinyRNNError(os_error_line(e, "write checkpoint", path)) from None


def exists(stem):
    """Whether there is a checkpoint at ``stem`` (either layout)."""
    return os.path.exists(stem + ".npz") or os.path.exists(stem + ".json")


def resolve(path):
    """A checkpoint given as a run directory (its ``best``, else ``last``), a ``.npz``, a ``.json``
    or a stem -> the stem (path without extension)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("best", "last"):
            if exists(os.path.join(path, name)):
                return os.path.join(path, name)
        raise TinyRNNError(f"no checkpoint in {path}: expected {path}/best.npz or {path}/last.npz "
                           "(train one with: tinyrnn train --out DIR)")
    stem, ext = os.path.splitext(path)
    if ext not in (".json", ".npz"):
        stem = path
    if not exists(stem):
        raise TinyRNNError(f"no checkpoint at {path}: expected {stem}.npz")
    return stem


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TinyRNNError(os_error_line(e, f"read {what}", path, "use another checkpoint or retrain")) from None


def _parse_meta(text, where):
    try:
        meta = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TinyRNNError(f"checkpoint {where} is corrupt or truncated ({e}): use another checkpoint "
                           "or retrain") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TinyRNNError(f"{where} is not a tinyrnn checkpoint")
    if meta.get("version") not in READABLE:
        raise TinyRNNError(f"checkpoint {where} has format version {meta.get('version')!r}, this tinyrnn reads "
                           f"versions {', '.join(map(str, READABLE))}: use a matching tinyrnn version or retrain")
    return meta


def _arrays(data, where):
    """{key: array} of an archive's ``.npy`` members (read with pickle disabled)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            arrays = {}
            for name in zf.namelist():
                if name.endswith(".npy"):
                    with zf.open(name) as f:
                        arrays[name[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise TinyRNNError(f"checkpoint {where} is truncated or corrupt ({e}): use another checkpoint "
                           "(last/best) or retrain") from None


def _embedded_meta(data, where):
    """The ``meta.json`` of a version-2 archive, or None (an old archive, or not a zip at all)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if META_MEMBER not in zf.namelist():
                return None
            text = zf.read(META_MEMBER)
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise TinyRNNError(f"checkpoint {where} is truncated or corrupt ({e}): use another checkpoint "
                           "(last/best) or retrain") from None
    return _parse_meta(text, where)


def load(path):
    """Read a checkpoint -> (meta dict, {name: array}). Raises TinyRNNError when it is corrupt,
    truncated, inconsistent or from another format version. A ``.safetensors`` file with our
    metadata (``tinyrnn export``, or a PyTorch state dict plus a vocabulary) reads as a checkpoint."""
    if os.fspath(path).endswith(".safetensors"):
        from .export.safetensors import read_checkpoint

        return read_checkpoint(path)
    stem = resolve(path)
    if os.path.exists(stem + ".npz"):
        data = _read(stem + ".npz", "checkpoint")             # one read: a consistent snapshot
        try:
            meta = _embedded_meta(data, stem + ".npz")
        except TinyRNNError:
            if not _is_v1(stem):
                raise
            meta = None
        if meta is not None:
            return meta, _arrays(data, stem + ".npz")
    return _load_v1(stem)


def _is_v1(stem):
    """Whether ``stem.json`` is an old-layout (version 1) checkpoint's metadata."""
    try:
        with open(stem + ".json", "rb") as f:
            return json.loads(f.read().decode("utf-8")).get("version") == 1
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def _load_v1(stem):
    """The old two-file layout: ``stem.json`` with the SHA-256 of ``stem.npz``."""
    if not os.path.exists(stem + ".json"):
        raise TinyRNNError(f"checkpoint {stem}.npz has no metadata (and there is no {stem}.json): "
                           "use another checkpoint or retrain")
    meta = _parse_meta(_read(stem + ".json", "checkpoint"), stem + ".json")
    data = _read(stem + ".npz", "checkpoint weights")
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise TinyRNNError(f"checkpoint weights {stem}.npz do not match {stem}.json (truncated, corrupt or "
                           "from another save): use another checkpoint (last/best) or retrain")
    return meta, _arrays(data, stem + ".npz")


def load_with_fallback(path, log=None):
    """``load``, falling back from ``best`` to ``last`` (and from ``last`` to ``best``) of the same run
    when the first is missing or unreadable; the fallback is reported through ``log`` (stderr).
    -> (meta, arrays, stem actually read)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    path = os.fspath(path)
    if path.endswith(".safetensors"):               # an exported model: one file, nothing to fall back to
        return (*load(path), path)
    if os.path.isdir(path):
        candidates = [os.path.join(path, "best"), os.path.join(path, "last")]
    else:
        stem = resolve(path)
        directory, name = os.path.split(stem)
        other = {"best": "last", "last": "best"}.get(name)
        candidates = [stem] + ([os.path.join(directory, other)] if other else [])
    present = [c for c in candidates if exists(c)]
    if not present:
        resolve(path)                                   # raises the usual "no checkpoint" line
    first_error = None
    for stem in present:
        try:
            meta, arrays = load(stem)
        except TinyRNNError as e:
            first_error = first_error or e
            continue
        if first_error is not None:
            log(f"warning: {first_error} - using {stem} (step {meta.get('step')}) instead")
        return meta, arrays, stem
    raise first_error


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


def load_model(path, device="cpu", family="char", log=None):
    """A checkpoint -> (model, vocab, meta), ready for inference on ``device``.

    path: a run directory, ``.npz``, ``.json`` or stem (see ``resolve``); when it is unreadable the
    run's other checkpoint (best <-> last) is used, with a warning through ``log``. family: the kind
    of model the caller needs; a checkpoint of another family raises TinyRNNError naming what it holds."""
    import importlib

    from .backend import use_device

    use_device(device)
    meta, arrays, stem = load_with_fallback(path, log)
    found = meta.get("family", "char")
    if found != family:
        raise TinyRNNError(f"{path} holds {FAMILY_NAMES.get(found, found)}, not {FAMILY_NAMES[family]}: "
                           f"{_command_for(found)}")
    module, name = FAMILIES[family]
    cls = getattr(importlib.import_module(module), name)
    try:
        model, vocab = cls.from_checkpoint(meta, arrays)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, MemoryError) as e:
        raise TinyRNNError(f"checkpoint {stem} is incomplete or inconsistent ({type(e).__name__}: {e}): "
                           "use another checkpoint or retrain") from None
    size = getattr(model, "vocab_size", None)
    if size is not None and (len(vocab) != size or vocab.chars != meta.get("vocab")):
        raise TinyRNNError(f"checkpoint {stem} is inconsistent: its vocabulary has {len(meta['vocab'])} characters "
                           f"(sorted, distinct: {len(vocab)}) but the model's weights have {size}: use another "
                           "checkpoint or retrain")
    model.to(device)
    model.eval()
    return model, vocab, meta


def _command_for(family):
    return {"char": "use tinyrnn sample / eval / fill with it",
            "tagger": "use tinyrnn tag predict / tag eval with it"}.get(family, "use the matching command")
