"""The packages the export tests run tinyrnn's files in, each None where it is missing, and the marks
that skip a test needing one, with the command that installs it (the test extra brings them all)."""
import importlib.util

import pytest

try:
    import onnx
    import onnxruntime as ort
except ImportError:                    # pip install -e ".[test]" installs both
    onnx = ort = None
try:
    import torch
    torch.set_num_threads(1)
except ImportError:                    # pip install -e ".[torch]"
    torch = None

__all__ = ["needs_onnx", "needs_safetensors", "needs_torch", "onnx", "ort", "torch"]

needs_onnx = pytest.mark.skipif(ort is None, reason="needs onnx and onnxruntime: pip install -e '.[test]'")
needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch: pip install -e '.[torch]'")
needs_safetensors = pytest.mark.skipif(importlib.util.find_spec("safetensors") is None,
                                       reason="needs the safetensors package (a reference): pip install -e '.[test]'")
