"""``gradcheck``: compare the tape's gradients with central finite differences.

For a function ``fn(*inputs) -> Tensor`` it projects the output on a fixed random tensor R
(so every output element matters), L = sum(fn(*inputs) * R), and checks for each element
x_i of each input that requires grad:

    dL/dx_i (tape)  ~=  (L(x_i + eps) - L(x_i - eps)) / (2 eps)

within ``atol + rtol * |numeric|``. Run it in float64: in float32 rounding swamps the
difference quotient.
"""
import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-8, rtol: float = 1e-6, seed: int = 0) -> bool:
    """Return True if the tape's gradients of ``fn`` match finite differences, else raise GradcheckError.

    fn:     callable taking the tensors in ``inputs`` and returning a Tensor (any shape)
    inputs: list of Tensors; those with requires_grad=True are checked (use float64)
    """
    inputs = list(inputs)
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for t in checked:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs (got {t.dtype}): float32 rounding swamps the check")

    out = fn(*inputs)
    projection = np.random.default_rng(seed).standard_normal(out.shape)

    for t in checked:
        t.grad = None
    (out * projection).sum().backward()
    analytic = [np.zeros_like(t.data) if t.grad is None else t.grad.copy() for t in checked]

    def loss() -> float:
        with no_grad():
            return float(np.sum(fn(*inputs).data * projection))

    for k, (t, grad) in enumerate(zip(checked, analytic)):
        flat = t.data.reshape(-1)  # a view: perturbing it perturbs the input
        if not np.shares_memory(flat, t.data):
            raise ValueError("gradcheck needs inputs with contiguous data")
        numeric = np.empty(flat.size)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = loss()
            flat[i] = original - eps
            minus = loss()
            flat[i] = original
            numeric[i] = (plus - minus) / (2 * eps)
        error = np.abs(grad.reshape(-1) - numeric)
        bound = atol + rtol * np.abs(numeric)
        if np.any(error > bound):
            i = int(np.argmax(error - bound))
            raise GradcheckError(
                f"gradcheck failed for input {k} (shape {t.shape}) at flat index {i}: "
                f"tape {grad.reshape(-1)[i]:.10g} vs finite difference {numeric[i]:.10g} "
                f"(|diff| {error[i]:.3g} > {bound[i]:.3g})")
    return True
