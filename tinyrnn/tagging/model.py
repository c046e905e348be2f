"""``Tagger``: a bidirectional RNN part-of-speech (or any per-word) tagger with character features.

    word vector   e_t = WordEmbedding[lower(w_t)]                               (word_dim,)
    char vector   c_t = [h_n forward ; h_n backward] of a BiRNN over w_t's characters   (2*char_hidden,)
    x_t = dropout([e_t ; c_t])  ->  BiRNN stack over the sentence  ->  dropout  ->  Linear  ->  scores (K,)
    loss: cross-entropy over the real tokens (padding ignored), or the CRF's NLL per token (crf=True)
    decoding: argmax per token, or Viterbi with the CRF

Shapes (time-major, as the recurrent layers): a batch of B sentences padded to T words, U distinct
word forms padded to W characters (see ``batch.py``):
    words (T, B) -> (T, B, word_dim);  chars (W, U) -> char vectors (U, 2*char_hidden) -> (T, B, .)
    sentence BiRNN (T, B, 2*hidden) -> emissions (T, B, K)

Word embeddings are of the lower-cased form: case, digits and suffixes reach the model through
the character RNN, which reads the exact form; the word table gets more examples per entry. The
``<unk>`` row is trained by word dropout (rare training words replaced at random, see
``vocab.word_dropout``); an unseen word gets ``<unk>`` plus its character vector, which is what
lets the tagger label ``mangos`` or ``juicy``.

Each part is a plain submodule (``word_embed``, ``char_embed``, ``char_rnn``, ``rnn``, ``head``,
``crf``) that can be replaced by another of the same shapes; ``word_dim=0`` or ``char_hidden=0``
drops that half of the input.
"""
from __future__ import annotations

import numpy as np

from .. import nn, ops
from ..errors import TinyRNNError
from ..tensor import Tensor, no_grad
from .batch import IGNORE, TaggerVocabs, encode_batch, encode_forms, length_batches
from .crf import CRF
from .vocab import Vocab

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class Tagger(nn.Module):
    """A tagger over ``vocabs`` (a ``TaggerVocabs``); ``config()`` returns the other constructor arguments."""

    family = "tagger"      # the checkpoint family (see ``checkpoint.load_model``)

    def __init__(self, vocabs: TaggerVocabs, cell="lstm", layers=2, hidden=128, word_dim=100, char_dim=50,
                 char_hidden=50, dropout=0.33, crf=False, char_cell=None):
        super().__init__()
        char_cell = char_cell or cell
        _check_args(cell, char_cell, layers, hidden, word_dim, char_dim, char_hidden, dropout)
        self.vocabs = TaggerVocabs(*vocabs)
        self.cell, self.char_cell, self.layers, self.hidden = cell, char_cell, int(layers), int(hidden)
        self.word_dim, self.char_dim, self.char_hidden = int(word_dim), int(char_dim), int(char_hidden)
        self.dropout_p, self.use_crf = float(dropout), bool(crf)
        K = len(self.vocabs.tags)
        if self.word_dim:
            self.word_embed = nn.Embedding(len(self.vocabs.words), self.word_dim)
        if self.char_hidden:
            self.char_embed = nn.Embedding(len(self.vocabs.chars), self.char_dim)
            self.char_rnn = CELLS[char_cell](self.char_dim, self.char_hidden, 1, bidirectional=True)
        self.drop = nn.Dropout(self.dropout_p)
        self.rnn = CELLS[cell](self.word_dim + 2 * self.char_hidden, self.hidden, self.layers,
                               dropout=self.dropout_p, bidirectional=True)
        self.head = nn.Linear(2 * self.hidden, K)
        if self.use_crf:
            self.crf = CRF(K)

    def config(self) -> dict:
        return dict(cell=self.cell, layers=self.layers, hidden=self.hidden, word_dim=self.word_dim,
                    char_dim=self.char_dim, char_hidden=self.char_hidden, dropout=self.dropout_p,
                    crf=self.use_crf, char_cell=self.char_cell)

    @classmethod
    def from_checkpoint(cls, meta, arrays):
        """(model, vocabs) from a checkpoint's meta and arrays (``checkpoint.load_model`` calls this)."""
        from ..checkpoint import model_arrays

        vocabs = TaggerVocabs(*(Vocab.from_json(meta["vocab"][k]) for k in TaggerVocabs._fields))
        model = cls(vocabs, **meta["model"])
        model.load_state_dict(model_arrays(arrays))
        return model, vocabs

    # ---- scores --------------------------------------------------------------------------------
    def char_vectors(self, chars, char_lengths):
        """chars (W, U) ids, char_lengths (U,) -> (U, 2*char_hidden): [forward h_n ; backward h_n]."""
        _, state = self.char_rnn(self.char_embed(chars), lengths=char_lengths)
        h_n = state[0] if isinstance(state, tuple) else state             # (2, U, char_hidden)
        return ops.concat([h_n[0], h_n[1]], axis=1)

    def char_table(self, forms, chunk: int = 2048):
        """Character vectors of many word forms (a list) -> (len(forms), 2*char_hidden) Tensor.

        Computed in chunks of at most ``chunk`` forms of similar length (``length_batches``;
        inference: no tape is kept)."""
        table = np.zeros((len(forms), 2 * self.char_hidden), np.float32)
        for rows in length_batches([len(w) for w in forms], chunk):
            chars, lengths = encode_forms([forms[i] for i in rows], self.vocabs.chars)
            table[rows] = self.char_vectors(chars, lengths).numpy()
        return Tensor(table)

    def forward(self, batch, char_table=None):
        """A ``TagBatch`` -> emission scores (T, B, K) (zero-input rows at padding; never scored).

        char_table: the character vectors ``batch.word_index`` points into, when computed beforehand."""
        parts = []
        if self.word_dim:
            parts.append(self.word_embed(batch.words))                          # (T, B, word_dim)
        if self.char_hidden:
            vectors = char_table if char_table is not None else self.char_vectors(batch.chars, batch.char_lengths)
            parts.append(ops.embedding(vectors, batch.word_index))             # (T, B, 2*char_hidden)
        x = parts[0] if len(parts) == 1 else ops.concat(parts, axis=2)
        out, _ = self.rnn(self.drop(x), lengths=batch.lengths)                  # (T, B, 2*hidden)
        return self.head(self.drop(out))

    def loss(self, batch):
        """Mean loss per real token: cross-entropy, or the CRF's NLL summed over sentences / tokens."""
        emissions = self(batch)
        if self.use_crf:
            tags = np.where(batch.tags == IGNORE, 0, batch.tags)
            return self.crf.nll(emissions, tags, batch.lengths, reduction="sum") * (1.0 / batch.tokens)
        K = emissions.shape[2]
        return ops.cross_entropy(emissions.reshape(-1, K), batch.tags.reshape(-1), ignore_index=IGNORE)

    def decode(self, emissions, lengths) -> list:
        """emissions (T, B, K) -> B lists of tag ids: Viterbi with the CRF, else argmax per token."""
        if self.use_crf:
            return self.crf.decode(emissions, lengths)
        best = emissions.numpy().argmax(axis=2)                                 # (T, B)
        return [best[:n, b].tolist() for b, n in enumerate(np.asarray(lengths).tolist())]

    # ---- tagging ---------------------------------------------------------------------------------
    def predict(self, sentences, batch_size: int = 256) -> list:
        """Tags of each sentence (lists of words, or ``Sentence``s): a list of lists of tag strings.

        Batches of at most ``batch_size`` sentences of similar length (``length_batches``), in eval
        mode, without a tape; the character RNN reads each distinct word form once."""
        sentences = [getattr(s, "words", s) for s in sentences]
        results = [[] for _ in sentences]
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                forms = {w: k for k, w in enumerate(dict.fromkeys(w for s in sentences for w in s))}
                table = self.char_table(list(forms)) if self.char_hidden else None
                for chunk in length_batches([len(s) for s in sentences], batch_size):
                    batch = encode_batch(self.vocabs, [sentences[i] for i in chunk], forms=forms)
                    for i, ids in zip(chunk, self.decode(self(batch, table), batch.lengths)):
                        results[i] = self.vocabs.tags.decode(ids)
        finally:
            self.train(was_training)
        return results


def _check_args(cell, char_cell, layers, hidden, word_dim, char_dim, char_hidden, dropout):
    for name, value in (("cell", cell), ("char_cell", char_cell)):
        if value not in CELLS:
            raise TinyRNNError(f"unknown {name} {value!r}: use one of {', '.join(CELLS)}")
    for name, value in (("layers", layers), ("hidden", hidden)):
        if int(value) <= 0:
            raise TinyRNNError(f"--{name} must be positive, got {value}")
    for name, value in (("word_dim", word_dim), ("char_dim", char_dim), ("char_hidden", char_hidden)):
        if int(value) < 0:
            raise TinyRNNError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if not int(word_dim) and not int(char_hidden):
        raise TinyRNNError("--word-dim and --char-hidden are both 0: the tagger needs word or character features")
    if int(char_hidden) and not int(char_dim):
        raise TinyRNNError("--char-dim must be positive when --char-hidden is (0 turns characters off)")
    if not 0.0 <= dropout < 1.0:
        raise TinyRNNError(f"--dropout must be in [0, 1), got {dropout}")
