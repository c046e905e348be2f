"""A whole recurrent layer (one direction) on the GPU: the time loop runs on the host, every
step's work on the device.

Shapes and meaning as in ``tinyrnn.kernels.reference.sequence``: ``T`` steps, batch ``B``,
hidden ``H``, ``G`` gates; ``xproj: (N, G*H)`` holds the input projections (with biases,
GRU: ``b_ih`` only), packed: step ``t``'s active rows, then step ``t+1``'s; ``w_hh: (G*H, H)``,
``hs: (T+1, B, H)`` with ``hs[0] = h0``.

Each step is two kernel launches, and nothing comes back to the host inside the loop
(launches are asynchronous, so the host only queues work):

    forward,  step t:   recurrent matmul   h_t @ W_hh^T                  (matmul.py, tiled)
                        fused gate kernel  one thread per (b, j)          (cells.py's point math)
    backward, step t:   fused gate kernel  dgates[t] from dh = dhs[t] + dh_next
                        recurrent matmul   dh_next = dgates[t] @ W_hh

The matmuls address one step's rows of the (T*B, .) views of the 3-D arrays by a row offset,
so no array is sliced or allocated per step. The running gradients of the backward pass live
in the outputs ``dh0_out`` / ``dc0_out`` themselves: they hold dL/dh_t (dL/dc_t) for the step
being processed and, after step 0, dL/dh_0 (dL/dc_0).

    LSTM forward: acts = xproj (one device copy, or one a step with padding), then per step acts[t] += h_t @ W_hh^T (the
        matmul accumulates into the pre-activations) and the gate kernel turns acts[t] into the
        activated gates in place, writing c_{t+1}, h_{t+1}.
    GRU forward: gh = h_t @ W_hh^T into a (B, 3H) scratch array (b_hh is added by the gate
        kernel, which also saves ghn[t] = gh_n + b_hn for the backward).
    Layer-normalised GRU forward: the products h_t @ W_hh^T straight into xhat[t], then one block a
        row normalises its 3H numbers in place (as ``norm.py``) and writes xhat * gain into the
        GRU's scratch gh, then the GRU's own gate kernel, the shift as its b_hh. Its backward runs
        the GRU's gate kernel (the n part of the normalised gh rebuilt once, before the loop), then
        a block a row for the normalisation's backward, then the matmul.
    RNN forward: hs[1:] = xproj, then hs[t+1] += h_t @ W_hh^T and the activation in place.

Variable lengths: ``batch_sizes`` (T,) is a host array (the time loop runs on the host); the
matmuls of step ``t`` take its first ``batch_sizes[t]`` rows only, and the thread of an inactive
row (b, j) copies its state forward (forward) or zeroes its gate gradients (backward), as in the
reference.

``*_generate`` (batch-1 sampling from a stacked character model) is in ``generate.py``.
"""
import math

import numpy as np
from numba import cuda

from .cells import gru_point_backward, gru_point_forward, lstm_point_backward, lstm_point_forward
from .cells import rnn_point_backward, rnn_point_forward
from .device import ROW_THREADS, block_sum, blocks_for, copy, is_device_array, jit, row_threads, threads_for, to_host
from .matmul import matmul_nn_rows, matmul_nt_rows


def _units(B, H):
    n = B * H
    return blocks_for(n), threads_for(n)


def _host_sizes(batch_sizes):
    """batch_sizes (T,) as a list of Python ints (accepts a host or a device array)."""
    sizes = to_host(batch_sizes) if is_device_array(batch_sizes) else np.asarray(batch_sizes)
    return [int(n) for n in sizes]


def _starts(sizes):
    """starts (T+1,) of a packed array's steps: step t's rows are starts[t] .. starts[t+1]-1."""
    return [0] + np.cumsum(sizes, dtype=np.int64).tolist()


def _unpack(xproj, sizes, dst2, B, first_row):
    """The packed rows xproj (N, G) into dst2 (rows of (B, G) per step, from step 0's at
    ``first_row``): step t's active rows to first_row + t*B; the inactive rows are left as they are."""
    if all(n == B for n in sizes):
        copy(xproj, dst2[first_row:first_row + len(sizes) * B])
        return
    for t, (s, n) in enumerate(zip(_starts(sizes), sizes)):
        if n:
            copy(xproj[s:s + n], dst2[first_row + t * B:first_row + t * B + n])


# ============================================================================================
# LSTM
# ============================================================================================
@jit
def _lstm_step_forward_kernel(acts, cs, hs, t, nb):
    """acts[t]: pre-activations in, activated gates (i, f, g, o) out; writes cs[t+1], hs[t+1].
    Rows b >= nb are inactive: they keep their state, and their gates are 0."""
    idx = cuda.grid(1)
    B, H = hs.shape[1], hs.shape[2]
    if idx < B * H and idx // H >= nb:
        b, j = idx // H, idx % H
        hs[t + 1, b, j], cs[t + 1, b, j] = hs[t, b, j], cs[t, b, j]
        for gate in range(4):
            acts[t, b, gate * H + j] = 0
    elif idx < B * H:
        b, j = idx // H, idx % H
        i, f, g, o, c, h = lstm_point_forward(acts[t, b, j], acts[t, b, H + j], acts[t, b, 2 * H + j],
                                              acts[t, b, 3 * H + j], cs[t, b, j], acts.dtype.type(1.0))
        acts[t, b, j], acts[t, b, H + j], acts[t, b, 2 * H + j], acts[t, b, 3 * H + j] = i, f, g, o
        cs[t + 1, b, j] = c
        hs[t + 1, b, j] = h


@jit
def _lstm_step_backward_kernel(acts, cs, dhs, t, dh_next, dc_next, dgates, nb):
    """dh = dhs[t] + dh_next, dc = dc_next -> dgates[t]; dc_next becomes dL/dc_t (in place).
    Rows b >= nb are inactive: dgates 0, dh_next and dc_next pass through."""
    idx = cuda.grid(1)
    B, H = dhs.shape[1], dhs.shape[2]
    if idx < B * H and idx // H >= nb:
        b, j = idx // H, idx % H
        for gate in range(4):
            dgates[t, b, gate * H + j] = 0
    elif idx < B * H:
        b, j = idx // H, idx % H
        d_i, d_f, d_g, d_o, d_c = lstm_point_backward(
            acts[t, b, j], acts[t, b, H + j], acts[t, b, 2 * H + j], acts[t, b, 3 * H + j],
            cs[t, b, j], cs[t + 1, b, j], dhs[t, b, j] + dh_next[b, j], dc_next[b, j], acts.dtype.type(1.0))
        dgates[t, b, j], dgates[t, b, H + j], dgates[t, b, 2 * H + j], dgates[t, b, 3 * H + j] = d_i, d_f, d_g, d_o
        dc_next[b, j] = d_c


def lstm_sequence_forward(xproj, w_hh, h0, c0, batch_sizes, hs_out, cs_out, acts_out):
    """xproj: (N, 4H) packed; w_hh: (4H, H); h0, c0: (B, H); batch_sizes: (T,) (host).
    Writes hs_out, cs_out (T+1, B, H) and acts_out (T, B, 4H) (activated gates i, f, g, o)."""
    T, G = len(batch_sizes), xproj.shape[1]
    B, H = h0.shape
    copy(h0, hs_out[0])
    copy(c0, cs_out[0])
    if T == 0 or B * H == 0:
        return
    sizes = _host_sizes(batch_sizes)
    hs2 = hs_out.reshape((T + 1) * B, H)
    acts2 = acts_out.reshape(T * B, G)
    _unpack(xproj, sizes, acts2, B, 0)             # pre-activations; the matmul adds h_t @ W_hh^T
    blocks, threads = _units(B, H)
    for t, nb in enumerate(sizes):
        if nb > 0:
            matmul_nt_rows(hs2, t * B, w_hh, acts2, t * B, nb, True)
        _lstm_step_forward_kernel[blocks, threads](acts_out, cs_out, hs_out, t, nb)


def lstm_sequence_backward(w_hh, hs, cs, acts, dhs, dh_n, dc_n, batch_sizes, dgates_out, dh0_out, dc0_out):
    """Forward tensors hs, cs (T+1, B, H), acts (T, B, 4H); dhs (T, B, H); dh_n, dc_n (B, H); batch_sizes (T,).
    Writes dgates_out (T, B, 4H) and dh0_out, dc0_out (B, H)."""
    T, B, H = dhs.shape
    copy(dh_n, dh0_out)                            # running dL/dh, dL/dc of the state after step t
    copy(dc_n, dc0_out)
    if T == 0 or B * H == 0:
        return
    dgates2 = dgates_out.reshape(T * B, 4 * H)
    blocks, threads = _units(B, H)
    sizes = _host_sizes(batch_sizes)
    for t in range(T - 1, -1, -1):
        _lstm_step_backward_kernel[blocks, threads](acts, cs, dhs, t, dh0_out, dc0_out, dgates_out, sizes[t])
        if sizes[t] > 0:                                                # dh_{t} = dgates[t] @ W_hh
            matmul_nn_rows(dgates2, t * B, w_hh, dh0_out, 0, sizes[t], False)


# ============================================================================================
# GRU
# ============================================================================================
@jit
def _gru_step_forward_kernel(xproj, gh, b_hh, hs, acts, ghn, t, s, nb):
    """gh = h_t @ W_hh^T (without b_hh) -> acts[t] = (r, z, n), hs[t+1], ghn[t] = gh_n + b_hn.
    Step t's input rows are xproj[s:s + nb] (packed). Rows b >= nb are inactive: they keep their
    state; acts and ghn are 0."""
    idx = cuda.grid(1)
    B, H = hs.shape[1], hs.shape[2]
    if idx < B * H and idx // H >= nb:
        b, j = idx // H, idx % H
        hs[t + 1, b, j] = hs[t, b, j]
        ghn[t, b, j] = 0
        for gate in range(3):
            acts[t, b, gate * H + j] = 0
    elif idx < B * H:
        b, j = idx // H, idx % H
        gh_n = gh[b, 2 * H + j] + b_hh[2 * H + j]
        r, z, n, h = gru_point_forward(xproj[s + b, j], xproj[s + b, H + j], xproj[s + b, 2 * H + j],
                                       gh[b, j] + b_hh[j], gh[b, H + j] + b_hh[H + j], gh_n,
                                       hs[t, b, j], xproj.dtype.type(1.0))
        acts[t, b, j], acts[t, b, H + j], acts[t, b, 2 * H + j] = r, z, n
        ghn[t, b, j] = gh_n
        hs[t + 1, b, j] = h


@jit
def _gru_step_backward_kernel(acts, ghn, hs, dhs, t, dh_next, dgi, dgh, nb):
    """dh = dhs[t] + dh_next -> dgi[t], dgh[t]; dh_next becomes the direct path dh * z (in place).
    Rows b >= nb are inactive: zero gradients, dh_next passes through."""
    idx = cuda.grid(1)
    B, H = dhs.shape[1], dhs.shape[2]
    if idx < B * H and idx // H >= nb:
        b, j = idx // H, idx % H
        for gate in range(3):
            dgi[t, b, gate * H + j] = 0
            dgh[t, b, gate * H + j] = 0
    elif idx < B * H:
        b, j = idx // H, idx % H
        d_r, d_z, dgi_n, dgh_n, d_h = gru_point_backward(
            acts[t, b, j], acts[t, b, H + j], acts[t, b, 2 * H + j], ghn[t, b, j], hs[t, b, j],
            dhs[t, b, j] + dh_next[b, j], acts.dtype.type(1.0))
        dgi[t, b, j], dgi[t, b, H + j], dgi[t, b, 2 * H + j] = d_r, d_z, dgi_n
        dgh[t, b, j], dgh[t, b, H + j], dgh[t, b, 2 * H + j] = d_r, d_z, dgh_n
        dh_next[b, j] = d_h


def gru_sequence_forward(xproj, w_hh, b_hh, h0, batch_sizes, hs_out, acts_out, ghn_out):
    """xproj: (N, 3H) packed (with b_ih only); w_hh: (3H, H); b_hh: (3H,); h0: (B, H); batch_sizes: (T,) (host).
    Writes hs_out (T+1, B, H), acts_out (T, B, 3H) (r, z, n) and ghn_out (T, B, H) = h_t @ W_hn.T + b_hn."""
    T, G = len(batch_sizes), xproj.shape[1]
    B, H = h0.shape
    copy(h0, hs_out[0])
    if T == 0 or B * H == 0:
        return
    gh = cuda.device_array((B, G), dtype=xproj.dtype)   # scratch: h_t @ W_hh^T, reused every step
    hs2 = hs_out.reshape((T + 1) * B, H)
    blocks, threads = _units(B, H)
    sizes = _host_sizes(batch_sizes)
    for t, (s, nb) in enumerate(zip(_starts(sizes), sizes)):
        if nb > 0:
            matmul_nt_rows(hs2, t * B, w_hh, gh, 0, nb, False)
        _gru_step_forward_kernel[blocks, threads](xproj, gh, b_hh, hs_out, acts_out, ghn_out, t, s, nb)


def gru_sequence_backward(w_hh, hs, acts, ghn, dhs, dh_n, batch_sizes, dgi_out, dgh_out, dh0_out):
    """Forward tensors hs (T+1, B, H), acts (T, B, 3H), ghn (T, B, H); dhs (T, B, H); dh_n (B, H); batch_sizes (T,).
    Writes dgi_out, dgh_out (T, B, 3H) and dh0_out (B, H)."""
    T, B, H = dhs.shape
    copy(dh_n, dh0_out)                            # running dL/dh of the state after step t
    if T == 0 or B * H == 0:
        return
    dgh2 = dgh_out.reshape(T * B, 3 * H)
    blocks, threads = _units(B, H)
    sizes = _host_sizes(batch_sizes)
    for t in range(T - 1, -1, -1):
        _gru_step_backward_kernel[blocks, threads](acts, ghn, hs, dhs, t, dh0_out, dgi_out, dgh_out, sizes[t])
        if sizes[t] > 0:                                            # dh_t = dh * z + dgh[t] @ W_hh
            matmul_nn_rows(dgh2, t * B, w_hh, dh0_out, 0, sizes[t], True)


# ============================================================================================
# Layer-normalised GRU
# ============================================================================================
@jit
def _normalise_rows_kernel(xhat, rstd, gain, gh, t, eps, nb):
    """Block b: xhat[t, b] (3H products) to mean 0, variance 1 in place, rstd[t, b] = 1 / its std,
    and gh[b] = xhat[t, b] * gain (the GRU's gate kernel adds the shift as its b_hh); rows b >= nb
    are inactive: 0 (gh is not read there)."""
    shared = cuda.shared.array(ROW_THREADS, xhat.dtype)
    b, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    D, zero, one = xhat.shape[2], xhat.dtype.type(0.0), xhat.dtype.type(1.0)
    if b >= nb:                        # the whole block takes this branch: no barrier is skipped by half
        for k in range(tid, D, nthreads):
            xhat[t, b, k] = zero
        if tid == 0:
            rstd[t, b] = zero
        return
    per_d = one / xhat.dtype.type(D)
    total = zero
    for k in range(tid, D, nthreads):
        total += xhat[t, b, k]
    mean = block_sum(shared, total) * per_d
    squares = zero
    for k in range(tid, D, nthreads):
        squares += (xhat[t, b, k] - mean) * (xhat[t, b, k] - mean)
    r = one / math.sqrt(block_sum(shared, squares) * per_d + eps)
    for k in range(tid, D, nthreads):
        xhat[t, b, k] = (xhat[t, b, k] - mean) * r
        gh[b, k] = xhat[t, b, k] * gain[k]
    if tid == 0:
        rstd[t, b] = r


@jit
def _normalise_rows_backward_kernel(dgh, gain, xhat, rstd, t, draw, nb):
    """Block b: draw[t, b] = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dgh[t, b] * gain; rows
    b >= nb: 0."""
    shared = cuda.shared.array(ROW_THREADS, xhat.dtype)
    b, tid, nthreads = cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x
    D, zero = xhat.shape[2], xhat.dtype.type(0.0)
    if b >= nb:
        for k in range(tid, D, nthreads):
            draw[t, b, k] = zero
        return
    per_d = xhat.dtype.type(1.0) / xhat.dtype.type(D)
    sum_g, sum_gx = zero, zero
    for k in range(tid, D, nthreads):
        g = dgh[t, b, k] * gain[k]
        sum_g += g
        sum_gx += g * xhat[t, b, k]
    mean_g = block_sum(shared, sum_g) * per_d
    mean_gx = block_sum(shared, sum_gx) * per_d
    r = rstd[t, b]
    for k in range(tid, D, nthreads):
        draw[t, b, k] = r * (dgh[t, b, k] * gain[k] - mean_g - xhat[t, b, k] * mean_gx)


@jit
def _normalised_n_part_kernel(xhat, gain, shift, ghn):
    """ghn[t, b, j] = xhat[t, b, 2H + j] * gain[2H + j] + shift[2H + j]: the n part of every step's
    normalised gh, which the GRU's backward gate kernel reads (one thread a number)."""
    idx = cuda.grid(1)
    T, B, H = ghn.shape
    if idx < T * B * H:
        t, b, j = idx // (B * H), idx // H % B, idx % H
        ghn[t, b, j] = xhat[t, b, 2 * H + j] * gain[2 * H + j] + shift[2 * H + j]


def layer_norm_gru_sequence_forward(xproj, w_hh, ln_weight, ln_bias, eps, h0, batch_sizes, hs_out, acts_out,
                                    xhat_out, rstd_out):
    """xproj: (N, 3H) packed (the normalised input side); w_hh: (3H, H); ln_weight, ln_bias: (3H,); h0: (B, H);
    batch_sizes: (T,) (host). Writes hs_out (T+1, B, H), acts_out (T, B, 3H), xhat_out (T, B, 3H), rstd_out (T, B)."""
    T = len(batch_sizes)
    B, H = h0.shape
    copy(h0, hs_out[0])
    if T == 0 or B * H == 0:
        return
    hs2, xhat2 = hs_out.reshape((T + 1) * B, H), xhat_out.reshape(T * B, 3 * H)
    gh = cuda.device_array((B, 3 * H), dtype=xproj.dtype)     # scratch: xhat_t * gain, reused every step
    ghn = cuda.device_array((T, B, H), dtype=xproj.dtype)     # the gate kernel's n part (the backward rebuilds it)
    blocks, threads = _units(B, H)
    sizes, eps = _host_sizes(batch_sizes), xproj.dtype.type(eps)
    for t, (s, nb) in enumerate(zip(_starts(sizes), sizes)):
        if nb > 0:
            matmul_nt_rows(hs2, t * B, w_hh, xhat2, t * B, nb, False)
        _normalise_rows_kernel[B, row_threads(3 * H)](xhat_out, rstd_out, ln_weight, gh, t, eps, nb)
        _gru_step_forward_kernel[blocks, threads](xproj, gh, ln_bias, hs_out, acts_out, ghn, t, s, nb)


def layer_norm_gru_sequence_backward(w_hh, ln_weight, ln_bias, hs, acts, xhat, rstd, dhs, dh_n, batch_sizes,
                                     dgi_out, dgh_out, draw_out, dh0_out):
    """Forward tensors hs (T+1, B, H), acts, xhat (T, B, 3H), rstd (T, B); dhs (T, B, H); dh_n (B, H); batch_sizes
    (T,). Writes dgi_out, dgh_out, draw_out (T, B, 3H) and dh0_out (B, H)."""
    T, B, H = dhs.shape
    copy(dh_n, dh0_out)                            # running dL/dh of the state after step t
    if T == 0 or B * H == 0:
        return
    draw2 = draw_out.reshape(T * B, 3 * H)
    ghn = cuda.device_array((T, B, H), dtype=xhat.dtype)
    _normalised_n_part_kernel[blocks_for(T * B * H), threads_for(T * B * H)](xhat, ln_weight, ln_bias, ghn)
    blocks, threads = _units(B, H)
    sizes = _host_sizes(batch_sizes)
    for t in range(T - 1, -1, -1):
        _gru_step_backward_kernel[blocks, threads](acts, ghn, hs, dhs, t, dh0_out, dgi_out, dgh_out, sizes[t])
        _normalise_rows_backward_kernel[B, row_threads(3 * H)](dgh_out, ln_weight, xhat, rstd, t, draw_out, sizes[t])
        if sizes[t] > 0:                                            # dh_t = dh * z + draw[t] @ W_hh
            matmul_nn_rows(draw2, t * B, w_hh, dh0_out, 0, sizes[t], True)


# ============================================================================================
# RNN
# ============================================================================================
@jit
def _rnn_step_forward_kernel(hs, t, relu, nb):
    """hs[t+1] holds the pre-activation; replace it by its activation. Rows b >= nb keep their state."""
    idx = cuda.grid(1)
    B, H = hs.shape[1], hs.shape[2]
    if idx < B * H and idx // H >= nb:
        b, j = idx // H, idx % H
        hs[t + 1, b, j] = hs[t, b, j]
    elif idx < B * H:
        b, j = idx // H, idx % H
        hs[t + 1, b, j] = rnn_point_forward(hs[t + 1, b, j], relu, hs.dtype.type(0.0))


@jit
def _rnn_step_backward_kernel(hs, dhs, t, dh_next, dpre, relu, nb):
    """dpre[t] = (dhs[t] + dh_next) * activation'(pre), from the output hs[t+1]; 0 for rows b >= nb."""
    idx = cuda.grid(1)
    B, H = dhs.shape[1], dhs.shape[2]
    if idx < B * H and idx // H >= nb:
        dpre[t, idx // H, idx % H] = 0
    elif idx < B * H:
        b, j = idx // H, idx % H
        dpre[t, b, j] = rnn_point_backward(hs[t + 1, b, j], dhs[t, b, j] + dh_next[b, j], relu,
                                           hs.dtype.type(0.0), hs.dtype.type(1.0))


def rnn_sequence_forward(xproj, w_hh, h0, batch_sizes, hs_out, relu):
    """xproj: (N, H) packed; w_hh: (H, H); h0: (B, H); batch_sizes: (T,) (host). Writes hs_out (T+1, B, H)."""
    T = len(batch_sizes)
    B, H = h0.shape
    copy(h0, hs_out[0])
    if T == 0 or B * H == 0:
        return
    sizes = _host_sizes(batch_sizes)
    hs2 = hs_out.reshape((T + 1) * B, H)
    _unpack(xproj, sizes, hs2, B, B)               # pre-activations into hs[1:]; the matmul adds h_t @ W_hh^T
    blocks, threads = _units(B, H)
    for t, nb in enumerate(sizes):
        if nb > 0:                                                    # reads rows of step t, writes t+1
            matmul_nt_rows(hs2, t * B, w_hh, hs2, (t + 1) * B, nb, True)
        _rnn_step_forward_kernel[blocks, threads](hs_out, t, bool(relu), nb)


def rnn_sequence_backward(w_hh, hs, dhs, dh_n, relu, batch_sizes, dpre_out, dh0_out):
    """hs (T+1, B, H); dhs (T, B, H); dh_n (B, H); batch_sizes (T,) (host). Writes dpre_out (T, B, H) and dh0_out (B, H)."""
    T, B, H = dhs.shape
    copy(dh_n, dh0_out)
    if T == 0 or B * H == 0:
        return
    dpre2 = dpre_out.reshape(T * B, H)
    blocks, threads = _units(B, H)
    sizes = _host_sizes(batch_sizes)
    for t in range(T - 1, -1, -1):
        _rnn_step_backward_kernel[blocks, threads](hs, dhs, t, dh0_out, dpre_out, bool(relu), sizes[t])
        if sizes[t] > 0:                                              # dh_t = dpre[t] @ W_hh
            matmul_nn_rows(dpre2, t * B, w_hh, dh0_out, 0, sizes[t], False)
