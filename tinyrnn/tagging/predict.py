"""Tagging files and scoring a tagger: what ``tinyrnn tag predict`` and ``tinyrnn tag eval`` run.

    fmt, sentences = read_input(sys.stdin, column="upos")          # CoNLL-U, two-column or plain text
    tags = model.predict(sentences)
    write_output(sentences, tags, sys.stdout, fmt, column="upos")   # in the input's own format
    r = evaluate(model, conll.read_any("dev.conllu", column="upos")[1])   # metrics.report's dict

Output formats: CoNLL-U in, CoNLL-U out (the tag column filled in, every other byte as read);
two-column in, two-column out; plain text (one sentence per line) in, ``word/TAG`` pairs out.
``out_format`` chooses another: 'conllu' writes plain or two-column input as minimal CoNLL-U
(ID, FORM, the tag; '_' elsewhere).
"""
from __future__ import annotations

from . import conll, metrics


def read_input(source, column: str, fmt: str | None = None) -> tuple:
    """(format, sentences) of a path or stream to tag; tags in it, if any, are ignored."""
    return conll.read_any(source, fmt, column=column, require_tags=False)


def check_lengths(sentences, max_length: int | None, name: str, warn):
    """Warn (once per file) about sentences longer than any seen in training: they are tagged anyway."""
    if not max_length:
        return
    long = [s for s in sentences if len(s) > max_length]
    if long:
        more = f" ({len(long)} such sentences)" if len(long) > 1 else ""
        warn(f"warning: {name}:{long[0].line}: sentence of {len(long[0])} words is longer than any in training "
             f"({max_length}); tagged anyway{more}")


def write_output(sentences, tags, stream, fmt: str, column: str = "upos", out_format: str | None = None):
    """Write the tagged ``sentences`` in ``out_format`` (default: the input's ``fmt``)."""
    out_format = out_format or fmt
    if out_format == "conllu" and fmt == "conllu":
        conll.write_conllu(sentences, tags, stream, column)
    elif out_format == "conllu":
        write_minimal_conllu(sentences, tags, stream, column)
    elif out_format == "two-column":
        conll.write_two_column(sentences, tags, stream)
    else:
        conll.write_plain(sentences, tags, stream)


def write_minimal_conllu(sentences, tags, stream, column: str = "upos"):
    """CoNLL-U for sentences that were not read from CoNLL-U: ``# text``, then ID FORM and the tag."""
    col = conll.TAG_COLUMNS[column]
    for n, (s, sentence_tags) in enumerate(zip(sentences, tags), 1):
        lines = [f"# sent_id = {n}", f"# text = {' '.join(s.words)}"]
        for i, (word, tag) in enumerate(zip(s.words, sentence_tags), 1):
            fields = [str(i), word] + ["_"] * 8
            fields[col] = tag
            lines.append("\t".join(fields))
        stream.write("\n".join(lines) + "\n\n")


def evaluate(model, sentences, batch_size: int = 256) -> dict:
    """Score ``model`` on tagged ``sentences``: ``metrics.report``'s dict (accuracy, oov_accuracy, ...).

    A word is out of vocabulary when its lower-cased form never occurred in training (the word
    vocabulary keeps every training word); gold tags the model never saw count as errors and are
    listed under ``unseen_tags``."""
    predicted = model.predict(sentences, batch_size)
    return metrics.report([s.tags for s in sentences], predicted, words=[s.words for s in sentences],
                          train_words=model.vocabs.words, known_tags=model.vocabs.tags.itos)
