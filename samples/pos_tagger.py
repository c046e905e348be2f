"""Train a part-of-speech tagger from Python with the library API, then tag "I love mango juice".

    python samples/pos_tagger.py [train.conllu [dev.conllu]] [--seconds 120]

Default data: the UD English EWT treebank in ../shared/data/ud_english_ewt/ (relative to the
repository) if it is there, else a tiny built-in example (which only shows that the code runs).
The same model through the command line: tinyrnn tag train TRAIN --dev DEV --out runs/pos.
"""
import argparse
import os
import time

import numpy as np

import tinyrnn
from tinyrnn import optim
from tinyrnn.tagging import conll, metrics
from tinyrnn.tagging.batch import encode_batch, epoch_batches
from tinyrnn.tagging.model import Tagger
from tinyrnn.tagging.task import build_vocabs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EWT = os.path.join(ROOT, "..", "shared", "data", "ud_english_ewt")
TINY = [("I love mango juice .", "PRON VERB NOUN NOUN PUNCT"), ("You like apple pie .", "PRON VERB NOUN NOUN PUNCT"),
        ("We eat fresh bread .", "PRON VERB ADJ NOUN PUNCT"), ("They love cold water .", "PRON VERB ADJ NOUN PUNCT")]

parser = argparse.ArgumentParser()
parser.add_argument("files", nargs="*", help="train.conllu [dev.conllu]")
parser.add_argument("--seconds", type=float, default=120, help="training time")
args = parser.parse_args()
paths = args.files or ([os.path.join(EWT, f"en_ewt-ud-{s}.conllu") for s in ("train", "dev")]
                       if os.path.exists(os.path.join(EWT, "en_ewt-ud-train.conllu")) else [])
if paths:
    train = conll.read_conllu(paths[0], column="upos")               # list of Sentence (.words, .tags)
    dev = conll.read_conllu(paths[1], column="upos") if len(paths) > 1 else None
else:
    train = [conll.Sentence(words.split(), tags.split()) for words, tags in TINY] * 8
    dev = None
print(f"{len(train)} training sentences, {sum(map(len, train))} tokens")

tinyrnn.manual_seed(0)
vocabs = build_vocabs(train)                     # lower-cased words, characters, tags
model = Tagger(vocabs, cell="lstm", layers=2, hidden=128, word_dim=100, char_dim=50, char_hidden=50, dropout=0.33)
opt = optim.Adam(model.parameters(), lr=2e-3)
rng = np.random.default_rng(0)
lengths = [len(s) for s in train]
start, step, epoch = time.time(), 0, 0
while time.time() - start < args.seconds and (paths or epoch < 30):
    for index in epoch_batches(lengths, 32, seed=0, epoch=epoch):   # 32 sentences of similar length
        batch = encode_batch(vocabs, [train[i].words for i in index], [train[i].tags for i in index],
                             alpha=0.25, rng=rng)                      # word dropout trains <unk>
        loss = model.loss(batch)                                       # mean cross-entropy per real token
        model.zero_grad()
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 5.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step:5d}  epoch {epoch}  loss {loss.item():.3f}  {time.time() - start:.0f} s")
        if time.time() - start > args.seconds:
            break
    epoch += 1

if dev:
    r = metrics.report([s.tags for s in dev], model.predict(dev), words=[s.words for s in dev],
                       train_words=vocabs.words)
    print(f"dev accuracy {r['accuracy']:.2%}, on words unseen in training {r['oov_accuracy']:.2%}")
sentence = "I love mango juice".split()
print(" ".join(f"{w}/{t}" for w, t in zip(sentence, model.predict([sentence])[0])))
