"""One training process per run directory: ``RunLock`` takes an exclusive lock on ``DIR/.lock``.

    with RunLock("runs/poems"):        # TinyRNNError if another process holds it, naming its pid
        ...train, save checkpoints, append metrics...

The lock is ``fcntl.flock`` on an open file, so the operating system releases it when the process
dies, however it dies (a kill -9 included): there is never a stale lock to remove by hand. The
holder writes its pid into the file, for the message the second process prints. On systems
without ``fcntl`` (Windows) there is no lock.
"""
import os

from .errors import TinyRNNError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:                 # pragma: no cover - Windows
    fcntl = None


class RunLock:
    """An exclusive, non-blocking lock on a run directory (which must exist)."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd = None

    def acquire(self):
        """Take the lock, or raise TinyRNNError naming the process that holds it."""
        from .checkpoint import file_mode, os_error_line

        if fcntl is None or self.fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as e:
            raise TinyRNNError(os_error_line(e, "create the lock file", self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise TinyRNNError(f"{self.directory} is in use by another tinyrnn run ({who}): wait for it to finish "
                               "or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)          # closing the file releases the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
