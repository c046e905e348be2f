"""Load a PyTorch character model's weights into tinyrnn and check both give the same outputs.

    python samples/load_torch_weights.py        # needs torch (pip install 'tinyrnn[torch]')

tinyrnn's layers use PyTorch's parameter names and shapes (weight_ih_l0, weight_hh_l0, bias_ih_l0,
...; Linear weight (out, in)), so a state_dict converts with `.numpy()` and nothing else. The
imported model is saved as a checkpoint the command line can use:  tinyrnn sample runs/from-torch
"""
import numpy as np
import torch

import tinyrnn
from tinyrnn.data import Vocab
from tinyrnn.models import CharRNN
from tinyrnn.checkpoint import save_model

vocab = Vocab("abcdefghijklmnopqrstuvwxyz .,\n")
V, E, H, L = len(vocab), 16, 64, 2


class TorchCharRNN(torch.nn.Module):
    """The same architecture in PyTorch, with the same attribute names as tinyrnn's CharRNN."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, E)
        self.rnn = torch.nn.LSTM(E, H, L)
        self.head = torch.nn.Linear(H, V)

    def forward(self, x):
        out, _ = self.rnn(self.embed(x))
        return self.head(out)


torch.manual_seed(0)
reference = TorchCharRNN()                      # in practice: reference.load_state_dict(torch.load(...))
model = CharRNN(V, cell="lstm", hidden=H, layers=L, embed=E)
model.load_state_dict({name: t.detach().numpy() for name, t in reference.state_dict().items()})

x = np.random.default_rng(0).integers(0, V, size=(20, 3))          # (T, B) character indices
with torch.no_grad():
    expected = reference(torch.from_numpy(x)).numpy()
with tinyrnn.no_grad():
    got, _ = model(x)
print("max |tinyrnn - torch| =", float(np.abs(got.numpy() - expected).max()))
assert np.allclose(got.numpy(), expected, atol=1e-5)

save_model("runs/from-torch/best", model, vocab, source="PyTorch")
print("saved runs/from-torch/best.{npz,json}; try: tinyrnn sample runs/from-torch --length 100")
