"""A whole recurrent layer (one direction) with the time loop inside Numba.

Same names, arguments and math as ``reference/sequence.py`` (read that first: it is the spec).
Shapes: ``T`` steps, batch ``B``, hidden ``H``, ``G`` gates (LSTM 4, GRU 3, RNN 1);
``xproj (N, G*H)`` packed (step ``t``'s active rows, then step ``t+1``'s: ``_packed_starts``),
``w_hh (G*H, H)`` (PyTorch's layout), ``hs (T+1, B, H)``.

How it is fast
--------------
The work of one step is cut into pieces that need nothing computed by another piece in the same
step: a chunk of ``CHUNK`` (64) contiguous hidden units of a block of batch rows. Each cell's
step for a run of pieces of one row block is one function (``_lstm_forward_step``,
``_lstm_backward_step``, ...):

* Forward: the piece's gate columns of the recurrent matmul,
  ``acts[:, g*H + j] = xproj + h_{t-1} @ W_hh[g*H + j].T`` for every gate ``g`` (the
  pre-activations, written straight into ``acts_out``), then the gate math in place and ``c_t``,
  ``h_t`` of its units and rows. It reads ``h_{t-1}`` of its rows only.
* Backward, step ``t`` (``T`` down to 0): first ``dh = dgates_t @ W_hh`` (the gradient w.r.t.
  ``h_{t-1}``) for its units, then the gate gradients of step ``t-1`` for the same units, which
  need only that ``dh`` and ``dc``. So the elementwise part of step ``t-1`` is fused with the
  matmul of step ``t``: ``T + 1`` steps in all instead of ``2T``.

A row's recurrence never reads another row, so how the pieces are shared out (``_schedule``):

* Enough rows (``B >= 4 * threads``, the training batches): the rows are cut into one block a
  thread (of about equal work: ``_balanced_rows``), and each thread runs its block through every
  chunk and every step. The whole layer is ONE parallel region, with no barrier between steps,
  and the threads share no state (at most the cache line at a block's edge, when a row of H
  numbers is not a whole number of lines).
* Few rows: each step is a parallel region over (chunk, row block) items, so the units are what
  is cut; a barrier ends each step, as step ``t + 1`` needs every unit of ``h_t``.

A thread's block of rows takes all its chunks in one call of the step function, whose products
go gate by gate and, within a gate, chunk by chunk: each row of ``xproj`` and ``acts`` (at B = 32,
H = 256 a 4 KB page of its own) is then read and written in address order, where a chunk's four
gates at a time visited it in 256-byte pieces H numbers apart. (Why that matters, most likely: the
L2 prefetcher follows an ascending run within a page.) Measured on the Intel VM (2 threads, old
and new alternating in one process): the LSTM forward 0.89-0.96x the time at config b, its
backward (its ``dh`` products likewise before the gate math of all its units) 0.95-0.98x, the GRU
forward 0.91-0.98x at d and e; bit for bit the same numbers. The GRU backward ran 1.01-1.20x
slower that way there, but 0.90-0.94x on the Zen 4 VM (d and e; bit for bit the same gradients;
why the two CPUs differ was not found), so it takes all its chunks a call where the target is an
AMD core (``isa.amd_target``: ``GRU_BACKWARD_ALL_CHUNKS``) and one chunk a call elsewhere (a
Haswell build, as an Intel laptop runs, even on an AMD CPU). The RNN's steps keep one chunk a
call (one gate: chunk by chunk is address order). (One thread's products over the same rows at
every step, kept in cache, ran 1.2-1.3x faster than over fresh rows; software prefetches, before
or inside the micro tile, and huge pages did not recover that; the order above and the gates
written over their input, below, did: BENCHMARKS.md.)

The thread count reaches each compiled kernel as an argument from its Python wrapper
(``numba.get_num_threads()`` read inside a kernel would make it uncacheable, and a constant
would be frozen into the cache).

Measured (Intel Xeon, Sapphire Rapids class, 2 threads, B = 32, H = 128, forward and backward per
step): one region a step, 33 and 33 us; one region, 19 and 16. Of the forward's 14 us, about 2 were
the region and its barrier, about 3 reading ``h_{t-1}`` that the other core had just written
half of, and about 4 the gate math: rows of ``acts`` written in 256-byte pieces interleaved with
the other thread's, which Intel's prefetchers pulled across cores (the gate math alone, 2 threads:
9.3 us a step cut by units, 5.1 cut by rows; 1 thread: 7.8). At H = 512, B = 64 both ways take the same.

The recurrent matmul is the matmul's SIMD micro tile (``gemm_panel_block`` in ``matmul.py``:
6 or 4 batch rows x 64 columns held in registers for the whole ``k`` loop). Its right-hand side is
packed once per call into 64-column panels (``pack_panels``): the forward multiplies by
``W_hh.T``, one panel per (gate, chunk), holding ``W_hh[g*H + u0 : g*H + u1].T``; the backward by
``W_hh`` itself, one panel per chunk, holding ``W_hh[:, u0:u1]``. The forward's micro tile adds
``xproj`` as it stores, so the pre-activations are written once. Packed, each panel's rows are
contiguous; read in place, rows 1-4 KB apart fell into a few cache sets and ran at half speed.

The gate math of each cell is written once, for one unit, in ``_lstm_unit`` / ``_gru_unit``
(and their ``_backward``, in ``cells.py``), and runs here on SIMD vectors (``simd.py``): 16 units per call, loaded
with ``vload(acts[b], gate*H + j)`` and stored with ``vstore``; the same function, given
scalars, does the last ``H % 16`` units. (Loops that LLVM vectorises by itself, over slices of
64 units, paid for runtime alias checks and remainder loops on every batch row: the LSTM
backward step took 36 us on one core at B = 32, H = 128, and takes 27 with vectors.) The RNN
cell's one-line math stays a plain loop over slices, which LLVM vectorises.

Variable lengths (``batch_sizes``, see the reference): the recurrent matmul and the gate math of
step ``t`` run on the active rows ``:batch_sizes[t]`` of a block (a C-contiguous view;
``gemm_panel_block`` takes any row count, ragged tiles included); each piece copies the state of
its units forward for its inactive rows and zeroes their gates (forward) or gate gradients (backward). A full
batch runs the same code with empty loops over inactive rows.

Arrays are C-contiguous, except ``dhs`` (the gradient arriving from above, often a
time-reversed view), which may have any strides. ``acts_out`` may be ``xproj``'s memory (no
padding; see the reference): a tile reads each number of ``xproj`` as it stores the pre-activation
in its place, and the GRU's gate math reads ``xproj``'s n part just before writing n over it.

Nothing is allocated inside the time loops; float32 uses the fast sigmoid/tanh (``activations.py``),
float64 exact math.

Batch-1 generation of a whole model (``*_generate``) is in ``generate.py``.
"""
import numba
import numpy as np

from ..isa import amd_target
from ..jit import kernel, parallel_kernel, prange
from .activations import tanh
from .cells import _gru_unit, _gru_unit_backward, _lstm_unit, _lstm_unit_backward
from .matmul import MR, MR_MAX, NR, gemm_panel_block, pack_panels
from .norm import normalise_row
from .simd import LANES, vload, vstore

CHUNK = NR      # hidden units per chunk (64): one micro tile wide, and 256 bytes of float32
# the GRU backward's step: all of a thread's chunks a call on AMD's cores, one chunk a call elsewhere
# (module docstring: 0.90-0.94x the time on Zen 4, 1.01-1.20x on the Intel VM)
GRU_BACKWARD_ALL_CHUNKS = amd_target()


@kernel
def _schedule(batch_sizes, B, H, n_threads):
    """How a layer's work is cut between threads: (n_chunks, bounds, whole, n_items).

    The units are cut into n_chunks chunks of CHUNK, the batch into row blocks, block k holding
    rows bounds[k] .. bounds[k+1] - 1. A row's recurrence needs nothing from another row, so
    when every thread can have MR rows or more (B >= MR * n_threads), ``whole`` is True: one block
    a thread, each runs its rows through every step and every chunk, and the layer is ONE
    parallel region. The blocks are cut so that their rows' lengths add up to about the same
    (``_balanced_rows``; equal rows for a full batch). Otherwise (a small batch) each step is a
    region whose work items are (chunk, block) pairs, item = block * n_chunks + chunk: the units
    are what is cut, and the rows too when the chunks alone are fewer than the threads (the
    tagger's char RNN: H = 50, one chunk). Every element is computed by the same arithmetic
    either way: results do not depend on the cut."""
    n_chunks = (H + CHUNK - 1) // CHUNK
    if B >= MR * n_threads:
        return n_chunks, _balanced_rows(batch_sizes, B, n_threads), True, n_threads
    n_blocks = 1
    if n_chunks < n_threads:
        n_blocks = max(1, min((n_threads + n_chunks - 1) // n_chunks, B // (4 * MR)))
    rows = max(MR, ((B + n_blocks - 1) // n_blocks + MR - 1) // MR * MR)
    n_blocks = (B + rows - 1) // rows
    bounds = np.empty(n_blocks + 1, np.int64)
    for k in range(n_blocks + 1):
        bounds[k] = min(k * rows, B)
    return n_chunks, bounds, False, n_chunks * n_blocks


@kernel
def _balanced_rows(batch_sizes, B, n_blocks):
    """bounds (n_blocks + 1,): rows cut into n_blocks consecutive blocks of about equal work, a
    row's work being its length (the steps t with batch_sizes[t] > row: the rows are sorted
    longest first, so equal rows would give the first block the most work). Each block gets at
    least one row."""
    ends = np.zeros(B + 1, np.int64)              # ends[n]: steps with exactly n active rows
    for t in range(batch_sizes.shape[0]):
        ends[min(max(batch_sizes[t], 0), B)] += 1
    length = np.empty(B, np.int64)                # length[b]: steps with more than b active rows
    running = np.int64(0)
    for b in range(B - 1, -1, -1):
        running += ends[b + 1]
        length[b] = running
    total = np.int64(0)
    for b in range(B):
        total += length[b] + 1                    # + 1: a row costs something even when idle
    bounds = np.empty(n_blocks + 1, np.int64)
    bounds[0], bounds[n_blocks] = 0, B
    done, b = np.int64(0), np.int64(0)           # work of rows 0 .. b-1
    for k in range(1, n_blocks):
        # block k-1 takes rows until the blocks so far hold k / n_blocks of the work: at least
        # one row, and it leaves one for each block after it
        while b < B - (n_blocks - k) and (b == bounds[k - 1] or done * n_blocks < total * k):
            done += length[b] + 1
            b += 1
        bounds[k] = b
    return bounds


@kernel
def _packed_starts(batch_sizes):
    """starts (T+1,): step t's rows of a packed array are starts[t] .. starts[t+1]-1."""
    starts = np.empty(batch_sizes.shape[0] + 1, np.int64)
    starts[0] = 0
    for t in range(batch_sizes.shape[0]):
        starts[t + 1] = starts[t] + batch_sizes[t]
    return starts


@kernel
def _span(item, n_chunks, bounds, whole):
    """(chunk0, chunk1, r0, r1): the unit chunks chunk0 .. chunk1-1 and the rows r0 .. r1-1 of one work item."""
    if whole:
        return 0, n_chunks, bounds[item], bounds[item + 1]
    block, chunk = item // n_chunks, item % n_chunks
    return chunk, chunk + 1, bounds[block], bounds[block + 1]


@kernel
def _regions(n_steps, whole):
    """(regions, steps a region): one region running every step, or one region a step."""
    return (1, n_steps) if whole else (n_steps, 1)


@kernel
def _units(chunk, H):
    """The hidden units u0 .. u1-1 of a chunk."""
    return chunk * CHUNK, min(chunk * CHUNK + CHUNK, H)


@kernel
def _chunks_panel_block(s, panels, init, out, col, chunk0, chunk1, H, add, work):
    """``gemm_panel_block`` for the units of chunks chunk0 .. chunk1-1 of one gate, chunk after chunk
    (so each row of out is written in address order): out[:, col + j] = (init[:, col + j] if add
    else 0) + s @ W_gate[j].T for those units j; panels: the gate's packed panels, one a chunk."""
    for chunk in range(chunk0, chunk1):
        c0, c1 = _units(chunk, H)
        gemm_panel_block(s, panels[chunk], init, out, col + c0, c1 - c0, add, work)


# ---------------------------------------------------------------------------------------- LSTM

def lstm_sequence_forward(xproj, w_hh, h0, c0, batch_sizes, hs_out, cs_out, acts_out):
    """xproj (N, 4H) packed, w_hh (4H, H), h0, c0 (B, H), batch_sizes (T,)
    -> hs_out, cs_out (T+1, B, H), acts_out (T, B, 4H)."""
    _lstm_sequence_forward(xproj, w_hh, h0, c0, batch_sizes, hs_out, cs_out, acts_out, numba.get_num_threads())


@parallel_kernel
def _lstm_sequence_forward(xproj, w_hh, h0, c0, batch_sizes, hs_out, cs_out, acts_out, n_threads):
    """``lstm_sequence_forward``, its work cut for n_threads threads (``_schedule``)."""
    T = batch_sizes.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    cs_out[0, :, :] = c0
    starts = _packed_starts(batch_sizes)
    w = pack_panels(np.ascontiguousarray(w_hh), False, 4)    # [gate, chunk]: W_hh[gate*H + u0:u1].T
    n_chunks, bounds, whole, n_items = _schedule(batch_sizes, B, H, n_threads)
    work = np.empty((n_items, MR_MAX * NR), h0.dtype)
    regions, per_region = _regions(T, whole)
    for region in range(regions):
        for item in prange(n_items):
            chunk0, chunk1, r0, r1 = _span(item, n_chunks, bounds, whole)
            for k in range(per_region):
                _lstm_forward_step(region * per_region + k, chunk0, chunk1, r0, r1, xproj, starts, w, batch_sizes,
                                   hs_out, cs_out, acts_out, work[item])


@kernel
def _lstm_forward_step(t, chunk0, chunk1, r0, r1, xproj, starts, w, batch_sizes, hs_out, cs_out, acts_out, work):
    """Step t of rows r0 .. r1-1 for the units of chunks chunk0 .. chunk1-1: their gate
    pre-activations, the gates, c_t and h_t. Needs h_{t-1} of the same rows (all units),
    nothing else computed."""
    H = hs_out.shape[2]
    u0, u1 = _units(chunk0, H)[0], _units(chunk1 - 1, H)[1]
    h_prev, c_prev, acts, h, c = hs_out[t], cs_out[t], acts_out[t], hs_out[t + 1], cs_out[t + 1]
    x = xproj[starts[t]:starts[t + 1]]                   # step t's active rows (packed)
    n, a1 = u1 - u0, max(r0, min(r1, batch_sizes[t]))    # this item's active rows: r0 .. a1-1
    # acts[:, gate*H + j] = xproj + h_prev @ W_hh[gate*H + j].T: the pre-activations, for now
    for gate in range(4):
        _chunks_panel_block(h_prev[r0:a1], w[gate], x[r0:a1], acts[r0:a1], gate * H, chunk0, chunk1, H, True, work)
    for b in range(a1, r1):                 # inactive rows keep their state
        for j in range(u0, u1):
            h[b, j] = h_prev[b, j]
            c[b, j] = c_prev[b, j]
        for gate in range(4):
            acts[b, gate * H + u0:gate * H + u1] = 0
    # the gate activations (in place in acts), c and h of this chunk's units
    v1 = u1 - n % LANES
    for b in range(r0, a1):
        a, cp, cn, hn = acts[b], c_prev[b], c[b], h[b]
        for j in range(u0, v1, LANES):      # 16 units at a time (SIMD vectors)
            i, f, g, o, cj, hj = _lstm_unit(vload(a, j), vload(a, H + j), vload(a, 2 * H + j),
                                            vload(a, 3 * H + j), vload(cp, j))
            vstore(a, j, i)
            vstore(a, H + j, f)
            vstore(a, 2 * H + j, g)
            vstore(a, 3 * H + j, o)
            vstore(cn, j, cj)
            vstore(hn, j, hj)
        for j in range(v1, u1):             # the rest, one at a time
            a[j], a[H + j], a[2 * H + j], a[3 * H + j], cn[j], hn[j] = _lstm_unit(
                a[j], a[H + j], a[2 * H + j], a[3 * H + j], cp[j])


def lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, batch_sizes, dgates_out, dh0_out, dc0_out):
    """w_hh (4H, H); hs, cs (T+1, B, H); acts (T, B, 4H); dhs (T, B, H); dh_n, dc_n (B, H); batch_sizes (T,)
    -> dgates_out (T, B, 4H), dh0_out, dc0_out (B, H).

    dh0_out and dc0_out serve as the running dh, dc (gradients w.r.t. the state after step t)."""
    _lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, batch_sizes, dgates_out, dh0_out,
                            dc0_out, numba.get_num_threads())


@parallel_kernel
def _lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, batch_sizes, dgates_out, dh0_out, dc0_out, n_threads):
    """``lstm_sequence_backward``, its work cut for n_threads threads (``_schedule``)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh0_out[:, :] = dh_n
    dc0_out[:, :] = dc_n
    n_chunks, bounds, whole, n_items = _schedule(batch_sizes, B, H, n_threads)
    work = np.empty((n_items, MR_MAX * NR), dh_n.dtype)
    regions, per_region = _regions(T + 1, whole)
    for region in range(regions):
        for item in prange(n_items):
            chunk0, chunk1, r0, r1 = _span(item, n_chunks, bounds, whole)
            for k in range(per_region):
                _lstm_backward_step(T - region * per_region - k, chunk0, chunk1, r0, r1, w, hs, cs, acts, dhs,
                                    batch_sizes, dgates_out, dh0_out, dc0_out, work[item])


@kernel
def _lstm_backward_step(t, chunk0, chunk1, r0, r1, w, hs, cs, acts, dhs, batch_sizes, dgates_out, dh, dc, work):
    """Backward step t (T .. 0) of rows r0 .. r1-1 for the units of chunks chunk0 .. chunk1-1: dh
    w.r.t. h_t (= dgates_t @ W_hh, left from step t+1), then the gate gradients of step t-1,
    which need only that dh and dc of these units and rows. dh, dc (B, H): the running gradients."""
    T, H = dhs.shape[0], dhs.shape[2]
    u0, u1 = _units(chunk0, H)[0], _units(chunk1 - 1, H)[1]
    one = dh.dtype.type(1)
    nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1:
    ns = batch_sizes[t - 1] if t > 0 else 0      # the others pass dh, dc through unchanged
    a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # this item's rows active at t, at t-1
    if t < T:       # dh = dgates_t @ W_hh for these units (dh_n before the first step)
        _chunks_panel_block(dgates_out[t, r0:a1], w[0], dh[r0:a1], dh[r0:a1], 0, chunk0, chunk1, H, False, work)
    if t > 0:       # gate gradients of step s = t-1 for the same units: they need only their dh, dc
        s, n = t - 1, u1 - u0
        v1 = u1 - n % LANES
        for b in range(s1, r1):
            for gate in range(4):
                dgates_out[s, b, gate * H + u0:gate * H + u1] = 0
        for b in range(r0, s1):
            # dh of step s, all paths: through h_{s+1} (computed above) and the layer output
            dh_b, dh_out = dh[b, u0:u1], dhs[s, b, u0:u1]
            for j in range(n):
                dh_b[j] += dh_out[j]
            a, d, db, dcb, c, cp = acts[s, b], dgates_out[s, b], dh[b], dc[b], cs[s + 1, b], cs[s, b]
            for j in range(u0, v1, LANES):  # 16 units at a time (SIMD vectors)
                di, df, dg, do, dc_prev = _lstm_unit_backward(
                    vload(a, j), vload(a, H + j), vload(a, 2 * H + j), vload(a, 3 * H + j),
                    vload(c, j), vload(cp, j), vload(db, j), vload(dcb, j), one)
                vstore(d, j, di)
                vstore(d, H + j, df)
                vstore(d, 2 * H + j, dg)
                vstore(d, 3 * H + j, do)
                vstore(dcb, j, dc_prev)
            for j in range(v1, u1):         # the rest, one at a time
                d[j], d[H + j], d[2 * H + j], d[3 * H + j], dcb[j] = _lstm_unit_backward(
                    a[j], a[H + j], a[2 * H + j], a[3 * H + j], c[j], cp[j], db[j], dcb[j], one)


# ----------------------------------------------------------------------------------------- GRU

def gru_sequence_forward(xproj, w_hh, b_hh, h0, batch_sizes, hs_out, acts_out, ghn_out):
    """xproj (N, 3H) packed (with b_ih), w_hh (3H, H), b_hh (3H,), h0 (B, H), batch_sizes (T,)
    -> hs_out (T+1, B, H), acts_out (T, B, 3H) = (r, z, n), ghn_out (T, B, H) = h_t @ W_hn.T + b_hn."""
    _gru_sequence_forward(xproj, w_hh, b_hh, h0, batch_sizes, hs_out, acts_out, ghn_out, numba.get_num_threads())


@parallel_kernel
def _gru_sequence_forward(xproj, w_hh, b_hh, h0, batch_sizes, hs_out, acts_out, ghn_out, n_threads):
    """``gru_sequence_forward``, its work cut for n_threads threads (``_schedule``)."""
    T = batch_sizes.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    starts = _packed_starts(batch_sizes)
    bh = np.ascontiguousarray(b_hh)
    w = pack_panels(np.ascontiguousarray(w_hh), False, 3)    # [gate, chunk]: W_hh[gate*H + u0:u1].T
    n_chunks, bounds, whole, n_items = _schedule(batch_sizes, B, H, n_threads)
    work = np.empty((n_items, MR_MAX * NR), h0.dtype)
    regions, per_region = _regions(T, whole)
    for region in range(regions):
        for item in prange(n_items):
            chunk0, chunk1, r0, r1 = _span(item, n_chunks, bounds, whole)
            for k in range(per_region):
                _gru_forward_step(region * per_region + k, chunk0, chunk1, r0, r1, xproj, starts, w, bh, batch_sizes,
                                  hs_out, acts_out, ghn_out, work[item])


@kernel
def _gru_forward_step(t, chunk0, chunk1, r0, r1, xproj, starts, w, bh, batch_sizes, hs_out, acts_out, ghn_out, work):
    """Step t of rows r0 .. r1-1 for the units of chunks chunk0 .. chunk1-1: the gate
    pre-activations, the gates and h_t. Needs h_{t-1} of the same rows (all units), nothing else
    computed."""
    H = hs_out.shape[2]
    u0, u1 = _units(chunk0, H)[0], _units(chunk1 - 1, H)[1]
    one = hs_out.dtype.type(1)
    x = xproj[starts[t]:starts[t + 1]]               # step t's active rows (packed)
    h_prev, h, acts, ghn = hs_out[t], hs_out[t + 1], acts_out[t], ghn_out[t]
    a1 = max(r0, min(r1, batch_sizes[t]))       # this item's active rows: r0 .. a1-1
    hp_act, ghn_act = h_prev[r0:a1], ghn[r0:a1]
    # acts[:, r and z] = gi_{r,z} + h_prev @ W_h{r,z}.T (b_h{r,z} added below);
    # ghn = b_hn + h_prev @ W_hn.T
    for gate in range(2):
        _chunks_panel_block(hp_act, w[gate], x[r0:a1], acts[r0:a1], gate * H, chunk0, chunk1, H, True, work)
    for b in range(r0, a1):
        ghn[b, u0:u1] = bh[2 * H + u0:2 * H + u1]
    _chunks_panel_block(hp_act, w[2], ghn_act, ghn_act, 0, chunk0, chunk1, H, True, work)
    for b in range(a1, r1):                 # inactive rows keep their state
        for j in range(u0, u1):
            h[b, j] = h_prev[b, j]
        ghn[b, u0:u1] = 0
        for gate in range(3):
            acts[b, gate * H + u0:gate * H + u1] = 0
    # the gate activations (in place in acts) and h of this chunk's units
    v1 = u1 - (u1 - u0) % LANES
    for b in range(r0, a1):
        a, xb, gh, hp, hn = acts[b], x[b], ghn[b], h_prev[b], h[b]
        for j in range(u0, v1, LANES):      # 16 units at a time (SIMD vectors)
            r, z, n, hj = _gru_unit(vload(a, j), vload(a, H + j), vload(bh, j), vload(bh, H + j),
                                    vload(xb, 2 * H + j), vload(gh, j), vload(hp, j), one)
            vstore(a, j, r)
            vstore(a, H + j, z)
            vstore(a, 2 * H + j, n)
            vstore(hn, j, hj)
        for j in range(v1, u1):             # the rest, one at a time
            a[j], a[H + j], a[2 * H + j], hn[j] = _gru_unit(
                a[j], a[H + j], bh[j], bh[H + j], xb[2 * H + j], gh[j], hp[j], one)


def gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, batch_sizes, dgi_out, dgh_out, dh0_out):
    """w_hh (3H, H); hs (T+1, B, H); acts (T, B, 3H); ghn, dhs (T, B, H); dh_n (B, H); batch_sizes (T,)
    -> dgi_out, dgh_out (T, B, 3H), dh0_out (B, H) (also the running dh)."""
    _gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, batch_sizes, dgi_out, dgh_out,
                           dh0_out, numba.get_num_threads())


@parallel_kernel
def _gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, batch_sizes, dgi_out, dgh_out, dh0_out, n_threads):
    """``gru_sequence_backward``, its work cut for n_threads threads (``_schedule``)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh0_out[:, :] = dh_n
    n_chunks, bounds, whole, n_items = _schedule(batch_sizes, B, H, n_threads)
    work = np.empty((n_items, MR_MAX * NR), dh_n.dtype)
    regions, per_region = _regions(T + 1, whole)
    per_call = n_chunks if GRU_BACKWARD_ALL_CHUNKS else 1     # unit chunks a call of the step
    for region in range(regions):
        for item in prange(n_items):
            chunk0, chunk1, r0, r1 = _span(item, n_chunks, bounds, whole)
            for k in range(per_region):
                t = T - region * per_region - k
                for c in range(chunk0, chunk1, per_call):
                    _gru_backward_step(t, c, min(c + per_call, chunk1), r0, r1, w, hs, acts, ghn, dhs, batch_sizes,
                                       dgi_out, dgh_out, dh0_out, work[item])


@kernel
def _gru_backward_step(t, chunk0, chunk1, r0, r1, w, hs, acts, ghn, dhs, batch_sizes, dgi_out, dgh_out, dh, work):
    """Backward step t (T .. 0) of rows r0 .. r1-1 for the units of chunks chunk0 .. chunk1-1: dh
    w.r.t. h_t (its direct part dh * z, left from step t+1, plus dgh_t @ W_hh), then the gate
    gradients of step t-1 for these units and rows. dh (B, H): the running gradient."""
    T, H = dhs.shape[0], dhs.shape[2]
    u0, u1 = _units(chunk0, H)[0], _units(chunk1 - 1, H)[1]
    one = dh.dtype.type(1)
    nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1
    ns = batch_sizes[t - 1] if t > 0 else 0
    a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # this item's rows active at t, at t-1
    if t < T:       # dh (= the direct path dh_t * z, left below) += dgh_t @ W_hh
        _chunks_panel_block(dgh_out[t, r0:a1], w[0], dh[r0:a1], dh[r0:a1], 0, chunk0, chunk1, H, True, work)
    if t > 0:       # gate gradients of step s = t-1 for this chunk's units
        s, m = t - 1, u1 - u0
        v1 = u1 - m % LANES
        for b in range(s1, r1):             # inactive rows: zero gradients, dh passes through
            for gate in range(3):
                dgi_out[s, b, gate * H + u0:gate * H + u1] = 0
                dgh_out[s, b, gate * H + u0:gate * H + u1] = 0
        for b in range(r0, s1):
            # dh of step s, all paths: through h_{s+1} (computed above) and the layer output
            dh_b, dh_out = dh[b, u0:u1], dhs[s, b, u0:u1]
            for j in range(m):
                dh_b[j] += dh_out[j]
            # dgi = (dr, dz, dn), dgh = (dr, dz, dn * r); dh keeps its direct part dh * z
            a, di, dg, gh, hp, db = acts[s, b], dgi_out[s, b], dgh_out[s, b], ghn[s, b], hs[s, b], dh[b]
            for j in range(u0, v1, LANES):  # 16 units at a time (SIMD vectors)
                r, n = vload(a, j), vload(a, 2 * H + j)
                dr, dz, dn, dh_direct = _gru_unit_backward(
                    r, vload(a, H + j), n, vload(gh, j), vload(hp, j), vload(db, j), one)
                vstore(di, j, dr)
                vstore(di, H + j, dz)
                vstore(di, 2 * H + j, dn)
                vstore(dg, j, dr)
                vstore(dg, H + j, dz)
                vstore(dg, 2 * H + j, dn * r)
                vstore(db, j, dh_direct)
            for j in range(v1, u1):         # the rest, one at a time
                dr, dz, dn, db[j] = _gru_unit_backward(a[j], a[H + j], a[2 * H + j], gh[j], hp[j], db[j], one)
                di[j], di[H + j], di[2 * H + j] = dr, dz, dn
                dg[j], dg[H + j], dg[2 * H + j] = dr, dz, dn * a[j]


# ----------------------------------------------------------------------------- layer-normalised GRU
# Its recurrent side is normalised over all 3H numbers of a row at every step, so a row's gate math
# needs all of that row's products first: the work is cut by rows only (``_row_blocks``), each thread
# running its block of rows through every step and every unit, in ONE parallel region (as the other
# cells do with enough rows). With fewer rows than threads some threads idle. A row's mean and
# variance, and the backward's two row means, are summed in float64 (as ``norm.py``).

@kernel
def _row_blocks(batch_sizes, B, n_threads):
    """bounds (n_blocks + 1,): the rows cut into one block a thread (fewer when B is smaller), of
    about equal work (``_balanced_rows``)."""
    return _balanced_rows(batch_sizes, B, max(1, min(n_threads, B)))


def layer_norm_gru_sequence_forward(xproj, w_hh, ln_weight, ln_bias, eps, h0, batch_sizes, hs_out, acts_out,
                                    xhat_out, rstd_out):
    """xproj (N, 3H) packed (the normalised input side), w_hh (3H, H), ln_weight, ln_bias (3H,), h0 (B, H),
    batch_sizes (T,) -> hs_out (T+1, B, H), acts_out (T, B, 3H) = (r, z, n), xhat_out (T, B, 3H), rstd_out (T, B)."""
    _layer_norm_gru_sequence_forward(xproj, w_hh, ln_weight, ln_bias, eps, h0, batch_sizes, hs_out, acts_out,
                                     xhat_out, rstd_out, numba.get_num_threads())


@parallel_kernel
def _layer_norm_gru_sequence_forward(xproj, w_hh, ln_weight, ln_bias, eps, h0, batch_sizes, hs_out, acts_out,
                                     xhat_out, rstd_out, n_threads):
    """``layer_norm_gru_sequence_forward``, its rows cut into a block a thread (``_row_blocks``)."""
    T = batch_sizes.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    starts = _packed_starts(batch_sizes)
    gain, shift = np.ascontiguousarray(ln_weight), np.ascontiguousarray(ln_bias)
    w = pack_panels(np.ascontiguousarray(w_hh), False, 3)    # [gate, chunk]: W_hh[gate*H + u0:u1].T
    bounds = _row_blocks(batch_sizes, B, n_threads)
    n_blocks = bounds.shape[0] - 1
    work = np.empty((n_blocks, MR_MAX * NR), h0.dtype)
    for block in prange(n_blocks):
        for t in range(T):
            _layer_norm_gru_forward_step(t, bounds[block], bounds[block + 1], xproj, starts, w, gain, shift, eps,
                                         batch_sizes, hs_out, acts_out, xhat_out, rstd_out, work[block])


@kernel
def _layer_norm_gru_forward_step(t, r0, r1, xproj, starts, w, gain, shift, eps, batch_sizes, hs_out, acts_out,
                                 xhat_out, rstd_out, work):
    """Step t of rows r0 .. r1-1, every unit: the recurrent products, their normalisation, the gates, h_t."""
    H = hs_out.shape[2]
    n_chunks = (H + CHUNK - 1) // CHUNK
    one = hs_out.dtype.type(1)
    x = xproj[starts[t]:starts[t + 1]]               # step t's active rows (packed)
    h_prev, h, acts, xhat = hs_out[t], hs_out[t + 1], acts_out[t], xhat_out[t]
    a1 = max(r0, min(r1, batch_sizes[t]))       # the block's active rows: r0 .. a1-1
    for gate in range(3):                       # xhat = h_prev @ W_hh.T, normalised below
        _chunks_panel_block(h_prev[r0:a1], w[gate], xhat[r0:a1], xhat[r0:a1], gate * H, 0, n_chunks, H, False, work)
    for b in range(a1, r1):                     # inactive rows keep their state
        h[b, :] = h_prev[b, :]
        acts[b, :] = 0
        xhat[b, :] = 0
        rstd_out[t, b] = 0
    v1 = H - H % LANES
    for b in range(r0, a1):
        rstd_out[t, b] = normalise_row(xhat[b], xhat[b], eps)[1]
        a, xb, nb, hp, hn = acts[b], x[b], xhat[b], h_prev[b], h[b]
        for j in range(0, v1, LANES):           # 16 units at a time (SIMD vectors)
            r, z, n, hj = _gru_unit(vload(xb, j), vload(xb, H + j),
                                    vload(nb, j) * vload(gain, j) + vload(shift, j),
                                    vload(nb, H + j) * vload(gain, H + j) + vload(shift, H + j), vload(xb, 2 * H + j),
                                    vload(nb, 2 * H + j) * vload(gain, 2 * H + j) + vload(shift, 2 * H + j),
                                    vload(hp, j), one)
            vstore(a, j, r)
            vstore(a, H + j, z)
            vstore(a, 2 * H + j, n)
            vstore(hn, j, hj)
        for j in range(v1, H):                  # the rest, one at a time
            a[j], a[H + j], a[2 * H + j], hn[j] = _gru_unit(
                xb[j], xb[H + j], nb[j] * gain[j] + shift[j], nb[H + j] * gain[H + j] + shift[H + j], xb[2 * H + j],
                nb[2 * H + j] * gain[2 * H + j] + shift[2 * H + j], hp[j], one)


def layer_norm_gru_sequence_backward(w_hh, ln_weight, ln_bias, hs, acts, xhat, rstd, dhs, dh_n, batch_sizes,
                                     dgi_out, dgh_out, draw_out, dh0_out):
    """w_hh (3H, H); ln_weight, ln_bias (3H,); hs (T+1, B, H); acts, xhat (T, B, 3H); rstd (T, B); dhs (T, B, H);
    dh_n (B, H); batch_sizes (T,) -> dgi_out, dgh_out, draw_out (T, B, 3H), dh0_out (B, H) (also the running dh)."""
    _layer_norm_gru_sequence_backward(w_hh, ln_weight, ln_bias, hs, acts, xhat, rstd, dhs, dh_n, batch_sizes,
                                      dgi_out, dgh_out, draw_out, dh0_out, numba.get_num_threads())


@parallel_kernel
def _layer_norm_gru_sequence_backward(w_hh, ln_weight, ln_bias, hs, acts, xhat, rstd, dhs, dh_n, batch_sizes,
                                      dgi_out, dgh_out, draw_out, dh0_out, n_threads):
    """``layer_norm_gru_sequence_backward``, its rows cut into a block a thread (``_row_blocks``)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    gain, shift = np.ascontiguousarray(ln_weight), np.ascontiguousarray(ln_bias)
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh0_out[:, :] = dh_n
    bounds = _row_blocks(batch_sizes, B, n_threads)
    n_blocks = bounds.shape[0] - 1
    work = np.empty((n_blocks, MR_MAX * NR), dh_n.dtype)
    for block in prange(n_blocks):
        for t in range(T, -1, -1):
            _layer_norm_gru_backward_step(t, bounds[block], bounds[block + 1], w, gain, shift, hs, acts, xhat, rstd,
                                          dhs, batch_sizes, dgi_out, dgh_out, draw_out, dh0_out, work[block])


@kernel
def _layer_norm_gru_backward_step(t, r0, r1, w, gain, shift, hs, acts, xhat, rstd, dhs, batch_sizes, dgi_out,
                                  dgh_out, draw_out, dh, work):
    """Backward step t (T .. 0) of rows r0 .. r1-1, every unit: dh w.r.t. h_t (its direct part, left
    from step t+1, plus draw_t @ W_hh), then step t-1's gate gradients and its normalisation's
    backward. dh (B, H): the running gradient."""
    T, H = dhs.shape[0], dhs.shape[2]
    n_chunks = (H + CHUNK - 1) // CHUNK
    one = dh.dtype.type(1)
    nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1
    ns = batch_sizes[t - 1] if t > 0 else 0
    a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # the block's rows active at t, at t-1
    if t < T:       # dh (= the direct path dh_t * z, left below) += draw_t @ W_hh
        _chunks_panel_block(draw_out[t, r0:a1], w[0], dh[r0:a1], dh[r0:a1], 0, 0, n_chunks, H, True, work)
    if t == 0:
        return
    s = t - 1
    for b in range(s1, r1):                     # inactive rows: zero gradients, dh passes through
        dgi_out[s, b, :] = 0
        dgh_out[s, b, :] = 0
        draw_out[s, b, :] = 0
    v1 = H - H % LANES
    for b in range(r0, s1):
        db = dh[b]
        for j in range(H):                      # dh of step s, all paths: through h_{s+1} and the output
            db[j] += dhs[s, b, j]
        # dgi = (dr, dz, dn), dgh = (dr, dz, dn * r); dh keeps its direct part dh * z
        a, di, dg, nb_, hp = acts[s, b], dgi_out[s, b], dgh_out[s, b], xhat[s, b], hs[s, b]
        for j in range(0, v1, LANES):           # 16 units at a time (SIMD vectors)
            r, n = vload(a, j), vload(a, 2 * H + j)
            gh_n = vload(nb_, 2 * H + j) * vload(gain, 2 * H + j) + vload(shift, 2 * H + j)
            dr, dz, dn, dh_direct = _gru_unit_backward(r, vload(a, H + j), n, gh_n, vload(hp, j), vload(db, j), one)
            vstore(di, j, dr)
            vstore(di, H + j, dz)
            vstore(di, 2 * H + j, dn)
            vstore(dg, j, dr)
            vstore(dg, H + j, dz)
            vstore(dg, 2 * H + j, dn * r)
            vstore(db, j, dh_direct)
        for j in range(v1, H):                  # the rest, one at a time
            gh_n = nb_[2 * H + j] * gain[2 * H + j] + shift[2 * H + j]
            dr, dz, dn, db[j] = _gru_unit_backward(a[j], a[H + j], a[2 * H + j], gh_n, hp[j], db[j], one)
            di[j], di[H + j], di[2 * H + j] = dr, dz, dn
            dg[j], dg[H + j], dg[2 * H + j] = dr, dz, dn * a[j]
        _normalise_row_backward(dg, gain, nb_, rstd[s, b], draw_out[s, b])


@kernel
def _normalise_row_backward(dy, gain, xhat, rstd, dx):
    """The gradient w.r.t. a row v before ``normalise_row`` and the gain (y = xhat * gain + shift):
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gain (float64 sums)."""
    D = dy.shape[0]
    sum_g, sum_gx = 0.0, 0.0
    for k in range(D):
        g = dy[k] * gain[k]
        sum_g += g
        sum_gx += g * xhat[k]
    mean_g, mean_gx = sum_g / D, sum_gx / D
    for k in range(D):
        dx[k] = rstd * (dy[k] * gain[k] - mean_g - xhat[k] * mean_gx)


# ----------------------------------------------------------------------------------------- RNN

def rnn_sequence_forward(xproj, w_hh, h0, batch_sizes, hs_out, relu):
    """xproj (N, H) packed, w_hh (H, H), h0 (B, H), batch_sizes (T,) -> hs_out (T+1, B, H); h = tanh or relu of the pre-activation."""
    _rnn_sequence_forward(xproj, w_hh, h0, batch_sizes, hs_out, relu, numba.get_num_threads())


@parallel_kernel
def _rnn_sequence_forward(xproj, w_hh, h0, batch_sizes, hs_out, relu, n_threads):
    """``rnn_sequence_forward``, its work cut for n_threads threads (``_schedule``)."""
    T = batch_sizes.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    starts = _packed_starts(batch_sizes)
    w = pack_panels(np.ascontiguousarray(w_hh), False, 1)    # [0, chunk]: W_hh[u0:u1].T
    n_chunks, bounds, whole, n_items = _schedule(batch_sizes, B, H, n_threads)
    work = np.empty((n_items, MR_MAX * NR), h0.dtype)
    regions, per_region = _regions(T, whole)
    for region in range(regions):
        for item in prange(n_items):
            chunk0, chunk1, r0, r1 = _span(item, n_chunks, bounds, whole)
            for k in range(per_region):
                for chunk in range(chunk0, chunk1):
                    _rnn_forward_step(region * per_region + k, chunk, r0, r1, xproj, starts, w, batch_sizes, hs_out,
                                      relu, work[item])


@kernel
def _rnn_forward_step(t, chunk, r0, r1, xproj, starts, w, batch_sizes, hs_out, relu, work):
    """Step t of rows r0 .. r1-1 for the units of one chunk: h_t = tanh or relu(xproj + h_{t-1} @ W_hh.T)."""
    H = hs_out.shape[2]
    u0, u1 = _units(chunk, H)
    zero = hs_out.dtype.type(0)
    h_prev, h = hs_out[t], hs_out[t + 1]
    a1 = max(r0, min(r1, batch_sizes[t]))       # this item's active rows: r0 .. a1-1
    # h = xproj + h_prev @ W_hh.T, the pre-activation, for now
    x = xproj[starts[t]:starts[t + 1]]               # step t's active rows (packed)
    gemm_panel_block(h_prev[r0:a1], w[0, chunk], x[r0:a1], h[r0:a1], u0, u1 - u0, True, work)
    for b in range(a1, r1):                 # inactive rows keep their state
        for j in range(u0, u1):
            h[b, j] = h_prev[b, j]
    for b in range(r0, a1):
        hn = h[b, u0:u1]
        if relu:
            for j in range(u1 - u0):
                hn[j] = max(hn[j], zero)
        else:
            for j in range(u1 - u0):
                hn[j] = tanh(hn[j])


def rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, batch_sizes, dpre_out, dh0_out):
    """w_hh (H, H); hs (T+1, B, H); dhs (T, B, H); dh_n (B, H); batch_sizes (T,) -> dpre_out (T, B, H), dh0_out (B, H)."""
    _rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, batch_sizes, dpre_out, dh0_out, numba.get_num_threads())


@parallel_kernel
def _rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, batch_sizes, dpre_out, dh0_out, n_threads):
    """``rnn_sequence_backward``, its work cut for n_threads threads (``_schedule``)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh0_out[:, :] = dh_n
    n_chunks, bounds, whole, n_items = _schedule(batch_sizes, B, H, n_threads)
    work = np.empty((n_items, MR_MAX * NR), dh_n.dtype)
    regions, per_region = _regions(T + 1, whole)
    for region in range(regions):
        for item in prange(n_items):
            chunk0, chunk1, r0, r1 = _span(item, n_chunks, bounds, whole)
            for k in range(per_region):
                for chunk in range(chunk0, chunk1):
                    _rnn_backward_step(T - region * per_region - k, chunk, r0, r1, w, hs, dhs, relu, batch_sizes,
                                       dpre_out, dh0_out, work[item])


@kernel
def _rnn_backward_step(t, chunk, r0, r1, w, hs, dhs, relu, batch_sizes, dpre_out, dh, work):
    """Backward step t (T .. 0) of rows r0 .. r1-1 for the units of one chunk: dh = dpre_t @ W_hh,
    then dpre of step t-1 = (dh + dhs) * (1 - h^2), or masked by h > 0 for relu."""
    T, H = dhs.shape[0], dhs.shape[2]
    u0, u1 = _units(chunk, H)
    zero, one = dh.dtype.type(0), dh.dtype.type(1)
    nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1
    ns = batch_sizes[t - 1] if t > 0 else 0
    a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # this item's rows active at t, at t-1
    if t < T:       # dh = dpre_t @ W_hh
        gemm_panel_block(dpre_out[t, r0:a1], w[0, chunk], dh[r0:a1], dh[r0:a1], u0, u1 - u0, False, work)
    if t > 0:       # dpre_s = (dh + dhs) * (1 - h^2), or masked by h > 0 for relu; s = t-1
        s, n = t - 1, u1 - u0
        for b in range(s1, r1):             # inactive rows: zero gradient, dh passes through
            dpre_out[s, b, u0:u1] = zero
        for b in range(r0, s1):
            h, dh_s, dh_out, dpre = hs[s + 1, b, u0:u1], dh[b, u0:u1], dhs[s, b, u0:u1], dpre_out[s, b, u0:u1]
            for j in range(n):
                dh_s[j] += dh_out[j]
            if relu:
                for j in range(n):
                    dpre[j] = dh_s[j] if h[j] > zero else zero
            else:
                for j in range(n):
                    dpre[j] = dh_s[j] * (one - h[j] * h[j])
