"""Numba's on-disk cache of the kernels: keyed by the version and the kernel sources (kernels/cache.py)."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinyrnn.kernels import cache, isa


def test_key_changes_when_any_kernel_source_changes(tmp_path):
    root = tmp_path / "kernels"
    shutil.copytree(cache.KERNELS_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    key = cache.source_key(root, "0.1.0")
    assert key == cache.source_key(root, "0.1.0")             # deterministic
    assert key.startswith("tinyrnn-0.1.0-")
    assert cache.source_key(root, "0.2.0") != key              # an upgrade
    matmul = root / "cpu" / "matmul.py"
    original = matmul.read_text()
    matmul.write_text(original + "\n# an edit of a callee's file\n")
    assert cache.source_key(root, "0.1.0") != key              # an edit
    matmul.write_text(original)
    assert cache.source_key(root, "0.1.0") == key
    (root / "cpu" / "new_kernels.py").write_text("")
    assert cache.source_key(root, "0.1.0") != key              # a new file


def test_remove_other_keys(tmp_path):
    for name in ("tinyrnn-0.0.9-aaaa", "tinyrnn-0.1.0-bbbb", "unrelated"):
        (tmp_path / name / "cpu").mkdir(parents=True)
    cache.remove_other_keys(tmp_path, "tinyrnn-0.1.0-bbbb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyrnn-0.1.0-bbbb", "unrelated"]
    cache.remove_other_keys(tmp_path / "missing", "x")         # never raises


def test_only_kernel_files_are_located(tmp_path):
    def f():
        pass

    other = tmp_path / "elsewhere.py"
    other.write_text("")
    assert cache.KeyedCacheLocator.from_function(f, str(other)) is None


@pytest.mark.skipif(bool(os.environ.get("NUMBA_CACHE_DIR")), reason="NUMBA_CACHE_DIR chooses the cache directory")
def test_compiled_kernels_land_in_the_keyed_directory():
    from tinyrnn.kernels.cpu import elementwise

    x = np.ones(5)
    elementwise.scale_inplace(x, 2.0)
    assert np.all(x == 2.0)
    where = Path(cache.cache_dir(elementwise.__file__))
    assert where.parent.parent.name == cache.source_key() and where.name == "cpu"
    assert where.parent.name == isa.TILE                       # an AVX2 and an AVX-512 build differ
    assert Path(elementwise.scale_inplace._cache._cache_path) == where
    assert list(where.glob("elementwise.scale_inplace-*.nbi"))


_SAMPLE = """
import sys
import numpy as np
from tinyrnn import manual_seed
from tinyrnn.generate import sample_indices
from tinyrnn.models import CharRNN
manual_seed(0)
model = CharRNN(vocab_size=11, cell=sys.argv[1], hidden=24, layers=2, embed=8)
print(np.concatenate(list(sample_indices(model, [1, 2], 12, seed=3, weights=sys.argv[2]))).tolist())
"""


def test_generation_loaded_from_a_cache_another_model_filled(tmp_path):
    """Numba writes a broken cache entry for a cached kernel compiled where a parallel kernel it
    calls was loaded from the cache (numba#4807, #8578). When batch-1 sampling ran a parallel
    region from inside its loop, sampling an LSTM, then a GRU twice (or an RNN), each in a new
    process, crashed the third process with a segfault (any weight format; bfloat16 here, the
    default). Sampling now runs one parallel region, its entry point (``jit.py``); the three cells,
    each compiled and then loaded from one cache, agree with themselves."""
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    outputs = {}
    for step, cell in enumerate(["lstm", "gru", "gru", "rnn", "rnn"]):
        r = subprocess.run([sys.executable, "-c", _SAMPLE, cell, "bf16"], env=env, capture_output=True, text=True)
        assert r.returncode == 0, (step, cell, r.returncode, r.stderr[-2000:])
        outputs.setdefault(cell, []).append(r.stdout)
    assert outputs["gru"][0] == outputs["gru"][1] and outputs["rnn"][0] == outputs["rnn"][1]   # the cache changes nothing


def test_compile_notice_speaks_once_when_numba_compiles_and_not_when_it_loads():
    """``compile_notice`` tells a user why a first run waits: one line as the first compilation
    starts (nested ones say nothing more), nothing when the kernels are compiled already."""
    import numba

    from tinyrnn.kernels.jit import COMPILING, compile_notice

    @numba.njit
    def inner(x):
        return x + 1

    @numba.njit
    def outer(x):
        return inner(x) * 2            # compiling outer compiles inner inside it

    said = []
    with compile_notice(said.append):
        assert outer(1) == 4
        assert outer(2.5) == 7.0       # a second compilation (float), in the same block: still one line
    assert said == [COMPILING]
    said.clear()
    with compile_notice(said.append):
        assert outer(2) == 6           # compiled: silent
    assert said == []
    with compile_notice(None):         # None: nothing to say with
        assert numba.njit(lambda x: x - 1)(1) == 0


def test_kernel_commands_announce_compiling_on_a_terminal_only(monkeypatch):
    """The commands that run kernels wear ``announces_compiling``: the notice goes to stderr when it is
    a terminal, and piped or logged output stays clean (tests and scripts read stderr)."""
    import click
    import numba
    from click.testing import CliRunner

    from tinyrnn.kernels.jit import COMPILING
    from tinyrnn_cli import options
    from tinyrnn_cli.main import cli

    for path in (["sample"], ["eval"], ["fill"], ["tag", "predict"], ["tag", "eval"]):
        command = cli
        for name in path:
            command = command.commands[name]
        assert hasattr(command.callback, "__wrapped__"), path
    assert not hasattr(cli.commands["export"].callback, "__wrapped__")   # the check has teeth: export runs no kernel

    @click.command()
    @options.announces_compiling
    def compiles():
        numba.njit(lambda x: x * 3)(2)         # a fresh function: Numba compiles it
        click.echo("done")

    for terminal in (True, False):
        monkeypatch.setattr(options, "stderr_is_terminal", lambda: terminal)
        r = CliRunner().invoke(compiles, [])
        assert r.exit_code == 0 and r.stdout == "done\n"
        assert (COMPILING in r.stderr) == terminal, r.stderr


_SAVE_AT_ONCE = """
import os, sys, time
from numba.core import caching
from tinyrnn.kernels import cache
directory, me, other, kind = sys.argv[1:]
cls = cache.LockedIndexDataCacheFile if kind == "locked" else caching.IndexDataCacheFile
index = cls(cache_path=directory, filename_base="kernel", source_stamp="stamp")
read, write_index, write_data = index._load_index, index._save_index, index._save_data


def wait_for(what, whose):      # up to 3 s: where a lock holds the other process back, it never comes
    deadline = time.time() + 3
    while not os.path.exists(os.path.join(directory, what + "-" + whose)) and time.time() < deadline:
        time.sleep(0.01)


def mark(what):
    open(os.path.join(directory, what + "-" + me), "w").close()


def read_then_wait():           # both read the index before either writes it
    overloads = read()
    mark("read")
    wait_for("read", other)
    return overloads


def write_index_then_mark(overloads):   # float32 writes the index first, then float64
    if me == "float64":
        wait_for("index", other)
    write_index(overloads)
    mark("index")


def write_data_last(name, data):    # and float32 writes its data after float64 wrote the index
    if me == "float32":
        wait_for("index", other)
    write_data(name, data)


index._load_index, index._save_index, index._save_data = read_then_wait, write_index_then_mark, write_data_last
index.save(me, "machine code of " + me)
"""


def _save_at_once(directory, kind):
    """Two processes save one cache entry each, for two signatures of one kernel, into one
    directory, both reading the index before either writes it, float64 writing the index after
    float32 and float32 its data after that (where the lock lets them)."""
    import subprocess
    import sys

    runs = [subprocess.Popen([sys.executable, "-c", _SAVE_AT_ONCE, str(directory), me, other, kind],
                             stderr=subprocess.PIPE, text=True)
            for me, other in (("float32", "float64"), ("float64", "float32"))]
    for run in runs:
        assert run.wait(timeout=60) == 0, run.stderr.read()[-2000:]
    from numba.core import caching

    index = caching.IndexDataCacheFile(cache_path=str(directory), filename_base="kernel", source_stamp="stamp")
    return {key: index.load(key) for key in ("float32", "float64")}


def test_numba_alone_loses_or_swaps_entries_saved_at_once(tmp_path):
    """Why ``cache.guard`` exists: Numba's own save, in two processes at once, gives both entries
    the same data file, so one signature is lost and the other can load the lost one's machine
    code (here: float64's index entry, float32's code, the order of writes forced)."""
    loaded = _save_at_once(tmp_path, "numba")
    assert loaded == {"float32": None, "float64": "machine code of float32"}


def test_locked_saves_at_once_keep_every_entry_with_its_own_code(tmp_path):
    loaded = _save_at_once(tmp_path, "locked")
    assert loaded == {"float32": "machine code of float32", "float64": "machine code of float64"}


def test_every_kernel_saves_its_cache_under_the_lock():
    from tinyrnn.kernels.cpu import elementwise, matmul, sequence

    for dispatcher in (elementwise.scale_inplace, matmul._micro, sequence._lstm_sequence_forward):
        assert type(dispatcher._cache._cache_file) is cache.LockedIndexDataCacheFile
