"""A first run's kernels, compiled in parallel processes. (Importing this module imports nothing of Numba.)

Numba compiles one function at a time in a process (it holds a global lock), and a cold cache's
first ``tinyrnn train`` step of the default model (LSTM 2x256) compiled for ~47 s on one core of a
2-core Intel VM: the LSTM layer's forward 17 s (with the matmul micro tiles it calls), ``_gemm``
(the matrix products) 12 s, the layer's backward 9 s, ``_gemm_dot`` 4 s, eight small kernels the
rest. Only more processes use more cores. Before a first step ``precompile(workload)`` looks up
the step's top-level kernels and their argument types in ``signatures.json``; those the cache lacks
are shared out by their recorded compile seconds among up to ``MAX_PROCESSES`` child processes,
one per core (``python -m tinyrnn.kernels.precompile --compile ...``), that compile theirs into the
on-disk cache and exit; the step then loads them. A char model's workload also holds the sampler
(one kernel, 12 s), which the ``tinyrnn sample`` after training would compile. On the VM, a cold
``tinyrnn train --steps 1`` then ``tinyrnn sample``: 43-45 + 11.5 s -> 33-34 + 1.0 s (each process
compiles the matmul micro tiles its kernels call: more work in all than in one).

This process compiles none of them, even on one core: a kernel compiled in the process that runs
it does not run the code its cache entry holds. Its calls to helper kernels that are not inlined
bind to the helpers' own compiled copies, loaded first, where a process that loads it from the
cache runs the copies compiled inside it; the two round differently in the last bit (a GRU layer's
backward: most gradients, by ~1e-7), so a first run trained other weights than the same command
run again. Loading from the cache alone, the first run and every later one train the same bits.

Safe because saves are locked (``cache.LockedIndexDataCacheFile``); without ``fcntl`` (Windows)
one child compiles them all. Nothing here is needed for correctness: a child that fails, or a
kernel the manifest lacks or types differently, is compiled by the step itself, as before.

The manifest is recorded by running each workload's commands (``WORKLOADS``) with a hook on
Numba's entry from Python (``_recording``), cold, so that the seconds are a first run's::

    python -m tinyrnn.kernels.precompile --record      # after changing a kernel's arguments

``tests/test_precompile.py`` fails when a workload's kernels or types no longer match it.
"""
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "signatures.json"
MAX_PROCESSES = 4      # more would mostly compile the same shared micro tiles again

# workload -> the commands that record it, each training for one step on random data of the usual
# sizes (``_write_data``: TEXT, a 200 KB text; TREEBANK, 1,000 CoNLL-U sentences; RUN, the run
# directory): char models `train-<cell>` (then `tinyrnn sample`, whose sampler is one more 12 s
# kernel: the README's first two commands) and `fill-<cell>` (--bidir), taggers `tag-<cell>` (whose
# `tag predict` needs nothing more)
CELLS = ("lstm", "gru", "rnn")
_STEP = ["--out", "RUN", "--steps", "1"]
WORKLOADS = {**{f"train-{cell}": [["train", "TEXT", "--cell", cell, *_STEP], ["sample", "RUN", "--length", "20"]]
                for cell in CELLS},
             **{f"fill-{cell}": [["train", "TEXT", "--cell", cell, "--bidir", *_STEP]] for cell in CELLS},
             **{f"tag-{cell}": [["tag", "train", "TREEBANK", "--dev", "TREEBANK", "--cell", cell, *_STEP]]
                for cell in CELLS}}


def workload(family: str, cell: str, bidir: bool = False) -> str:
    """The manifest's name for training a model of ``family`` ('char' or 'tagger')."""
    if family == "tagger":
        return f"tag-{cell}"
    return f"{'fill' if bidir else 'train'}-{cell}"


# ------------------------------------------------------------------------------ the manifest

def load_manifest(path=None) -> dict:
    """{workload: [[module, kernel, argument types (``_encoded``), cold compile seconds], ...]}
    from path (default MANIFEST)."""
    with open(MANIFEST if path is None else path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(manifest, path=None):
    """The manifest as JSON, one entry a line, to path (default MANIFEST)."""
    lines = [f" {json.dumps(name)}: [\n" + ",\n".join("  " + json.dumps(entry) for entry in entries) + "\n ]"
             for name, entries in manifest.items()]
    Path(MANIFEST if path is None else path).write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


def _encoded(t):
    """A Numba argument type as JSON: "int64", "bool", ["array", dtype, ndim, layout, readonly],
    ["tuple", [items]]. (Numba's own reprs changed between versions; these do not.)"""
    from numba import types

    if isinstance(t, types.Array):
        return ["array", _encoded(t.dtype), t.ndim, t.layout, not t.mutable]
    if isinstance(t, types.BaseTuple):
        return ["tuple", [_encoded(item) for item in t]]
    if isinstance(t, (types.Integer, types.Float, types.Boolean)):
        return "bool" if isinstance(t, types.Boolean) else t.name
    raise TypeError(f"precompile cannot record the argument type {t}")


def _decoded(e):
    """``_encoded``'s inverse."""
    from numba import types

    if isinstance(e, str):
        return types.boolean if e == "bool" else getattr(types, e)
    if e[0] == "array":
        return types.Array(_decoded(e[1]), e[2], e[3], readonly=e[4])
    return types.Tuple([_decoded(item) for item in e[1]])


def _types(encoded):
    """A signature's argument types from their ``_encoded`` list."""
    return tuple(_decoded(e) for e in encoded)


def _kernel(module, name):
    import importlib

    return getattr(importlib.import_module(module), name)


def _cached(dispatcher, sig) -> bool:
    """Whether dispatcher has sig compiled in this process or in its on-disk cache."""
    if sig in dispatcher.overloads:
        return True
    disk = getattr(dispatcher, "_cache", None)
    if not hasattr(disk, "_index_key"):
        return False
    return disk._index_key(sig, dispatcher.targetctx.codegen()) in disk._cache_file._load_index()


def missing(name, manifest=None) -> list:
    """The entries of workload ``name`` not compiled yet (none for an unknown workload)."""
    manifest = load_manifest() if manifest is None else manifest
    return [entry for entry in manifest.get(name, []) if not _cached(_kernel(*entry[:2]), _types(entry[2]))]


def share(entries, n) -> list:
    """entries cut into n groups of about equal seconds (largest first, each to the lightest group)."""
    groups, load = [[] for _ in range(n)], [0.0] * n
    for entry in sorted(entries, key=lambda e: -e[3]):
        i = load.index(min(load))
        groups[i].append(entry)
        load[i] += entry[3]
    return groups


def compile_entries(entries):
    """Compile (or load from the cache) each entry's kernel for its argument types, in this process.
    An entry that does not fit the code (a kernel renamed, its types changed) is passed over: the
    step compiles what it needs, and reports a real error itself."""
    for module, name, encoded, _ in entries:
        try:
            _kernel(module, name).compile(_types(encoded))
        except Exception:       # noqa: BLE001 - only a head start is lost
            continue


def precompile(name, processes=None, manifest=None):
    """Before a first step of workload ``name``: compile the kernels the cache lacks in child
    processes, shared among ``processes`` of them (default: one per usable core, at most
    MAX_PROCESSES; one without fcntl, whose cache saves are not locked), while this process waits.
    The step then loads every kernel from the cache, as every later run does: a kernel compiled in the
    process that runs it may round differently in the last bit (its calls bind to the helpers'
    own compiled copies, not to the copies inside its cached code), and a first run would then train
    other weights than the same command run again. Does nothing when all are cached; nor when the
    manifest cannot be read or no process starts (the step then compiles, as without it)."""
    from ..distributed import cores
    from . import cache

    n = min(MAX_PROCESSES, cores()) if processes is None else processes
    if cache.fcntl is None:
        n = 1
    children = []
    try:
        todo = missing(name, manifest)
        # each child in a session of its own: a Ctrl-C at the terminal asks the trainer to stop after
        # its first step, which then needs the children's kernels; the trainer's own exit kills them
        for group in share(todo, min(n, len(todo))):
            children.append(subprocess.Popen([sys.executable, "-m", __name__, "--compile", json.dumps(group)],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, start_new_session=True))
    except Exception:           # noqa: BLE001 - a manifest that does not fit, no interpreter to start
        pass
    try:
        for child in children:
            child.wait()
    finally:                    # only on an exception (a second Ctrl-C) is a child still running
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


# ------------------------------------------------------------------------------ recording

@contextmanager
def _recording():
    """Within the block, every kernel signature that Python calls for the first time in this process
    (Numba's ``_compile_for_args``: compiled, or loaded from the cache) is appended to the list
    yielded, as [module, kernel, its argument types (``_encoded``), seconds]."""
    import time

    from numba.core.dispatcher import Dispatcher

    entries, entry_point = [], Dispatcher._compile_for_args

    def recorded(self, *args, **kws):
        before, t0 = set(self.overloads), time.perf_counter()
        result = entry_point(self, *args, **kws)
        seconds = round(time.perf_counter() - t0, 1)
        for sig in self.overloads:
            if sig not in before and self.py_func.__module__.startswith("tinyrnn.kernels."):
                entries.append([self.py_func.__module__, self.py_func.__qualname__, [_encoded(t) for t in sig], seconds])
        return result

    Dispatcher._compile_for_args = recorded
    try:
        yield entries
    finally:
        Dispatcher._compile_for_args = entry_point


_RECORD = """
import json, sys
from tinyrnn.kernels.precompile import _recording
from tinyrnn_cli.main import cli
with _recording() as entries:
    for command in json.loads(sys.argv[2]):
        if cli.main(args=command, standalone_mode=False):
            sys.exit(f"the workload's command failed: {command}")
with open(sys.argv[1], "w") as f:
    json.dump(entries, f)
"""


def record(name, cold=True) -> list:
    """Run workload ``name``'s commands in a fresh process and return its entries; cold: with an empty
    cache (the seconds are a first run's), else with the usual one."""
    with tempfile.TemporaryDirectory() as tmp:
        out, data = Path(tmp, "entries.json"), _write_data(Path(tmp))
        data["RUN"] = str(Path(tmp, "run"))
        env = dict(os.environ, TINYRNN_PRECOMPILE="0")       # the commands compile all, through the hook
        if cold:
            env["NUMBA_CACHE_DIR"] = str(Path(tmp, "numba"))
        commands = [[data.get(arg, arg) for arg in command] for command in WORKLOADS[name]]
        subprocess.run([sys.executable, "-c", _RECORD, str(out), json.dumps(commands)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text(encoding="utf-8"))


def _write_data(directory: Path) -> dict:
    """A random text and a random treebank in ``directory``: {"TEXT": path, "TREEBANK": path}."""
    import numpy as np

    rng = np.random.default_rng(0)
    text, treebank = directory / "text.txt", directory / "treebank.conllu"
    letters = np.array(list("abcdefghij klmnopqrstuvwxyz.,\n"))
    text.write_text("".join(rng.choice(letters, 200_000)), encoding="utf-8")
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(1, 11))) for _ in range(3000)]
    tags = ["NOUN", "VERB", "ADJ", "ADP", "DET", "PRON", "PUNCT", "ADV"]
    with open(treebank, "w", encoding="utf-8") as f:
        for _ in range(1000):
            for i in range(1, rng.integers(3, 31)):
                f.write(f"{i}\t{words[rng.integers(3000)]}\t_\t{tags[rng.integers(8)]}\t_\t_\t0\t_\t_\t_\n")
            f.write("\n")
    return {"TEXT": str(text), "TREEBANK": str(treebank)}


def main(argv):
    if argv[:1] == ["--compile"]:
        compile_entries(json.loads(argv[1]))
    elif argv[:1] == ["--record"]:
        write_manifest({name: record(name) for name in WORKLOADS})
        print(f"wrote {MANIFEST}")
    else:
        sys.exit("usage: python -m tinyrnn.kernels.precompile --record | --compile ENTRIES_JSON")


if __name__ == "__main__":
    main(sys.argv[1:])
