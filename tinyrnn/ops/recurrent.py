"""The recurrent cells as taped ops: one fused step, and a whole layer over T steps.

The equations of each cell, written once, and the composed form built from primitives, are in
``tinyrnn.nn.cells``; the ops here compute the same functions, fast:

* ``*_step_fused``: the two projections, then ONE op whose forward and backward are the
  Numba gate kernels ``*_cell_forward`` / ``*_cell_backward`` (tinyrnn/kernels/*/cells.py).
* ``*_sequence``: a whole layer in one direction over T steps, ONE op on the tape. The input
  projection for all steps is one matmul; the time loop (h @ W_hh^T plus the gate kernel) and
  backpropagation through time run inside Numba (``*_sequence_forward/backward``); the weight
  gradients are single matmuls over all steps after the backward sweep:
        dW_ih = dgates^T @ x,   dW_hh = dgates^T @ h_{t-1},   dx = dgates @ W_ih.

Shapes: x: (B, I) one step, or (T, B, I) a sequence; h, c: (B, H); G gates per cell (RNN 1,
GRU 3, LSTM 4); weights in PyTorch's layout: w_ih: (G*H, I), w_hh: (G*H, H), b_ih, b_hh: (G*H,).

Each ``*_sequence`` returns (outputs, h_n), and for LSTM (outputs, h_n, c_n): outputs (T, B, H)
are h_1..h_T in input time order, h_n and c_n (B, H) the final states. It is one op with several
results (``record_outputs``), so the tape holds one node per layer and direction, whatever T is;
its backward gets the gradient of each result that was used (zeros stand in for the others).

Variable lengths (``lengths=``, a padded batch sorted by decreasing length; ``Steps``): row b has
``lengths[b]`` real steps, the rest is padding. The kernels run only the active rows of each
step (``batch_sizes``); the reverse direction reads each row from its own last token; the
outputs at padded positions are 0, h_n (c_n) is each row's state after its last step read, and
padding gets exactly zero gradient. The input projection and the weight gradients multiply only
the real tokens' rows, so a padded batch costs about what its tokens cost; the projection reaches
the kernels as it is made, packed (PyTorch's ``PackedSequence`` layout: step t's real rows, then
step t+1's), never spread out over the padding. CPU only (the gathers use numpy fancy indexing).

They run on the CPU or the GPU, wherever their inputs are: ``K`` is the kernel module and ``A``
the array helpers of that device (``tinyrnn.backend``), so the same lines allocate, reverse time
(``x[::-1]`` made contiguous) and gather outputs on both.
"""
from __future__ import annotations

import numpy as np

from ..backend import DeviceError, arrays, kernels
from ..tensor import record, record_outputs
from .primitives import linear, same_device

def _data(A, t):
    return None if t is None else A.contiguous(t.data)


def _bias_sum(A, b_ih, b_hh):
    """b_ih + b_hh (the LSTM and RNN gates see only the sum), or None without biases."""
    if b_ih is None:
        return None
    return A.add(_data(A, b_ih), _data(A, b_hh))


def check_lengths(lengths, T: int, B: int) -> np.ndarray:
    """The lengths of a padded batch of B sequences of up to T steps as int64 (B,);
    ValueError naming the bad values (each must be an integer in [1, T])."""
    arr = np.asarray(lengths)
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence of the batch), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, got {arr.dtype}: {arr.tolist()}")
    bad = arr[(arr < 1) | (arr > T)]
    if bad.size:
        raise ValueError(f"lengths must be in [1, {T}] (T = the padded length); "
                         f"bad values: {sorted(set(bad.tolist()))}")
    return arr.astype(np.int64)


class Steps:
    """The steps one direction of a layer reads, per batch row, over x (T, B, ...).

    lengths None: every row has T steps, read first to last, or last to first (``reverse``: x[::-1]).
    lengths (B,), sorted non-increasing: row b has lengths[b] steps, then padding. Reverse reads row b
    at positions lengths[b]-1 ... 0, then the padding in place: reading step t' is position
    ``lengths[b]-1-t'`` for t' < lengths[b], else t' (``flat``). That map is its own inverse, so
    ``read`` also puts outputs read in that order back in time order.

    batch_sizes (T,): the rows active at each reading step (a prefix: the batch is sorted), for the
    kernels. pad (T, B) bool: the padded positions (None when there are none); the same positions in
    reading order. The input projection and the weight gradients multiply only the N = sum(lengths)
    real tokens' rows (``active``, ``scatter``): in reading order, step t's are rows t*B .. t*B +
    batch_sizes[t] - 1, so they move as T slices (``spans``), never row by row. time_rows (N,):
    where those rows are in time order (t*B + b), for reading the input and putting its gradient back.
    """

    def __init__(self, T: int, B: int, reverse: bool, lengths=None):
        self.reverse, self.flat, self.pad, self.spans, self.time_rows = reverse, None, None, None, None
        self.batch_sizes = np.full(T, B, np.int64)
        if lengths is None:
            return
        lengths = check_lengths(lengths, T, B)
        if np.any(lengths[1:] > lengths[:-1]):
            raise ValueError(f"lengths must be sorted in decreasing order here (the layers sort the batch), "
                             f"got {lengths.tolist()}")
        t, L = np.arange(T)[:, None], lengths[None, :]
        self.batch_sizes = (t < L).sum(axis=1).astype(np.int64)
        if lengths[-1] < T:
            self.pad = t >= L
            starts = np.concatenate([[0], np.cumsum(self.batch_sizes)])
            self.spans = [(k * B, int(starts[k]), int(n)) for k, n in enumerate(self.batch_sizes) if n]
            self.time_rows = np.flatnonzero(~self.pad.reshape(-1))
            if reverse:
                self.flat = (np.where(t < L, L - 1 - t, t) * B + np.arange(B)).reshape(T * B)
                self.time_rows = self.flat[self.time_rows]

    def read(self, A, x, out=None):
        """x (T, B, ...) in reading order (contiguous; or copied into ``out``, contiguous)."""
        if self.flat is not None:           # (padding: CPU only) one gather, straight into out if given
            rows = (-1,) + tuple(x.shape[2:])
            if out is None:
                return x.reshape(rows)[self.flat].reshape(x.shape)
            # mode="clip" (flat is always in range) lets numpy write into out unbuffered
            np.take(x.reshape(rows), self.flat, axis=0, out=out.reshape(rows), mode="clip")
            return out
        y = x[::-1] if self.reverse else x
        if out is None:
            return A.contiguous(y)
        A.copyto(out, y)
        return out

    def read_index(self, idx):
        """Host indices idx (T, B) in reading order, flat (T*B,)."""
        if self.flat is not None:
            return np.ascontiguousarray(idx.reshape(-1)[self.flat])
        return np.ascontiguousarray(idx[::-1] if self.reverse else idx).reshape(-1)

    def active(self, rows):
        """rows (T*B, ...) in reading order -> the real tokens' rows (N, ...) (rows itself without padding)."""
        if self.spans is None:
            return rows
        out = np.empty((len(self.time_rows),) + tuple(rows.shape[1:]), dtype=rows.dtype)
        for r, o, n in self.spans:
            out[o:o + n] = rows[r:r + n]
        return out

    def scatter(self, A, active, n: int):
        """The inverse of ``active``: (N, ...) -> (n = T*B, ...), 0 at the padding."""
        if self.spans is None:
            return active
        full = A.empty((n,) + tuple(active.shape[1:]), dtype=active.dtype)
        B = n // len(self.batch_sizes)
        for r, o, k in self.spans:
            full[r:r + k] = active[o:o + k]
            full[r + k:r + B] = 0
        full[len(self.spans) * B:] = 0          # steps no row reaches (none, once the batch is cut to its longest)
        return full

    def gather(self, A, x):
        """x (T, B, ...) in time order -> the real tokens' rows in reading order (N, ...)."""
        rows = x.reshape((-1,) + tuple(x.shape[2:]))
        if self.spans is None:
            return self.read(A, x).reshape(rows.shape)
        return self.active(rows) if not self.reverse else rows[self.time_rows]

    def put_back(self, A, active, shape):
        """The inverse of ``gather``: (N, ...) -> shape (T, B, ...) in time order, 0 at the padding."""
        if self.spans is None:
            return self.read(A, active.reshape(shape))       # (reversing time is its own inverse)
        if not self.reverse:
            return self.scatter(A, active, shape[0] * shape[1]).reshape(shape)
        full = A.zeros((shape[0] * shape[1],) + tuple(shape[2:]), dtype=active.dtype)
        full[self.time_rows] = active
        return full.reshape(shape)

    def zero_padding(self, x):
        """x (T, B, ...) in time order: zero the padded positions, in place (step t's are rows
        batch_sizes[t]..B-1, in time order as in reading order)."""
        if self.pad is not None:
            for t, n in enumerate(self.batch_sizes.tolist()):
                x[t, n:] = 0


LENGTHS_ON_CPU = "lengths= runs on the CPU; move the batch with .to('cpu')"


def _steps(device, T, B, reverse, lengths):
    if lengths is not None and device != "cpu":
        raise DeviceError(LENGTHS_ON_CPU)
    return Steps(T, B, reverse, lengths)


def _outputs(A, steps, hs):
    """The layer's outputs (T, B, H) in time order, 0 at padding, from hs (T + 1, B, H) in reading
    order: hs[1:] itself (a view, no copy) when read forwards without padding."""
    if not steps.reverse and steps.pad is None:
        return hs[1:]
    out = A.empty((hs.shape[0] - 1,) + tuple(hs.shape[1:]), dtype=hs.dtype)
    steps.read(A, hs[1:], out=out)      # a copy: the kernels' backward still reads hs
    steps.zero_padding(out)
    return out


def _or_zeros(A, g, shape, dtype):
    """A result's gradient, or zeros when nothing used that result (``record_outputs`` gives None)."""
    return A.zeros(shape, dtype=dtype) if g is None else A.contiguous(g)


def _project(K, A, x2, w_ih, bias):
    """x2 @ w_ih.T (+ bias) for all rows at once: (N, I) -> (N, G*H)."""
    out = A.empty((x2.shape[0], w_ih.shape[0]), dtype=x2.dtype)
    K.matmul_nt(x2, w_ih, out, False)
    if bias is not None:
        K.add_bias_forward(out, bias)
    return out


class InputProjection:
    """pre = x @ W_ih^T + bias for all T*B steps of a sequence at once (in reading order), and its backward.

    x: (T, B, I), read in the order of ``steps`` (a ``Steps``); only the real tokens' rows are
    multiplied, and ``out`` (N, G*H) holds them packed, the layout the sequence kernels read: step
    t's rows (``steps.batch_sizes[t]`` of them), then step t+1's, as PyTorch's ``PackedSequence``
    (without padding, N = T*B and ``out`` is (T, B, G*H) reshaped). When x is an
    embedding lookup, x = E[idx], over a vocabulary smaller than T*B, the product is taken over the
    table instead of the rows - the same numbers for V rows of work instead of T*B (a character
    model has V = 65 and T*B = 2048):
        pre     = (E @ W_ih^T + bias)[idx]
        dTable  = scatter-add of dpre's rows by idx          (V, G*H)
        dW_ih   = dTable^T @ E,   dE = dTable @ W_ih,   dbias = dTable summed over rows
    ``source`` is the tensor the input gradient goes to: x itself, or the table E.

    ``norm`` (gain (G*H,), shift (G*H,), eps), for the layer-normalised GRU: pre = layer_norm(x @ W_ih^T)
    * gain + shift instead (``bias`` None). The normalisation is row by row, so over a table it is
    taken on the table's V rows, before the lookup; its backward leaves the gain's and the shift's
    gradients in ``norm_grads``.
    """

    def __init__(self, K, A, x, w_ih, bias, steps, norm=None):
        T, B, I = x.shape
        self.K, self.A, self.w, self.steps, self.shape = K, A, A.contiguous(w_ih.data), steps, x.shape
        self.norm, self.norm_grads = norm, None
        lookup = x._lookup
        if lookup is not None and lookup[0].shape[0] < T * B:
            table, idx = lookup
            self.source, self.rows = table, A.contiguous(table.data)                     # E: (V, I)
            self.idx = steps.active(steps.read_index(idx))                              # (N,)
            projected_table = self._normalise(_project(K, A, self.rows, self.w, bias))   # (V, G*H)
            out = A.empty((self.idx.shape[0], self.w.shape[0]), dtype=self.rows.dtype)
            K.embedding_forward(projected_table, self.idx, out)
        else:
            self.source, self.idx = x, None
            self.rows = steps.gather(A, x.data)                                           # (N, I)
            out = self._normalise(_project(K, A, self.rows, self.w, bias))               # (N, G*H)
        self.out = out             # (N, G*H), packed: step t's real rows, then step t+1's (the kernels' layout)

    def _normalise(self, pre):
        """pre, or (with ``norm``) layer_norm(pre) * gain + shift, keeping what its backward needs."""
        if self.norm is None:
            return pre
        gain, shift, eps = self.norm
        self.pre, out = pre, self.A.empty_like(pre)
        self.mean, self.rstd = (self.A.empty((pre.shape[0],), dtype=pre.dtype) for _ in range(2))
        self.K.layer_norm_forward(pre, gain, shift, eps, out, self.mean, self.rstd)
        return out

    def _normalise_backward(self, dout):
        """The gradient w.r.t. pre from the one w.r.t. ``_normalise``'s result (and ``norm_grads``)."""
        if self.norm is None:
            return dout
        gain = self.norm[0]
        dpre, dgain, dshift = self.A.empty_like(dout), self.A.empty_like(gain), self.A.empty_like(gain)
        self.K.layer_norm_backward(self.pre, gain, self.mean, self.rstd, dout, dpre, dgain, dshift)
        self.norm_grads = (dgain, dshift)
        return dpre

    def backward(self, dpre, needs_w: bool, needs_bias: bool):
        """dpre: (N, G*H), the real tokens' rows (``steps.active``) -> (d source, dW_ih, dbias),
        each None where not needed (d x is 0 at the padding)."""
        K, A = self.K, self.A
        if self.idx is not None:
            dtable = A.zeros((self.rows.shape[0], dpre.shape[1]), dtype=dpre.dtype)
            K.embedding_backward(self.idx, dpre, dtable)
            dpre = dtable
        dpre = self._normalise_backward(dpre)
        dsource, dw, db = _input_grads(K, A, dpre, self.rows, self.w, (self.source.requires_grad, needs_w, needs_bias))
        if dsource is not None and self.idx is None:
            dsource = self.steps.put_back(A, dsource, self.shape)
        return dsource, dw, db


def _gates_buffer(A, device, proj, T, B, width, dtype):
    """The (T, B, width) array a sequence kernel writes its gates into: on the CPU, when no step has
    padding, the input projection's own memory (``proj.out``, read by nothing else), which the
    kernel overwrites number by number after reading it; else a new array. Measured (Intel VM,
    one thread, a step's products at config b): gates written over their input 55-59 us a step,
    into a new array 63-65: one array fewer fetched from L3 and written back (BENCHMARKS.md)."""
    if device == "cpu" and proj.out.shape[0] == T * B and proj.out.dtype == dtype:
        return proj.out.reshape(T, B, width)
    return A.empty((T, B, width), dtype=dtype)


def _input_grads(K, A, dpre2, x2, w_ih, needs):
    """Gradients of the input projection pre = x @ w_ih.T + b, from dpre2: (N, G*H).

    Returns dx (N, I), dw_ih (G*H, I), db (G*H,), each None where not needed.
    """
    dx = dw = db = None
    if needs[0]:
        dx = A.empty_like(x2)
        K.matmul_nn(dpre2, w_ih, dx, False)
    if needs[1]:
        dw = A.empty_like(w_ih)
        K.matmul_tn(dpre2, x2, dw, False)
    if needs[2]:
        db = A.empty(w_ih.shape[0], dtype=w_ih.dtype)
        K.bias_backward(dpre2, db, False)
    return dx, dw, db


# ---- RNN ------------------------------------------------------------------------------------
def rnn_step_fused(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One RNN step, the activation one op. x: (B, I), h: (B, H) -> h': (B, H)."""
    pre = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)
    relu = nonlinearity == "relu"
    device = pre.device
    K, A = kernels(device), arrays(device)
    pre_data = A.contiguous(pre.data)
    h_new = A.empty_like(pre_data)
    K.rnn_cell_forward(pre_data, h_new, relu)

    def backward(g):
        dpre = A.empty_like(h_new)
        K.rnn_cell_backward(h_new, A.contiguous(g), dpre, relu)
        return (dpre,)

    return record(h_new, (pre,), backward, "rnn_cell")


def rnn_sequence(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", reverse=False, lengths=None):
    """A whole RNN layer, one direction. x: (T, B, I), h0: (B, H) -> (outputs (T, B, H) in time
    order, h_n (B, H)).

    reverse=True reads the sequence from the last step to the first; outputs are still
    returned aligned with the input's time steps. lengths: (B,) sorted non-increasing (``Steps``).
    """
    T, B, I = x.shape
    H = w_hh.shape[1]
    relu = nonlinearity == "relu"
    device = same_device("rnn_sequence", x, h0, w_ih, w_hh, b_ih, b_hh)
    K, A = kernels(device), arrays(device)
    steps = _steps(device, T, B, reverse, lengths)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    proj = InputProjection(K, A, x, w_ih, _bias_sum(A, b_ih, b_hh), steps)
    hs = A.empty((T + 1, B, H), dtype=dtype)
    K.rnn_sequence_forward(proj.out, w_h, _data(A, h0), steps.batch_sizes, hs, relu)

    def backward(grads):
        g_out, g_h = grads
        dhs = steps.read(A, _or_zeros(A, g_out, (T, B, H), dtype))
        dpre = A.empty((T, B, H), dtype=dtype)
        dh0 = A.empty((B, H), dtype=dtype)
        K.rnn_sequence_backward(w_h, hs, dhs, _or_zeros(A, g_h, (B, H), dtype), relu, steps.batch_sizes, dpre, dh0)
        dpre2 = steps.active(dpre.reshape(T * B, H))          # the real tokens' rows
        dx, dw_ih, db = proj.backward(dpre2, w_ih.requires_grad, b_ih is not None)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(dpre2, steps.active(hs[:T].reshape(T * B, H)), dw_hh, False)
        return (dx, dh0, dw_ih, dw_hh) + ((db, db) if b_ih is not None else ())

    parents = (proj.source, h0, w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())
    return record_outputs((_outputs(A, steps, hs), hs[T]), parents, backward, "rnn_sequence")


# ---- LSTM -----------------------------------------------------------------------------------
def lstm_step_fused(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step, the gate math one op. x: (B, I), h, c: (B, H) -> (h', c'), each (B, H)."""
    gates = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)
    device = same_device("lstm_cell", gates, c)
    K, A = kernels(device), arrays(device)
    gates_data, c_prev = A.contiguous(gates.data), _data(A, c)
    B, H = c_prev.shape
    acts = A.empty_like(gates_data)
    hc = A.empty((2, B, H), dtype=c_prev.dtype)  # both outputs in one array: [h', c']
    K.lstm_cell_forward(gates_data, c_prev, acts, hc[1], hc[0])

    def backward(g):
        dgates = A.empty_like(acts)
        dc_prev = A.empty_like(c_prev)
        K.lstm_cell_backward(acts, c_prev, hc[1], A.contiguous(g[0]), A.contiguous(g[1]), dgates, dc_prev)
        return dgates, dc_prev

    both = record(hc, (gates, c), backward, "lstm_cell")
    return both[0], both[1]


def lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
    """A whole LSTM layer, one direction. x: (T, B, I), h0, c0: (B, H); lengths as in ``rnn_sequence``.

    Returns (outputs, h_n, c_n): outputs (T, B, H) are h_1..h_T in input time order, h_n and c_n
    (B, H) the final hidden and cell states.
    """
    T, B, I = x.shape
    H = w_hh.shape[1]
    device = same_device("lstm_sequence", x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    K, A = kernels(device), arrays(device)
    steps = _steps(device, T, B, reverse, lengths)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    proj = InputProjection(K, A, x, w_ih, _bias_sum(A, b_ih, b_hh), steps)
    hs = A.empty((T + 1, B, H), dtype=dtype)
    cs = A.empty((T + 1, B, H), dtype=dtype)
    acts = _gates_buffer(A, device, proj, T, B, 4 * H, dtype)
    K.lstm_sequence_forward(proj.out, w_h, _data(A, h0), _data(A, c0), steps.batch_sizes, hs, cs, acts)

    def backward(grads):
        g_out, g_h, g_c = grads
        dhs = steps.read(A, _or_zeros(A, g_out, (T, B, H), dtype))
        dgates = A.empty((T, B, 4 * H), dtype=dtype)
        dh0 = A.empty((B, H), dtype=dtype)
        dc0 = A.empty((B, H), dtype=dtype)
        K.lstm_sequence_backward(w_h, hs, cs, acts, dhs, _or_zeros(A, g_h, (B, H), dtype),
                                 _or_zeros(A, g_c, (B, H), dtype), steps.batch_sizes, dgates, dh0, dc0)
        dgates2 = steps.active(dgates.reshape(T * B, 4 * H))  # the real tokens' rows
        dx, dw_ih, db = proj.backward(dgates2, w_ih.requires_grad, b_ih is not None)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(dgates2, steps.active(hs[:T].reshape(T * B, H)), dw_hh, False)
        return (dx, dh0, dc0, dw_ih, dw_hh) + ((db, db) if b_ih is not None else ())

    parents = (proj.source, h0, c0, w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())
    return record_outputs((_outputs(A, steps, hs), hs[T], cs[T]), parents, backward, "lstm_sequence")


# ---- GRU ------------------------------------------------------------------------------------
def gru_step_fused(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step, the gate math one op. x: (B, I), h: (B, H) -> h': (B, H)."""
    return gru_gates_fused(linear(x, w_ih, b_ih), linear(h, w_hh, b_hh), h)


def gru_gates_fused(gi, gh, h):
    """The GRU's gate math as one op over the kernels ``gru_cell_forward`` / ``gru_cell_backward``:
    gi, gh (B, 3H) the two sides' projections (biases, or normalisations, included), h (B, H) -> h' (B, H)."""
    device = same_device("gru_cell", gi, gh, h)
    K, A = kernels(device), arrays(device)
    gi_data, gh_data, h_prev = A.contiguous(gi.data), A.contiguous(gh.data), _data(A, h)
    acts = A.empty_like(gi_data)
    h_new = A.empty_like(h_prev)
    K.gru_cell_forward(gi_data, gh_data, h_prev, acts, h_new)

    def backward(g):
        dgi, dgh = A.empty_like(gi_data), A.empty_like(gh_data)
        dh_prev = A.empty_like(h_prev)
        K.gru_cell_backward(acts, gh_data, h_prev, A.contiguous(g), dgi, dgh, dh_prev)
        return dgi, dgh, dh_prev  # dh_prev: the direct path z * g; the path through gh comes via linear

    return record(h_new, (gi, gh, h), backward, "gru_cell")


def gru_sequence(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, lengths=None):
    """A whole GRU layer, one direction. x: (T, B, I), h0: (B, H) -> (outputs (T, B, H) in time
    order, h_n (B, H)); reverse and lengths as in ``rnn_sequence``."""
    T, B, I = x.shape
    H = w_hh.shape[1]
    device = same_device("gru_sequence", x, h0, w_ih, w_hh, b_ih, b_hh)
    K, A = kernels(device), arrays(device)
    steps = _steps(device, T, B, reverse, lengths)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    b_h = A.zeros(3 * H, dtype=dtype) if b_hh is None else _data(A, b_hh)
    proj = InputProjection(K, A, x, w_ih, _data(A, b_ih), steps)
    hs = A.empty((T + 1, B, H), dtype=dtype)
    acts = _gates_buffer(A, device, proj, T, B, 3 * H, dtype)
    ghn = A.empty((T, B, H), dtype=dtype)
    K.gru_sequence_forward(proj.out, w_h, b_h, _data(A, h0), steps.batch_sizes, hs, acts, ghn)

    def backward(grads):
        g_out, g_h = grads
        dhs = steps.read(A, _or_zeros(A, g_out, (T, B, H), dtype))
        dgi = A.empty((T, B, 3 * H), dtype=dtype)
        dgh = A.empty((T, B, 3 * H), dtype=dtype)
        dh0 = A.empty((B, H), dtype=dtype)
        K.gru_sequence_backward(w_h, hs, acts, ghn, dhs, _or_zeros(A, g_h, (B, H), dtype), steps.batch_sizes,
                                dgi, dgh, dh0)
        dgi2, dgh2 = steps.active(dgi.reshape(T * B, 3 * H)), steps.active(dgh.reshape(T * B, 3 * H))
        dx, dw_ih, db_ih = proj.backward(dgi2, w_ih.requires_grad, b_ih is not None)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(dgh2, steps.active(hs[:T].reshape(T * B, H)), dw_hh, False)
        grads = (dx, dh0, dw_ih, dw_hh)
        if b_ih is not None:
            db_hh = A.empty_like(b_h)
            K.bias_backward(dgh2, db_hh, False)
            grads += (db_ih, db_hh)
        return grads

    parents = (proj.source, h0, w_ih, w_hh) + ((b_ih, b_hh) if b_ih is not None else ())
    return record_outputs((_outputs(A, steps, hs), hs[T]), parents, backward, "gru_sequence")


# ---- layer-normalised GRU ---------------------------------------------------------------------
def layer_norm_gru_sequence(x, h0, w_ih, w_hh, ih_gain, ih_shift, hh_gain, hh_shift, reverse=False, lengths=None,
                            eps=1e-5):
    """A whole layer-normalised GRU layer, one direction (equations: ``tinyrnn.nn.cells``).
    x: (T, B, I), h0: (B, H); w_ih: (3H, I), w_hh: (3H, H); the gains and shifts of the input side
    (ih_*) and of the recurrent side (hh_*): (3H,) each, the shifts in the place of the biases
    -> (outputs (T, B, H) in time order, h_n (B, H)); reverse and lengths as in ``rnn_sequence``.

    The input side, layer_norm(x @ W_ih^T) for all steps, is taken before the time loop (on the
    embedding table's rows when x is a lookup, ``InputProjection``); the recurrent side is
    normalised at every step inside the kernels, which save each step's normalised products
    (xhat) and 1/std. After the backward sweep: dW_hh = draw^T @ h_{t-1} (draw: the gradient before
    the normalisation), d hh_gain = sum of dgh * xhat, d hh_shift = sum of dgh (dgh: after it).
    """
    T, B, I = x.shape
    H = w_hh.shape[1]
    device = same_device("layer_norm_gru_sequence", x, h0, w_ih, w_hh, ih_gain, ih_shift, hh_gain, hh_shift)
    K, A = kernels(device), arrays(device)
    steps = _steps(device, T, B, reverse, lengths)
    w_h, dtype = _data(A, w_hh), w_hh.dtype
    gain, shift = _data(A, hh_gain), _data(A, hh_shift)
    proj = InputProjection(K, A, x, w_ih, None, steps, norm=(_data(A, ih_gain), _data(A, ih_shift), eps))
    hs = A.empty((T + 1, B, H), dtype=dtype)
    acts = _gates_buffer(A, device, proj, T, B, 3 * H, dtype)
    xhat, rstd = A.empty((T, B, 3 * H), dtype=dtype), A.empty((T, B), dtype=dtype)
    K.layer_norm_gru_sequence_forward(proj.out, w_h, gain, shift, eps, _data(A, h0), steps.batch_sizes, hs, acts,
                                      xhat, rstd)

    def backward(grads):
        g_out, g_h = grads
        dhs = steps.read(A, _or_zeros(A, g_out, (T, B, H), dtype))
        dgi, dgh, draw = (A.empty((T, B, 3 * H), dtype=dtype) for _ in range(3))
        dh0 = A.empty((B, H), dtype=dtype)
        K.layer_norm_gru_sequence_backward(w_h, gain, shift, hs, acts, xhat, rstd, dhs,
                                           _or_zeros(A, g_h, (B, H), dtype), steps.batch_sizes, dgi, dgh, draw, dh0)
        dx, dw_ih, _ = proj.backward(steps.active(dgi.reshape(T * B, 3 * H)), w_ih.requires_grad, False)
        dw_hh = A.empty_like(w_h)
        K.matmul_tn(steps.active(draw.reshape(T * B, 3 * H)), steps.active(hs[:T].reshape(T * B, H)), dw_hh, False)
        dgain, dshift = A.empty_like(gain), A.empty_like(shift)
        zeros, ones = A.zeros((T * B,), dtype=dtype), A.empty((T * B,), dtype=dtype)
        A.fill(ones, 1.0)                    # xhat is normalised already (padding: 0 in xhat and dgh)
        K.layer_norm_params_backward(xhat.reshape(T * B, 3 * H), zeros, ones, dgh.reshape(T * B, 3 * H), dgain, dshift)
        return (dx, dh0, dw_ih, dw_hh) + proj.norm_grads + (dgain, dshift)

    parents = (proj.source, h0, w_ih, w_hh, ih_gain, ih_shift, hh_gain, hh_shift)
    return record_outputs((_outputs(A, steps, hs), hs[T]), parents, backward, "layer_norm_gru_sequence")
