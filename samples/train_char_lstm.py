"""Train a character-level LSTM from Python with the library API, then sample from it.

    python samples/train_char_lstm.py [corpus.txt]      # default: the corpus bundled with tinyrnn
"""
import math
import sys

import tinyrnn
from tinyrnn import functional as F, optim
from tinyrnn.data import StreamBatches, load_corpus
from tinyrnn.generate import generate
from tinyrnn.models import CharRNN
from tinyrnn.train import DEFAULT_CORPUS

corpus = load_corpus(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CORPUS)
V, T, B = len(corpus.vocab), 64, 32                      # vocabulary, window length, parallel streams
tinyrnn.manual_seed(0)
model = CharRNN(V, cell="lstm", hidden=128, layers=2, embed=32)
opt = optim.Adam(model.parameters(), lr=3e-3)
batches = StreamBatches(corpus.ids, B, window=T + 1, stride=T, seed=0)
state = None
for step in range(300):
    x, new_epoch = batches.batch(step)                   # x: (T+1, B) character indices
    if new_epoch:
        state = None
    logits, state = model(x[:-1], state)                 # (T, B, V): predict x[1:] from x[:-1]
    loss = F.cross_entropy(logits.reshape(-1, V), x[1:].reshape(-1))
    model.zero_grad()
    loss.backward()
    optim.clip_grad_norm(model.parameters(), 5.0)
    opt.step()
    state = tuple(s.detach() for s in state)             # carry the state, not its history (TBPTT)
    if step % 50 == 0:
        print(f"step {step:4d}  loss {loss.item() / math.log(2):.3f} bits/char")
print("".join(generate(model, corpus.vocab, prime="The ", length=300, temperature=0.8, seed=0)))
