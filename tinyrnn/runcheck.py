"""Checking a saved run completely before ``--resume`` changes anything.

A resume must never damage the run it continues, so every field of the checkpoint's metadata is
checked - presence, type and range - before the trainer touches a file: the step, the saved
training config (each field against its dataclass type, then the config's own ``validate``), the
optimizer state, the schedule position, the RNG state and the metrics history. The task then
checks what only it knows (the vocabulary against the model, the carried state's shape) and the
trainer checks every weight array's name, shape and finiteness against the model it built.
A failed check is one TinyRNNError line naming the checkpoint and the field.
"""
import math
import typing
from dataclasses import fields

from .errors import TinyRNNError

MAX_STEP = 10 ** 15


def damaged(stem, what):
    """The one-line error for a checkpoint that cannot be continued."""
    return TinyRNNError(f"checkpoint {stem} is damaged or hand-edited: {what}; nothing was changed - restore "
                        "the file (or use best), or start a new run with another --out")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    """A finite int or float that converts to a float (10**400 does not)."""
    return (is_int(v) and abs(v) < 1e300) or (isinstance(v, float) and math.isfinite(v))


def need(meta, key, ok, expected, stem, where=""):
    """``meta[key]`` if present and ``ok(value)``, else a ``damaged`` error naming the field."""
    if not isinstance(meta, dict) or key not in meta:
        raise damaged(stem, f"{where}{key} is missing")
    value = meta[key]
    if not ok(value):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise damaged(stem, f"{where}{key} is {shown}, expected {expected}")
    return value


def field_ok(value, annotation):
    """Whether ``value`` (from JSON) fits a config field annotated ``int``, ``float | None``, ..."""
    for kind in typing.get_args(annotation) or (annotation,):
        if (kind is type(None) and value is None) or (kind is bool and isinstance(value, bool)) \
                or (kind is int and is_int(value)) or (kind is float and is_number(value)) \
                or (kind is str and isinstance(value, str)):
            return True
    return False


def check_config(saved, kind, stem):
    """The saved ``train_config`` -> a ``kind`` instance, every field present, typed and in range."""
    values = {}
    types = typing.get_type_hints(kind)           # real types, also under ``from __future__ import annotations``
    for f in fields(kind):
        if f.name in kind.TRANSIENT:
            continue
        annotation = types[f.name]
        value = need(saved, f.name, lambda v, a=annotation: field_ok(v, a), _type_name(annotation), stem,
                     "train_config.")
        if is_int(value) and int not in (typing.get_args(annotation) or (annotation,)):
            value = float(value)                  # a float field written as 3 in JSON
        values[f.name] = value
    try:
        return kind(**values).validate()
    except TinyRNNError as e:
        raise damaged(stem, f"its saved training config is invalid ({e})") from None


def _type_name(annotation):
    names = [getattr(k, "__name__", str(k)).replace("NoneType", "null") for k in
             (typing.get_args(annotation) or (annotation,))]
    return " or ".join(names)


def check_meta(meta, stem, kind, family, metric):
    """Check the fields every family's checkpoint has; -> the saved config (a ``kind`` instance)."""
    found = meta.get("family", "char")
    if found != family:
        raise TinyRNNError(f"{stem} holds a {found!r} model, not {family!r}: resume it with its own command")
    need(meta, "step", lambda v: is_int(v) and 0 <= v <= MAX_STEP, "an integer >= 0", stem)
    if "processes" in meta:                       # MPI: how many processes trained it (absent: one)
        need(meta, "processes", lambda v: is_int(v) and 1 <= v <= 1 << 20, "an integer >= 1", stem)
    cfg = check_config(need(meta, "train_config", lambda v: isinstance(v, dict), "an object", stem), kind, stem)
    for key in ("model", "rng", "data"):
        need(meta, key, lambda v: isinstance(v, dict), "an object", stem)
    if family == "char":                          # a tagger's vocabularies are checked when they load
        check_char_vocab(meta, stem)
    _check_optimizer(need(meta, "optimizer", lambda v: isinstance(v, dict), "an object", stem), stem)
    schedule = need(meta, "schedule", lambda v: isinstance(v, dict), "an object", stem)
    need(schedule, "t", lambda v: is_int(v) and 0 <= v <= MAX_STEP, "an integer >= 0", stem, "schedule.")
    _check_metrics(need(meta, "metrics", lambda v: isinstance(v, dict), "an object", stem), stem, metric)
    if "pace" in meta:                            # a budget's pace check not yet run: its arguments
        need(meta, "pace", lambda v: isinstance(v, dict) and all(isinstance(x, bool) for x in v.values()),
             "an object of true/false settings", stem)
    return cfg


def check_char_vocab(meta, stem):
    """A character model's ``vocab``: distinct characters, sorted, as many as the model's ``vocab_size``."""
    size = need(meta["model"], "vocab_size", lambda v: is_int(v) and v > 0, "an integer > 0", stem, "model.")
    need(meta, "vocab", lambda v: isinstance(v, str) and "".join(sorted(set(v))) == v and len(v) == size,
         f"a string of the model's {size} distinct characters, sorted", stem)


def _hyper_ok(v):
    return isinstance(v, bool) or is_number(v) or (isinstance(v, list) and all(is_number(x) for x in v))


def _check_optimizer(opt, stem):
    need(opt, "type", lambda v: isinstance(v, str), "a name", stem, "optimizer.")
    hyper = need(opt, "hyper", lambda v: isinstance(v, dict), "an object", stem, "optimizer.")
    for name in hyper:
        need(hyper, name, _hyper_ok, "a finite number", stem, "optimizer.hyper.")
    need(opt, "steps", lambda v: isinstance(v, list) and all(is_int(s) and s >= 0 for s in v),
         "a list of integers >= 0", stem, "optimizer.")
    state = need(opt, "state", lambda v: isinstance(v, dict), "an object", stem, "optimizer.")
    for name in state:
        need(state, name, lambda v: isinstance(v, dict) and set(v) == {"__array__"}, "an array reference",
             stem, "optimizer.state.")


def _check_metrics(history, stem, metric):
    for key in ("train_loss", metric):
        if key in history:
            need(history, key, lambda v: v is None or is_number(v), "a number", stem, "metrics.")
    if "lowest_train_loss" in history:        # the trainer's rise check (absent: saved before it was recorded)
        need(history, "lowest_train_loss", is_number, "a number", stem, "metrics.")
    if "window_loss" in history:              # the open log window's summed loss (absent: as above)
        need(history, "window_loss", lambda v: is_number(v) and v >= 0, "a number >= 0", stem, "metrics.")
    for key in ("rollbacks", "rise_windows", "explode_windows", "window_steps"):
        if key in history:
            need(history, key, lambda v: is_int(v) and v >= 0, "an integer >= 0", stem, "metrics.")
    best = history.get("best")
    if best is not None:
        need(history, "best", lambda v: isinstance(v, dict), "an object", stem, "metrics.")
        need(best, metric, is_number, "a number", stem, "metrics.best.")
        need(best, "step", lambda v: is_int(v) and v >= 0, "an integer >= 0", stem, "metrics.best.")
        if "scored_on" in best:                   # which held-out data (absent: saved before it was recorded)
            need(best, "scored_on", lambda v: isinstance(v, str), "a string", stem, "metrics.best.")


def check_arrays(model, arrays, stem):
    """Every parameter of ``model`` has an array in ``arrays`` of its shape, float and finite; no extras."""
    import numpy as np

    own = {name: p.shape for name, p in model.named_parameters()}
    missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
    if missing or extra:
        raise damaged(stem, f"its weights do not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, shape in own.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(shape) or a.dtype.kind != "f":
            raise damaged(stem, f"weight {name} is {a.dtype} {tuple(a.shape)}, the model needs float {tuple(shape)}")
        if not np.isfinite(a).all():
            raise damaged(stem, f"weight {name} holds NaN or infinite values")
