"""Train a bidirectional (fill-in) model on the bundled corpus, then fill gaps in a few phrases.

    python samples/bidir_fill.py [steps]

Each character is predicted from a forward GRU over the text before it and a separate backward GRU
over the text after it (tinyrnn/models.py); neither ever sees the character itself. The same from
the shell:  tinyrnn train --bidir --cell gru --out runs/fill && tinyrnn fill runs/fill "th_ l_mp"
"""
import sys

from tinyrnn.generate import fill
from tinyrnn.checkpoint import load_model
from tinyrnn.train import TrainConfig, train

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 400
cfg = TrainConfig(cell="gru", layers=1, hidden=128, embed=32, bidir=True, steps=steps, eval_every=100)
summary = train(cfg)                                      # default corpus, a fresh runs/harbour-gru-bidir*
print(summary["line"])

model, vocab, _ = load_model(summary["out"])
for text in ["Th_ lamp k_eper", "the w_nd is t_rning", "\"Br_ng the l_ntern,\" said M_ren.", "the har_our wal_"]:
    print(f"{text!r:40} -> {fill(model, vocab, text)!r}")
