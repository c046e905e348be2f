"""Reference matrix multiplies in plain numpy: the spec the fast kernels are tested against.

    matmul_nn(a[M,K], b[K,N], out[M,N], accumulate)    out (+)= a @ b
    matmul_nt(a[M,K], b[N,K], out[M,N], accumulate)    out (+)= a @ b.T
    matmul_tn(a[K,M], b[K,N], out[M,N], accumulate)    out (+)= a.T @ b

``n`` / ``t`` say whether each operand is used as stored or transposed. In a linear layer
y = x @ W.T the forward pass is ``nt``, dx = dy @ W is ``nn`` and dW = dy.T @ x is ``tn``.
"""


def matmul_nn(a, b, out, accumulate):
    """out[M,N] (+)= a[M,K] @ b[K,N]."""
    if accumulate:
        out += a @ b
    else:
        out[...] = a @ b


def matmul_nt(a, b, out, accumulate):
    """out[M,N] (+)= a[M,K] @ b[N,K].T."""
    if accumulate:
        out += a @ b.T
    else:
        out[...] = a @ b.T


def matmul_tn(a, b, out, accumulate):
    """out[M,N] (+)= a[K,M].T @ b[K,N]."""
    if accumulate:
        out += a.T @ b
    else:
        out[...] = a.T @ b
