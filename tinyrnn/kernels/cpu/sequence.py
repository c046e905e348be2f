"""A whole recurrent layer (one direction) with the time loop inside Numba.

Same names, arguments and math as ``reference/sequence.py`` (read that first: it is the spec).
Shapes: ``T`` steps, batch ``B``, hidden ``H``, ``G`` gates (LSTM 4, GRU 3, RNN 1);
``xproj (T, B, G*H)``, ``w_hh (G*H, H)`` (PyTorch's layout), ``hs (T+1, B, H)``.

How it is fast
--------------
The hidden units are split into chunks of ``CHUNK`` (64) contiguous units, the parallel work items
(``prange``); when there are fewer chunks than threads (H = 50: one chunk), the batch rows are cut
into blocks too (``_work_items``: an item is a chunk of units x a block of rows). Every step is ONE
parallel region, because the thread that owns units ``u0 .. u1`` of rows ``r0 .. r1`` needs,
within a step, nothing computed by another thread:

* Forward: it computes only *its* gate columns of the recurrent matmul,
  ``acts[:, g*H + j] = xproj + h_{t-1} @ W_hh[g*H + j].T`` for every gate ``g`` (the
  pre-activations, written straight into ``acts_out``), then the gate math in place and ``c_t``,
  ``h_t`` of its units. No two threads write the same element.
* Backward: the region of step ``t`` first computes ``dh = dgates_t @ W_hh`` (the gradient w.r.t.
  ``h_{t-1}``) for its units, then the gate gradients of step ``t-1`` for the same units, which
  need only that ``dh`` and ``dc`` of those units. So the elementwise part of step ``t-1`` is fused
  into the matmul region of step ``t``: ``T + 1`` regions in all instead of ``2T``.

The recurrent matmul is the matmul's SIMD micro tile (``gemm_panel_block`` in ``matmul.py``:
6 or 4 batch rows x 64 columns held in registers for the whole ``k`` loop). Its right-hand side is
packed once per call into 64-column panels (``pack_panels``): the forward multiplies by
``W_hh.T``, one panel per (gate, chunk), holding ``W_hh[g*H + u0 : g*H + u1].T``; the backward by
``W_hh`` itself, one panel per chunk, holding ``W_hh[:, u0:u1]``. The forward's micro tile adds
``xproj`` as it stores, so the pre-activations are written once. Packed, each panel's rows are
contiguous; read in place, rows 1-4 KB apart fell into a few cache sets and ran at half speed.
At B = 32, H = 256 the forward step takes ~54 us on 2 threads (~310 GFLOP/s counting the matmul
alone), the backward ~58 us.

The gate math of each cell is written once, for one unit, in ``_lstm_unit`` / ``_gru_unit``
(and their ``_backward``, in ``cells.py``), and runs here on SIMD vectors (``simd.py``): 16 units per call, loaded
with ``vload(acts[b], gate*H + j)`` and stored with ``vstore``; the same function, given
scalars, does the last ``H % 16`` units. (Loops that LLVM vectorises by itself, over slices of
64 units, paid for runtime alias checks and remainder loops on every batch row: the LSTM
backward step took 36 us on one core at B = 32, H = 128, and takes 27 with vectors.) The RNN
cell's one-line math stays a plain loop over slices, which LLVM vectorises.

Variable lengths (``batch_sizes``, see the reference): the recurrent matmul and the gate math of
step ``t`` run on the row prefix ``:batch_sizes[t]`` (a C-contiguous view; ``gemm_panel_block``
takes any row count, ragged tiles included); each thread copies the state of its units forward
for the inactive rows and zeroes their gates (forward) or gate gradients (backward). A full
batch runs the same code with empty loops over inactive rows.

Arrays are C-contiguous, except ``dhs`` (the gradient arriving from above, often a
time-reversed view), which may have any strides.

Nothing is allocated inside the time loops; float32 uses the fast sigmoid/tanh (``activations.py``),
float64 exact math.

Batch-1 generation of a whole model (``*_generate``) is in ``generate.py``.
"""
import numba
import numpy as np

from ..jit import kernel, parallel_kernel, prange
from .activations import tanh
from .cells import _gru_unit, _gru_unit_backward, _lstm_unit, _lstm_unit_backward
from .matmul import MR, MR_MAX, NR, gemm_panel_block, pack_panels
from .simd import LANES, vload, vstore

CHUNK = NR      # hidden units per parallel work item (64): one micro tile wide, and 256 bytes of
                # float32 (two threads never write the same cache line); H = 128 gives 2 items
CORES = max(2, numba.config.NUMBA_NUM_THREADS)   # work items wanted per step, at least (a constant:
                # numba.get_num_threads() inside a kernel would make it uncacheable)


@kernel
def _work_items(B, H):
    """(n_chunks, rows, n_items): the parallel work items of a step are (unit chunk, row block)
    pairs, item = block * n_chunks + chunk. Rows are independent within a step (forward: a row's
    gates need only its own h_{t-1}; backward: its dh needs only its own gate gradients), so when
    the chunks alone are fewer than the cores (the tagger's char RNN: H = 50, one chunk) the
    batch is cut into blocks of ``rows`` (a multiple of MR) as well; otherwise rows = B, one block.
    Every element is still computed by the same arithmetic: results do not depend on the cut."""
    n_chunks = (H + CHUNK - 1) // CHUNK
    n_blocks = 1
    if n_chunks < CORES:
        n_blocks = max(1, min((CORES + n_chunks - 1) // n_chunks, B // (4 * MR)))
    rows = max(MR, ((B + n_blocks - 1) // n_blocks + MR - 1) // MR * MR)
    return n_chunks, rows, n_chunks * ((B + rows - 1) // rows)


@kernel
def part_of(item, n_chunks):
    """The unit chunk of a work item (its panel index)."""
    return item % n_chunks


@kernel
def _item(item, n_chunks, rows, B, H):
    """(u0, u1, r0, r1): the hidden units and the batch rows of one work item."""
    part = part_of(item, n_chunks)
    r0 = (item // n_chunks) * rows
    return part * CHUNK, min(part * CHUNK + CHUNK, H), r0, min(r0 + rows, B)


# ---------------------------------------------------------------------------------------- LSTM

@parallel_kernel
def lstm_sequence_forward(xproj, w_hh, h0, c0, batch_sizes, hs_out, cs_out, acts_out):
    """xproj (T, B, 4H), w_hh (4H, H), h0, c0 (B, H), batch_sizes (T,)
    -> hs_out, cs_out (T+1, B, H), acts_out (T, B, 4H)."""
    T = xproj.shape[0]
    B, H = h0.shape
    hs_out[0, :, :] = h0
    cs_out[0, :, :] = c0
    w = pack_panels(np.ascontiguousarray(w_hh), False, 4)    # [gate, chunk]: W_hh[gate*H + u0:u1].T
    n_chunks, rows, n_items = _work_items(B, H)
    work = np.empty((n_items, MR_MAX * NR), h0.dtype)
    for t in range(T):
        h_prev, c_prev, acts, h, c = hs_out[t], cs_out[t], acts_out[t], hs_out[t + 1], cs_out[t + 1]
        nb = batch_sizes[t]                          # active rows: 0 .. nb-1
        for item in prange(n_items):
            u0, u1, r0, r1 = _item(item, n_chunks, rows, B, H)
            n, a1 = u1 - u0, max(r0, min(r1, nb))    # this item's active rows: r0 .. a1-1
            # acts[:, gate*H + j] = xproj + h_prev @ W_hh[gate*H + j].T: the pre-activations, for now
            for gate in range(4):
                gemm_panel_block(h_prev[r0:a1], w[gate, part_of(item, n_chunks)], xproj[t, r0:a1], acts[r0:a1],
                                 gate * H + u0, n, True, work[item])
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


@parallel_kernel
def lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, batch_sizes, dgates_out, dh0_out, dc0_out):
    """w_hh (4H, H); hs, cs (T+1, B, H); acts (T, B, 4H); dhs (T, B, H); dh_n, dc_n (B, H); batch_sizes (T,)
    -> dgates_out (T, B, 4H), dh0_out, dc0_out (B, H).

    dh0_out and dc0_out serve as the running dh, dc (gradients w.r.t. the state after step t)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    one = dh_n.dtype.type(1)
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh, dc = dh0_out, dc0_out
    dgates2 = dgates_out.reshape(T * B, 4 * H)              # step t's rows: t*B .. t*B + B - 1
    dh[:, :] = dh_n
    dc[:, :] = dc_n
    n_chunks, rows, n_items = _work_items(B, H)
    work = np.empty((n_items, MR_MAX * NR), dh_n.dtype)
    for t in range(T, -1, -1):
        nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1:
        ns = batch_sizes[t - 1] if t > 0 else 0      # the others pass dh, dc through unchanged
        # one parallel region per step: dh w.r.t. h_t, then the gate gradients of step t-1
        for item in prange(n_items):
            u0, u1, r0, r1 = _item(item, n_chunks, rows, B, H)
            a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # this item's rows active at t, at t-1
            if t < T:       # dh = dgates_t @ W_hh for this chunk's units (dh_n before the first step)
                gemm_panel_block(dgates2[t * B + r0:t * B + a1], w[0, part_of(item, n_chunks)], dh[r0:a1],
                                 dh[r0:a1], u0, u1 - u0, False, work[item])
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

@parallel_kernel
def gru_sequence_forward(xproj, w_hh, b_hh, h0, batch_sizes, hs_out, acts_out, ghn_out):
    """xproj (T, B, 3H) (with b_ih), w_hh (3H, H), b_hh (3H,), h0 (B, H), batch_sizes (T,)
    -> hs_out (T+1, B, H), acts_out (T, B, 3H) = (r, z, n), ghn_out (T, B, H) = h_t @ W_hn.T + b_hn."""
    T = xproj.shape[0]
    B, H = h0.shape
    one = h0.dtype.type(1)
    hs_out[0, :, :] = h0
    bh = np.ascontiguousarray(b_hh)
    w = pack_panels(np.ascontiguousarray(w_hh), False, 3)    # [gate, chunk]: W_hh[gate*H + u0:u1].T
    n_chunks, rows, n_items = _work_items(B, H)
    work = np.empty((n_items, MR_MAX * NR), h0.dtype)
    for t in range(T):
        x, h_prev, h, acts, ghn = xproj[t], hs_out[t], hs_out[t + 1], acts_out[t], ghn_out[t]
        nb = batch_sizes[t]                          # active rows: 0 .. nb-1
        for item in prange(n_items):
            u0, u1, r0, r1 = _item(item, n_chunks, rows, B, H)
            a1, part = max(r0, min(r1, nb)), part_of(item, n_chunks)    # this item's active rows: r0 .. a1-1
            hp_act, ghn_act = h_prev[r0:a1], ghn[r0:a1]
            # acts[:, r and z] = gi_{r,z} + h_prev @ W_h{r,z}.T (b_h{r,z} added below);
            # ghn = b_hn + h_prev @ W_hn.T
            for gate in range(2):
                gemm_panel_block(hp_act, w[gate, part], x[r0:a1], acts[r0:a1], gate * H + u0, u1 - u0, True,
                                 work[item])
            for b in range(r0, a1):
                ghn[b, u0:u1] = b_hh[2 * H + u0:2 * H + u1]
            gemm_panel_block(hp_act, w[2, part], ghn_act, ghn_act, u0, u1 - u0, True, work[item])
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


@parallel_kernel
def gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, batch_sizes, dgi_out, dgh_out, dh0_out):
    """w_hh (3H, H); hs (T+1, B, H); acts (T, B, 3H); ghn, dhs (T, B, H); dh_n (B, H); batch_sizes (T,)
    -> dgi_out, dgh_out (T, B, 3H), dh0_out (B, H) (also the running dh)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    one = dh_n.dtype.type(1)
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh = dh0_out
    dh[:, :] = dh_n
    dgh2 = dgh_out.reshape(T * B, 3 * H)                    # step t's rows: t*B .. t*B + B - 1
    n_chunks, rows, n_items = _work_items(B, H)
    work = np.empty((n_items, MR_MAX * NR), dh_n.dtype)
    for t in range(T, -1, -1):
        nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1
        ns = batch_sizes[t - 1] if t > 0 else 0
        for item in prange(n_items):
            u0, u1, r0, r1 = _item(item, n_chunks, rows, B, H)
            a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # this item's rows active at t, at t-1
            if t < T:       # dh (= the direct path dh_t * z, left below) += dgh_t @ W_hh
                gemm_panel_block(dgh2[t * B + r0:t * B + a1], w[0, part_of(item, n_chunks)], dh[r0:a1], dh[r0:a1],
                                 u0, u1 - u0, True, work[item])
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


# ----------------------------------------------------------------------------------------- RNN

@parallel_kernel
def rnn_sequence_forward(xproj, w_hh, h0, batch_sizes, hs_out, relu):
    """xproj (T, B, H), w_hh (H, H), h0 (B, H), batch_sizes (T,) -> hs_out (T+1, B, H); h = tanh or relu of the pre-activation."""
    T = xproj.shape[0]
    B, H = h0.shape
    zero = h0.dtype.type(0)
    hs_out[0, :, :] = h0
    w = pack_panels(np.ascontiguousarray(w_hh), False, 1)    # [0, chunk]: W_hh[u0:u1].T
    n_chunks, rows, n_items = _work_items(B, H)
    work = np.empty((n_items, MR_MAX * NR), h0.dtype)
    for t in range(T):
        h_prev, h = hs_out[t], hs_out[t + 1]
        nb = batch_sizes[t]                          # active rows: 0 .. nb-1
        for item in prange(n_items):
            u0, u1, r0, r1 = _item(item, n_chunks, rows, B, H)
            a1 = max(r0, min(r1, nb))                # this item's active rows: r0 .. a1-1
            # h = xproj + h_prev @ W_hh.T, the pre-activation, for now
            gemm_panel_block(h_prev[r0:a1], w[0, part_of(item, n_chunks)], xproj[t, r0:a1], h[r0:a1], u0, u1 - u0,
                             True, work[item])
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


@parallel_kernel
def rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, batch_sizes, dpre_out, dh0_out):
    """w_hh (H, H); hs (T+1, B, H); dhs (T, B, H); dh_n (B, H); batch_sizes (T,) -> dpre_out (T, B, H), dh0_out (B, H)."""
    T = dhs.shape[0]
    B, H = dh_n.shape
    zero, one = dh_n.dtype.type(0), dh_n.dtype.type(1)
    w = pack_panels(np.ascontiguousarray(w_hh), True, 1)     # [0, chunk]: W_hh[:, u0:u1]
    dh = dh0_out
    dh[:, :] = dh_n
    dpre2 = dpre_out.reshape(T * B, H)                      # step t's rows: t*B .. t*B + B - 1
    n_chunks, rows, n_items = _work_items(B, H)
    work = np.empty((n_items, MR_MAX * NR), dh_n.dtype)
    for t in range(T, -1, -1):
        nb = batch_sizes[t] if t < T else 0          # rows active at step t, and at step t-1
        ns = batch_sizes[t - 1] if t > 0 else 0
        for item in prange(n_items):
            u0, u1, r0, r1 = _item(item, n_chunks, rows, B, H)
            a1, s1 = max(r0, min(r1, nb)), max(r0, min(r1, ns))    # this item's rows active at t, at t-1
            if t < T:       # dh = dpre_t @ W_hh
                gemm_panel_block(dpre2[t * B + r0:t * B + a1], w[0, part_of(item, n_chunks)], dh[r0:a1], dh[r0:a1],
                                 u0, u1 - u0, False, work[item])
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
