"""Tiled shared-memory matrix multiplies on the GPU.

    matmul_nn(a[M,K], b[K,N], out[M,N], accumulate)    out (+)= a @ b
    matmul_nt(a[M,K], b[N,K], out[M,N], accumulate)    out (+)= a @ b.T
    matmul_tn(a[K,M], b[K,N], out[M,N], accumulate)    out (+)= a.T @ b

One block of TILE x TILE threads computes one TILE x TILE tile of ``out``, one element per
thread. It walks along K a tile at a time: the block loads a TILE x TILE tile of A and of B
into shared memory (each thread loads one element of each), waits, and every thread adds
the TILE products of its row of the A tile and its column of the B tile:

        out[m, n] = sum over k-tiles k0 of  sum_kk  As[m, kk] * Bs[kk, n]

Each element of A and B is read from global memory M/TILE (or N/TILE) times instead of N (or
M) times. Loads are coalesced: neighbouring threads (threadIdx.x) read neighbouring
addresses, so a transposed operand is read along its rows and written transposed into shared
memory (padded by one column so that those writes do not hit one memory bank).
Elements past the edges (M, N, K need not be multiples of TILE) load as 0.

The sequence kernels reuse these with a row offset (``a_row0``, ``out_row0``), to multiply
one time step's rows of a (T*B, H) array without slicing it on the host.
"""
from numba import cuda

from .device import TILE, jit, tile_grid

PAD = TILE + 1   # shared tiles are TILE x (TILE + 1): a transposed write strides by 17 banks, not 16


@jit
def _matmul_nn_kernel(a, a_row0, b, out, out_row0, M, accumulate):
    """out[out_row0 + m, n] (+)= sum_k a[a_row0 + m, k] * b[k, n]   for m < M."""
    As = cuda.shared.array((TILE, PAD), a.dtype)   # As[m, k]
    Bs = cuda.shared.array((TILE, PAD), a.dtype)   # Bs[k, n]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    m = cuda.blockIdx.y * TILE + ty
    n = cuda.blockIdx.x * TILE + tx
    K, N = a.shape[1], b.shape[1]
    zero = a.dtype.type(0.0)
    acc = zero
    for k0 in range(0, K, TILE):
        As[ty, tx] = a[a_row0 + m, k0 + tx] if (m < M and k0 + tx < K) else zero
        Bs[ty, tx] = b[k0 + ty, n] if (k0 + ty < K and n < N) else zero
        cuda.syncthreads()
        for kk in range(TILE):
            acc += As[ty, kk] * Bs[kk, tx]
        cuda.syncthreads()
    if m < M and n < N:
        if accumulate:
            out[out_row0 + m, n] += acc
        else:
            out[out_row0 + m, n] = acc


@jit
def _matmul_nt_kernel(a, a_row0, b, out, out_row0, M, accumulate):
    """out[out_row0 + m, n] (+)= sum_k a[a_row0 + m, k] * b[n, k]   for m < M."""
    As = cuda.shared.array((TILE, PAD), a.dtype)   # As[m, k]
    Bs = cuda.shared.array((TILE, PAD), a.dtype)   # Bs[k, n] = b[n, k]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    m = cuda.blockIdx.y * TILE + ty
    n0 = cuda.blockIdx.x * TILE
    n = n0 + tx
    K, N = a.shape[1], b.shape[0]
    zero = a.dtype.type(0.0)
    acc = zero
    for k0 in range(0, K, TILE):
        As[ty, tx] = a[a_row0 + m, k0 + tx] if (m < M and k0 + tx < K) else zero
        # thread (ty, tx) reads b[n0 + ty, k0 + tx] (coalesced along k) and stores it transposed
        Bs[tx, ty] = b[n0 + ty, k0 + tx] if (n0 + ty < N and k0 + tx < K) else zero
        cuda.syncthreads()
        for kk in range(TILE):
            acc += As[ty, kk] * Bs[kk, tx]
        cuda.syncthreads()
    if m < M and n < N:
        if accumulate:
            out[out_row0 + m, n] += acc
        else:
            out[out_row0 + m, n] = acc


@jit
def _matmul_tn_kernel(a, b, out, accumulate):
    """out[m, n] (+)= sum_k a[k, m] * b[k, n]."""
    As = cuda.shared.array((TILE, PAD), a.dtype)   # As[m, k] = a[k, m]
    Bs = cuda.shared.array((TILE, PAD), a.dtype)   # Bs[k, n]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    m0 = cuda.blockIdx.y * TILE
    m = m0 + ty
    n = cuda.blockIdx.x * TILE + tx
    K, M, N = a.shape[0], a.shape[1], b.shape[1]
    zero = a.dtype.type(0.0)
    acc = zero
    for k0 in range(0, K, TILE):
        # thread (ty, tx) reads a[k0 + ty, m0 + tx] (coalesced along m) and stores it transposed
        As[tx, ty] = a[k0 + ty, m0 + tx] if (k0 + ty < K and m0 + tx < M) else zero
        Bs[ty, tx] = b[k0 + ty, n] if (k0 + ty < K and n < N) else zero
        cuda.syncthreads()
        for kk in range(TILE):
            acc += As[ty, kk] * Bs[kk, tx]
        cuda.syncthreads()
    if m < M and n < N:
        if accumulate:
            out[m, n] += acc
        else:
            out[m, n] = acc


# --------------------------------------------------------------------------------------------
# Host side: the spec's functions
# --------------------------------------------------------------------------------------------
def matmul_nn(a, b, out, accumulate):
    """out[M,N] (+)= a[M,K] @ b[K,N]."""
    matmul_nn_rows(a, 0, b, out, 0, a.shape[0], accumulate)


def matmul_nt(a, b, out, accumulate):
    """out[M,N] (+)= a[M,K] @ b[N,K].T."""
    matmul_nt_rows(a, 0, b, out, 0, a.shape[0], accumulate)


def matmul_tn(a, b, out, accumulate):
    """out[M,N] (+)= a[K,M].T @ b[K,N]."""
    M, N = a.shape[1], b.shape[1]
    if M == 0 or N == 0:
        return
    blocks, threads = tile_grid(M, N)
    _matmul_tn_kernel[blocks, threads](a, b, out, bool(accumulate))


def matmul_nn_rows(a, a_row0, b, out, out_row0, M, accumulate):
    """out[out_row0:out_row0+M] (+)= a[a_row0:a_row0+M] @ b, without slicing on the host."""
    N = b.shape[1]
    if M == 0 or N == 0:
        return
    blocks, threads = tile_grid(M, N)
    _matmul_nn_kernel[blocks, threads](a, a_row0, b, out, out_row0, M, bool(accumulate))


def matmul_nt_rows(a, a_row0, b, out, out_row0, M, accumulate):
    """out[out_row0:out_row0+M] (+)= a[a_row0:a_row0+M] @ b.T, without slicing on the host."""
    N = b.shape[0]
    if M == 0 or N == 0:
        return
    blocks, threads = tile_grid(M, N)
    _matmul_nt_kernel[blocks, threads](a, a_row0, b, out, out_row0, M, bool(accumulate))
