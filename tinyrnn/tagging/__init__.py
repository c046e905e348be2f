"""Sequence tagging (part of speech, named entities): data, vocabularies, metrics and a CRF.

    from tinyrnn.tagging import conll, vocab, metrics, crf

    train = conll.read_conllu("en_ewt-ud-train.conllu", column="upos")   # list of Sentence
    words = vocab.build_word_vocab(s.words for s in train)
    tags = vocab.build_tag_vocab(s.tags for s in train)
    loss = crf.crf_nll(emissions, tag_ids, lengths, T, start, end)        # one op on the tape
    paths = crf.viterbi_decode(emissions.numpy(), lengths, T.numpy(), start.numpy(), end.numpy())
    print(metrics.format_report(metrics.report(gold, predicted, words=..., train_words=words)))

One idea per module: ``conll`` reads and writes CoNLL-U, two-column and plain text; ``vocab``
maps words, characters and tags to ids (JSON, no pickle); ``metrics`` scores predictions as the
field does (token and OOV accuracy, per-tag F1, conlleval span F1); ``crf`` is a linear-chain
CRF whose loss is a single op on the tape.

The tagger itself (imported on demand): ``batch`` (padded batches, length buckets), ``model``
(``Tagger``), ``task`` (``TagConfig``, ``TaggerTask`` for the shared Trainer, ``train_tagger``),
``predict`` (tagging and scoring files, for ``tinyrnn tag``).
"""
from . import conll, crf, metrics, vocab

__all__ = ["conll", "crf", "metrics", "vocab"]
