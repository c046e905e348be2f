"""Where Numba caches the compiled kernels: a directory keyed by the version and the kernel sources.

Numba checks a cached kernel against its *own* source file only (modification time and size).
A kernel that calls a kernel of another module (``cpu/sequence.py`` inlines ``cpu/matmul.py``'s
micro tile and ``cpu/cells.py``'s unit math) would keep a stale copy of the callee after an edit
of the callee's file, or after an upgrade that happened to keep a file's size and time.

So every kernel file under ``tinyrnn/kernels/`` is cached in a directory named by a key::

    key = tinyrnn-<version>-<first 12 hex digits of sha256 over every kernels/**/*.py, path and text>
    <kernels dir>/__pycache__/<key>/<tile>/<subpackage>/  (e.g. .../__pycache__/tinyrnn-0.1.0-1f2e.../6x16/cpu/)
    ~/.cache/tinyrnn/numba/<key>/<tile>/<subpackage>/     when the first is not writable ($XDG_CACHE_HOME)

(<tile>: the matmul micro tile chosen for this CPU, ``isa.TILE``: an AVX2 build and an AVX-512
build of the same sources are different code, and both may be wanted on one machine.)

Any edit of any kernel file, or another version, gives a new key and so a fresh, empty cache;
the directories of other keys are deleted on first use (best effort). The key is computed once,
when ``jit.py`` is first imported (about 1 ms). A user's ``NUMBA_CACHE_DIR`` is respected: then
Numba's own locator is used, with Numba's own (per-file) staleness check.

``install()`` puts ``KeyedCacheLocator`` at the front of Numba's list of cache locators; it
declines (returns None) for any file outside ``tinyrnn/kernels/``, which Numba then locates as usual.

Processes that compile at once write into one directory: the parallel first-run compile
(``precompile.py``), or a user's commands started together after an install (``tinyrnn sample``
with two ``--weights`` formats: two signatures of one sampler kernel). Numba's own ``save`` reads
the index, picks the first free data file name, writes the index, then the data, with no lock:
two processes that read the index before either wrote it, each saving another signature of one
kernel, both pick ``<name>.1.nbc``, and the index can end up naming one signature's machine code
for the other's, which Numba loads without a check (wrong results or a crash). ``guard(dispatcher)`` gives a kernel's cache ``LockedIndexDataCacheFile`` instead, whose
``save`` holds an exclusive lock on ``<directory>/.lock`` from reading the index to writing it,
and writes the data first, so an index never names a file not yet written.
"""
import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from numba.core import caching, config

from .isa import TILE

KERNELS_DIR = Path(__file__).resolve().parent


def source_key(root: Path = KERNELS_DIR, version: str | None = None) -> str:
    """``tinyrnn-<version>-<hash>``: the hash covers the relative path and bytes of every
    ``*.py`` under ``root`` (sorted), so it changes when any kernel source changes."""
    if version is None:
        from .. import __version__ as version
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"tinyrnn-{version}-{digest.hexdigest()[:12]}"


def user_cache_root() -> Path:
    """The fallback: ``$XDG_CACHE_HOME/tinyrnn/numba`` (``~/.cache/tinyrnn/numba``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinyrnn" / "numba"


def remove_other_keys(root: Path, key: str) -> None:
    """Delete ``root/tinyrnn-*`` directories of keys other than ``key``; never raises."""
    try:
        for entry in Path(root).iterdir():
            if entry.name.startswith("tinyrnn-") and entry.name != key and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
    except OSError:
        pass


_KEY = None                 # computed on the first kernel that is located
_CLEANED = set()            # cache roots already swept in this process


class KeyedCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for ``tinyrnn/kernels/**``: ``<root>/<key>/<subpackage>``."""

    def __init__(self, py_func, py_file, root):
        global _KEY
        if _KEY is None:
            _KEY = source_key()
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._root = root
        sub = Path(py_file).resolve().parent.relative_to(KERNELS_DIR).as_posix()
        self._cache_path = str(root / _KEY / TILE / (sub if sub != "." else "_"))

    def get_cache_path(self):
        return self._cache_path

    def ensure_cache_path(self):
        super().ensure_cache_path()
        if self._root not in _CLEANED:
            _CLEANED.add(self._root)
            remove_other_keys(self._root, _KEY)

    @classmethod
    def from_function(cls, py_func, py_file):
        if config.CACHE_DIR:        # the user chose a cache directory: Numba's own locator
            return None
        try:
            Path(py_file).resolve().relative_to(KERNELS_DIR)
        except (ValueError, OSError):
            return None             # not a tinyrnn kernel
        for root in (KERNELS_DIR / "__pycache__", user_cache_root()):
            self = cls(py_func, py_file, root)
            try:
                self.ensure_cache_path()
            except OSError:
                continue            # not writable: try the next root
            return self
        return None


def cache_dir(py_file) -> str:
    """The directory where the kernels of ``py_file`` are cached now (for tests and curious readers)."""

    def f():
        pass

    locator = KeyedCacheLocator.from_function(f, str(py_file))
    return None if locator is None else locator.get_cache_path()


try:
    import fcntl
except ImportError:         # Windows: no lock (Numba's own behaviour)
    fcntl = None


@contextlib.contextmanager
def _exclusive(path: str):
    """Hold an exclusive lock on the file at path (created if missing) for the block: other
    processes (and other open files in this one) wait. No lock where fcntl is missing."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class LockedIndexDataCacheFile(caching.IndexDataCacheFile):
    """Numba's index-and-data cache file, safe for processes saving into one directory at once."""

    def save(self, key, data):
        with _exclusive(os.path.join(self._cache_path, ".lock")):
            overloads = self._load_index()
            name = overloads.get(key)
            if name is None:
                taken = set(overloads.values())
                name = next(self._data_name(i) for i in range(1, len(taken) + 2) if self._data_name(i) not in taken)
            self._save_data(name, data)
            overloads[key] = name
            self._save_index(overloads)


def guard(dispatcher):
    """dispatcher, its on-disk cache (if any) saving through ``LockedIndexDataCacheFile``."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if type(cache_file) is caching.IndexDataCacheFile:
        cache_file.__class__ = LockedIndexDataCacheFile
    return dispatcher


def install() -> None:
    """Put ``KeyedCacheLocator`` first in Numba's locator list (once)."""
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl     # renamed in Numba 0.6x
    classes = impl._locator_classes
    if KeyedCacheLocator not in classes:
        classes.insert(0, KeyedCacheLocator)
