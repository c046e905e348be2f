"""Data-parallel training over MPI: N processes train one model, synchronously (Horovod's scheme).

    mpirun -n 4 tinyrnn train poems.txt --batch-size 32      # 4 processes x 8 streams each

Every process holds the whole model and takes its own contiguous block of the rows of every
global batch (``rows``); ``--batch-size`` stays the global batch, so N processes run the same
training as one, up to the order of floating-point sums. One step on rank r:

    loss_r = mean over its n_r tokens; backward -> g_r
    buf = [n_r * g_r (every parameter, flat) | n_r * loss_r | n_r]     one preallocated float32 buffer
    Allreduce(IN_PLACE, buf, SUM)                                       the step's only big message
    g = buf[:P] / n, loss = buf[P] / n  with  n = sum of n_r           the mean over all B*T tokens
    clip(g) -> optimizer step                                          the same on every rank

Weighting by the token counts makes unequal shards (B % N != 0) exact too; the counts travel in
the same buffer, so no rank needs to know the others' in advance. After the step a second, tiny
allreduce (``agree``) makes every rank take rank 0's decision to stop (its clock for
``--time-limit``; a Ctrl-C or SIGTERM on any rank), so none is left waiting in a collective.

Rank 0 alone prints, writes ``metrics.jsonl`` and checkpoints; it also evaluates and broadcasts
the value (``from_root``), so that every rank keeps the same history and best. The carried
hidden state is gathered to rank 0 when a checkpoint is written, so checkpoints always hold the
whole batch and a run can be resumed on any number of processes.

A rank that raises prints ``error: rank R failed: ...`` and calls ``MPI_Abort``: the others stop
within seconds instead of hanging (``guard``). A rank killed outright is the launcher's to
notice (MPICH and Open MPI end the job). Checkpoints are written atomically, so rank 0's last
one stays good.

Outside a launcher nothing here imports MPI: ``world()`` looks at the environment variables
launchers set and returns ``Single()``, whose every method is a no-op.
"""
import contextlib
import os
import signal
import sys
import time

import numpy as np

from .errors import TinyRNNError

# Set by MPICH/Hydra and Intel MPI (PMI_SIZE), Open MPI (OMPI_COMM_WORLD_SIZE), PMIx launchers.
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
ABORT_GRACE_S = 0.5   # seconds a failing rank waits after its error line before MPI_Abort (MPICH's launcher
                      # can kill its I/O forwarding before it reads a line written just before the abort)
INSTALL_HINT = "pip install 'tinyrnn[mpi]' (or mpi4py built against your cluster's MPI; see the README)"


def launched():
    """True when this process was started by an MPI launcher (mpirun/mpiexec/srun) with N > 1."""
    for name in SIZE_VARS:
        value = os.environ.get(name)
        if value is not None:
            return value.isdigit() and int(value) > 1
    return any(name in os.environ for name in RANK_VARS[2:])


def world():
    """The processes this run trains with: ``MPIWorld`` under a launcher, else ``Single`` (no MPI)."""
    if not launched():
        return Single()
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise TinyRNNError(f"started by an MPI launcher, but mpi4py cannot be imported ({e}): {INSTALL_HINT}") from None
    return MPIWorld(MPI)


def rows(batch_size, rank, size):
    """Rank ``rank``'s contiguous block of ``batch_size`` rows: the first ``batch_size % size`` ranks
    take one row more."""
    if batch_size < size:
        raise TinyRNNError(f"--batch-size {batch_size} is smaller than the {size} MPI processes: "
                           "each process needs at least one row of every batch")
    base, extra = divmod(batch_size, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def resume_note(saved, now):
    """What resuming a run trained on ``saved`` processes on ``now`` processes means."""
    def n(k):
        return f"{k} process" + ("es" if k != 1 else "")
    return (f"note: the run was trained on {n(saved)}, continuing on {n(now)}: the same global batch, "
            "only the order of floating-point sums changes")


def cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Single:
    """One process, no MPI: every hook is a no-op (the trainer runs exactly as without this module)."""
    rank, size, is_root = 0, 1, True

    def threads(self, requested):
        return requested

    def check_task(self, task):
        pass

    def precompile(self, compile_kernels):
        compile_kernels()

    def average_gradients(self, params, value, units):
        return value, units

    def agree(self, stop, elapsed):
        return stop, elapsed

    def from_root(self, compute):
        return compute()

    def gather_state(self, arrays):
        return arrays

    def scatter_state(self, arrays):
        return arrays

    @contextlib.contextmanager
    def guard(self):
        yield


class MPIWorld(Single):
    """``size`` processes started by mpirun; the collectives of a training step (see the module doc)."""

    def __init__(self, MPI):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.buffer = None
        self.fail_at = _test_failure(self.rank)

    # ---- set-up ----------------------------------------------------------------------------------
    def local_size(self):
        """Processes of this job on this machine (from the launcher, else a shared-memory split)."""
        for name in LOCAL_SIZE_VARS:
            if os.environ.get(name, "").isdigit():
                return int(os.environ[name])
        with self._machine() as local:
            return local.Get_size()

    @contextlib.contextmanager
    def _machine(self):
        """The ranks on this machine, as a communicator (a shared-memory split)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            yield local
        finally:
            local.Free()

    def threads(self, requested):
        """``--threads`` if given, else this machine's cores shared among its ranks."""
        return requested or max(1, cores() // self.local_size())

    def precompile(self, compile_kernels):
        """A cold cache's kernels compiled once a machine: its first rank runs ``compile_kernels`` (child
        processes, ``kernels/precompile.py``) while the others wait without spinning (a blocking
        barrier polls, and would take a core from the compilers); then every rank loads them from the
        cache, as every later run does. (A machine without the cache in common compiles its own.)"""
        with self._machine() as local:
            if local.Get_rank() == 0:
                compile_kernels()
            done = local.Ibarrier()
            while not done.Test():
                time.sleep(0.05)

    def check_task(self, task):
        """Refuse what cannot be split: a task without shards, a GPU model."""
        if not getattr(task, "shardable", False):
            raise TinyRNNError(f"{type(task).__name__} cannot split its batches across MPI processes yet: "
                               "run it without mpirun")
        if getattr(task.cfg, "device", "cpu") != "cpu":
            raise TinyRNNError("training under mpirun runs on the CPU: drop --device cuda")
        task.shard = (self.rank, self.size)

    # ---- one step --------------------------------------------------------------------------------
    def average_gradients(self, params, value, units):
        """Replace every ``p.grad`` by the token-weighted mean over the ranks, with ONE in-place
        allreduce of a flat float32 buffer -> (global mean loss, global units)."""
        if self.fail_at is not None:
            self.fail_at -= 1
            if self.fail_at <= 0 and os.environ.get("TINYRNN_TEST_FAIL_HOW") == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.fail_at <= 0:
                raise RuntimeError("TINYRNN_TEST_FAIL_RANK: a test asked this rank to fail")
        sizes = [int(np.prod(p.data.shape)) for p in params]
        n = sum(sizes)
        if self.buffer is None or self.buffer.size != n + 2:
            self.buffer = np.empty(n + 2, dtype=np.float32)
        buf, offset = self.buffer, 0
        for p, size in zip(params, sizes):
            part = buf[offset:offset + size]
            if p.grad is None:
                part[:] = 0.0
            else:
                np.multiply(np.asarray(p.grad).reshape(-1), units, out=part)
            offset += size
        buf[n], buf[n + 1] = value * units, units
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        total = float(buf[n + 1])
        buf[:n] *= np.float32(1.0 / total)
        offset = 0
        for p, size in zip(params, sizes):
            grad = buf[offset:offset + size].reshape(p.data.shape)
            if p.grad is None:
                p.grad = grad.copy()
            else:
                np.copyto(p.grad, grad)
            offset += size
        return float(buf[n]) / total, int(round(total))

    def agree(self, stop, elapsed):
        """(stop, elapsed) the same on every rank: stop if any rank was signalled, rank 0's clock."""
        mine = np.array([1.0 if stop else 0.0, elapsed if self.is_root else 0.0])
        self.comm.Allreduce(self.MPI.IN_PLACE, mine, op=self.MPI.MAX)
        return bool(mine[0]), float(mine[1])

    def from_root(self, compute):
        """``compute()`` on rank 0, its (float) result on every rank."""
        value = np.array([compute() if self.is_root else 0.0])
        self.comm.Bcast(value, root=0)
        return float(value[0])

    # ---- checkpoints -------------------------------------------------------------------------------
    def gather_state(self, arrays):
        """The carried state of the whole batch on rank 0 (rows along axis 1), {} elsewhere."""
        parts = self.comm.gather(arrays, root=0)
        if not self.is_root:
            return {}
        return {k: np.concatenate([part[k] for part in parts], axis=1) for k in arrays}

    def scatter_state(self, arrays):
        """This rank's rows (axis 1) of a saved whole-batch state."""
        return {k: np.ascontiguousarray(v[:, rows(v.shape[1], self.rank, self.size)]) for k, v in arrays.items()}

    # ---- failure -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self):
        """A rank that raises says so on stderr and aborts the whole job (no rank left hanging)."""
        try:
            yield
        except BaseException as e:
            if isinstance(e, SystemExit) and e.code in (0, None):
                raise
            if getattr(e, "agreed", False) and not self.is_root:
                self.comm.Barrier()          # raised on every rank: wait for rank 0 to report it and abort
            what = str(e) if isinstance(e, TinyRNNError) else f"{type(e).__name__}: {e}"
            who = "" if getattr(e, "agreed", False) else f"rank {self.rank} failed: "
            print(f"error: {who}{' '.join(what.split())}", file=sys.__stderr__, flush=True)
            try:
                time.sleep(ABORT_GRACE_S)    # let the launcher forward that line: Abort tears its pipes down
            except BaseException:            # a second Ctrl-C (mpiexec forwards each one) must not skip the abort
                pass
            self.comm.Abort(1)
            os._exit(1)                      # Abort may return before the launcher ends this process


def _test_failure(rank):
    """The step at which a test asked this rank to fail (TINYRNN_TEST_FAIL_RANK / _STEP), or None.
    It raises, or with TINYRNN_TEST_FAIL_HOW=kill dies at once (SIGKILL)."""
    if os.environ.get("TINYRNN_TEST_FAIL_RANK") != str(rank):
        return None
    return int(os.environ.get("TINYRNN_TEST_FAIL_STEP", "1"))
