"""Models that leave tinyrnn: ONNX, safetensors and a PyTorch module (``tinyrnn export``).

Character models and taggers (``family`` "char" and "tagger"), in each of the three formats:

    export("runs/poems", "onnx", "poems.onnx")         # ONNX's own LSTM/GRU/RNN operators (onnx.py)
    export("runs/poems", "safetensors", "poems.safetensors")   # PyTorch names and layout (safetensors.py)
    export("runs/poems", "torch", "poems.py")          # poems.py + poems.safetensors (torch_module.py)

Only checkpoints are read (through ``checkpoint.load`` / ``load_model``), never the corpus. Each
file is written atomically (a temporary file in the target directory, then ``os.replace``), so a
failed export leaves nothing behind.

``EXPORTERS`` maps a checkpoint's family (``meta["family"]``, "char" when absent) to one writer
per format, ``writer(model, vocab, meta, out) -> [paths written]``; another model family plugs
in by adding its entry. Checkpoints of other families are refused with one line.
"""
import os
import tempfile

from ..errors import TinyRNNError
from . import onnx as onnx_export
from . import safetensors as safetensors_export
from . import torch_module

FORMATS = ("onnx", "safetensors", "torch")
SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "torch": ".py"}


def write_safetensors(model, vocab, meta, out):
    """The model's ``state_dict()`` under PyTorch's names, config and vocab in the metadata -> [out]."""
    safetensors_export.save(out, model.state_dict(), safetensors_export.model_metadata(model, vocab, meta))
    return [out]


EXPORTERS = {
    "char": {"onnx": onnx_export.write_char, "safetensors": write_safetensors, "torch": torch_module.write_char},
    "tagger": {"onnx": onnx_export.write_tagger, "safetensors": write_safetensors,
               "torch": torch_module.write_tagger},
}


def export(checkpoint_path, fmt, out):
    """Export the model in a checkpoint (run directory, .json, .npz or .safetensors) as ``fmt`` to ``out``.

    Returns the paths written. Bad input (unknown format, missing directory, missing package, a
    corrupt checkpoint or one of an unsupported family) raises TinyRNNError before anything is written."""
    from .. import checkpoint

    if fmt not in FORMATS:
        raise TinyRNNError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    check_out(out, fmt)
    meta, _ = checkpoint.load(checkpoint_path)
    family = meta.get("family", "char")
    if family not in EXPORTERS:
        describe = lambda f: f"{checkpoint.FAMILY_NAMES.get(f, 'a model')} (family {f!r})"  # noqa: E731
        raise TinyRNNError(f"{checkpoint_path} holds {describe(family)}; tinyrnn export handles only "
                           f"{' or '.join(map(describe, EXPORTERS))} for now")
    model, vocab, meta = checkpoint.load_model(checkpoint_path, "cpu", family=family)
    return EXPORTERS[family][fmt](model, vocab, meta, out)


def check_out(out, fmt):
    """Refuse an output path that cannot be written, and a format whose package is missing."""
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise TinyRNNError(f"cannot write {out}: the directory {directory} does not exist (create it first)")
    if os.path.isdir(out):
        raise TinyRNNError(f"cannot write {out}: it is a directory (give a file name, e.g. {os.path.join(out, 'model' + SUFFIXES[fmt])})")
    if fmt == "onnx":
        onnx_export.require_onnx()
    if fmt == "torch":
        torch_module.check_out(out)


def atomic_write(path, data: bytes):
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix="." + os.path.basename(path),
                               suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)              # mkstemp's 0600 -> what open() would have given
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
