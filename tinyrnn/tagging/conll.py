"""Reading and writing tagged sentences: CoNLL-U, two-column (word TAB tag) and plain text.

    sentences = read_conllu("en_ewt-ud-dev.conllu", column="upos")   # list of Sentence
    sentences[0].words, sentences[0].tags                           # ['From', 'the', ...], ['ADP', ...]
    write_conllu(sentences, predicted, sys.stdout)                  # the file again, UPOS replaced

A CoNLL-U sentence keeps every line it was read from (comments, multiword-token ranges ``3-4``,
empty nodes ``8.1``) and the blank lines after it, so that writing it back reproduces the input
byte for byte, except for the one tag column being filled in. Ranges and empty nodes are kept
but are not words: they are never tagged and never counted.

Every reader takes a path or a text/binary stream (``sys.stdin``), decodes UTF-8 (a leading BOM
is dropped) and raises ``TinyRNNError`` with one line naming the file, the line and the fix.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

from ..errors import TinyRNNError

TAG_COLUMNS = {"upos": 3, "xpos": 4}   # 0-based CoNLL-U columns: ID FORM LEMMA UPOS XPOS ...


@dataclass
class Sentence:
    """One sentence.

    words:      the words (CoNLL-U: FORM of the integer-ID lines only)
    tags:       one tag per word, or None (plain text, or a file read without tags)
    lines:      CoNLL-U only: every raw line of the sentence, comments included, no newline
    word_lines: CoNLL-U only: index into ``lines`` of each word
    tail:       what followed the last line up to the next sentence ('\\n\\n', or '\\n' at EOF)
    line:       1-based line number where the sentence starts in its file (for messages)
    head:       CoNLL-U only: comment-only blocks just before the sentence, written before it
    """
    words: list
    tags: list | None = None
    lines: list | None = None
    word_lines: list | None = None
    tail: str = "\n\n"
    line: int = 1
    head: str = ""

    def __len__(self):
        return len(self.words)


# ----------------------------------------------------------------------------- raw text

def _read_text(source) -> tuple[str, str]:
    """(name, decoded text) of a path or a stream. NUL bytes and invalid UTF-8 are errors."""
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if os.path.isdir(name):
            raise TinyRNNError(f"{name} is a directory: give a text file")
        try:
            with open(name, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise TinyRNNError(f"no such file: {name}: check the path") from None
        except OSError as e:
            raise TinyRNNError(f"cannot read {name}: {e.strerror or e}") from None
    else:
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) else "<stdin>"
        stream = getattr(source, "buffer", source)      # the bytes under sys.stdin
        data = stream.read()
        if isinstance(data, str):                       # io.StringIO: already text
            data = data.encode("utf-8", "surrogatepass")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise TinyRNNError(f"{name}:{line}: NUL byte: this looks like a binary file; give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TinyRNNError(f"{name}:{line}: invalid UTF-8 (byte 0x{data[e.start]:02x} at column {column}): "
                           "save the file as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise TinyRNNError(f"{name} is empty: give a file with at least one sentence")
    return name, text


_BLOCK = re.compile(r"^[^\n]*\S[^\n]*(?:\n[^\n]*\S[^\n]*)*", re.MULTILINE)   # non-blank lines in a row


def _blocks(text: str):
    """Yield (first line number, lines, tail) for each run of non-blank lines.

    ``tail`` is the text between the block and the next one ('\\n\\n' between sentences), so
    ``"\\n".join(lines) + tail`` over all blocks gives ``text`` back (blank lines before the first
    block are dropped: the only bytes a CoNLL-U round trip loses). Lines keep a trailing '\\r'
    (CRLF files), so that writing them back is exact.
    """
    line, pos, previous = 1, 0, None
    for m in _BLOCK.finditer(text):
        line += text.count("\n", pos, m.start())
        if previous is not None:
            yield previous[0], previous[1], text[previous[2]:m.start()]
        lines = m.group().split("\n")
        previous, pos = (line, lines, m.end()), m.start()
    if previous is not None:
        yield previous[0], previous[1], text[previous[2]:]


def _no_sentences(name: str):
    return TinyRNNError(f"{name} has no sentences (only comments, blank lines or -DOCSTART-): "
                        "give a file with at least one sentence")


# ----------------------------------------------------------------------------- CoNLL-U

def _token_kind(token_id: str) -> str:
    """'word' (an integer ID), 'range' (3-4), 'empty' (8.1) or 'bad'."""
    if token_id.isdigit() and token_id.isascii():
        return "word"
    for sep, kind in (("-", "range"), (".", "empty")):
        a, found, b = token_id.partition(sep)
        if found and a.isdigit() and b.isdigit() and a.isascii() and b.isascii():
            return kind
    return "bad"


def _conllu_sentence(name, first, lines, tail, col, missing) -> Sentence:
    """Parse one block of CoNLL-U lines; ``missing`` collects line numbers of '_' tags."""
    words, tags, word_lines = [], [], []
    for k, raw in enumerate(lines):
        if raw[0] == "#":
            continue
        columns = raw.count("\t") + 1
        if columns != 10:
            hint = " (columns must be separated by tabs, not spaces)" if columns < 10 and " " in raw else ""
            raise TinyRNNError(f"{name}:{first + k}: expected 10 tab-separated CoNLL-U columns, "
                               f"found {columns}{hint}: fix the line, or read the file as two-column")
        fields = raw.split("\t", col + 1)               # only the columns we read: ID FORM .. tag
        token_id = fields[0]
        if token_id.isdigit() and token_id.isascii():            # a word (the common case, inline)
            words.append(fields[1])
            tags.append(fields[col])
            word_lines.append(k)
            if fields[col] == "_":
                missing.append(first + k)
        elif _token_kind(token_id) == "bad":
            raise TinyRNNError(f"{name}:{first + k}: token ID {fields[0]!r} is not an integer, a range like 3-4 "
                               "or an empty node like 8.1: fix the first column")
    if not words:
        raise TinyRNNError(f"{name}:{first}: sentence has no words (no line with an integer ID): "
                           "give each sentence at least one token line")
    return Sentence(words, tags, lines, word_lines, tail, first)


def read_conllu(source, column: str = "upos", require_tags: bool = True) -> list:
    """Sentences of a CoNLL-U file (path or stream); tags from ``column`` ('upos' or 'xpos').

    With ``require_tags`` a '_' in the tag column is an error; without, ``tags`` is None for a
    sentence whose words are all untagged.
    """
    if column not in TAG_COLUMNS:
        raise TinyRNNError(f"unknown tag column {column!r}: use upos or xpos")
    col = TAG_COLUMNS[column]
    name, text = _read_text(source)
    sentences, missing, head = [], [], ""
    for first, lines, tail in _blocks(text):
        if all(raw[0] == "#" for raw in lines):          # a block of comments only: keep it
            head += "\n".join(lines) + tail
            continue
        sentences.append(_conllu_sentence(name, first, lines, tail, col, missing))
        sentences[-1].head, head = head, ""
    if sentences and head:                               # comments after the last sentence
        sentences[-1].tail += head
    if not sentences:
        raise _no_sentences(name)
    if missing and require_tags:
        words = sum(len(s) for s in sentences)
        if len(missing) == words:
            raise TinyRNNError(f"{name} has no {column.upper()} tags (column {col + 1} is '_' on every word): "
                               f"give a tagged file, or choose the other tag column")
        raise TinyRNNError(f"{name}:{missing[0]}: word has no {column.upper()} tag ('_', {len(missing)} such "
                           f"words in the file): tag every word, or choose the other tag column")
    for s in sentences:
        if s.tags is not None and all(t == "_" for t in s.tags):
            s.tags = None
    return sentences


def write_conllu(sentences, predicted_tags, stream, column: str = "upos"):
    """Write ``sentences`` as CoNLL-U with ``predicted_tags`` (one list per sentence, or None to
    keep the tags read) in ``column``; every other byte is written as it was read."""
    col = TAG_COLUMNS[column]
    for i, s in enumerate(sentences):
        if s.lines is None:
            raise ValueError("write_conllu needs sentences read from CoNLL-U (they keep their lines)")
        lines = s.lines
        if predicted_tags is not None:
            tags = predicted_tags[i]
            if len(tags) != len(s.words):
                raise ValueError(f"sentence {i}: {len(tags)} tags for {len(s.words)} words")
            lines = list(lines)
            for k, tag in zip(s.word_lines, tags):
                fields = lines[k].split("\t")
                fields[col] = tag
                lines[k] = "\t".join(fields)
        stream.write(s.head + "\n".join(lines) + s.tail)


# ----------------------------------------------------------------------------- two-column

def _split_two_column(raw: str) -> list:
    line = raw.strip()
    return line.split("\t") if "\t" in line else line.split()


def read_two_column(source, require_tags: bool = True) -> list:
    """Sentences of a ``word<TAB>tag`` file (or ``word tag``; or CoNLL-2003 lines whose last column
    is the tag), blank lines between sentences, ``-DOCSTART-`` lines skipped. Without
    ``require_tags`` one-column lines (words only) are accepted and ``tags`` is None."""
    name, text = _read_text(source)
    sentences = []
    for first, lines, tail in _blocks(text):
        words, tags, numbers = [], [], []
        for k, raw in enumerate(lines):
            fields = _split_two_column(raw)
            if fields[0] == "-DOCSTART-":
                continue
            if len(fields) < 2 and require_tags:
                raise TinyRNNError(f"{name}:{first + k}: no tag column (expected 'word<TAB>tag', found "
                                   f"{raw.strip()[:40]!r}): give a tagged file")
            words.append(fields[0])
            tags.append(fields[-1].strip() if len(fields) > 1 else None)
            numbers.append(first + k)
        if words:
            untagged = all(t is None for t in tags)
            if not untagged and any(t is None for t in tags):
                k = tags.index(None)
                raise TinyRNNError(f"{name}:{numbers[k]}: word {k + 1} of the sentence has no tag but others "
                                   "have: give every word a tag, or none")
            sentences.append(Sentence(words, None if untagged else tags, tail=tail, line=first))
    if not sentences:
        raise _no_sentences(name)
    return sentences


def write_two_column(sentences, predicted_tags, stream):
    """``word<TAB>tag`` lines, a blank line after each sentence (``predicted_tags`` None: the tags read)."""
    for i, s in enumerate(sentences):
        tags = s.tags if predicted_tags is None else predicted_tags[i]
        stream.write("".join(f"{w}\t{t}\n" for w, t in zip(s.words, tags)) + "\n")


# ----------------------------------------------------------------------------- plain text

def read_plain(source) -> list:
    """One sentence per non-blank line, words split on whitespace, no tags. ``source``: a path,
    a stream, or a list of strings (one sentence each)."""
    if isinstance(source, (list, tuple)):
        name, lines = "<lines>", list(source)
    else:
        name, text = _read_text(source)
        lines = text.split("\n")
    sentences = [Sentence(line.split(), line=n) for n, line in enumerate(lines, 1) if line.strip()]
    if not sentences:
        raise _no_sentences(name)
    return sentences


def write_plain(sentences, predicted_tags, stream):
    """``word/TAG word/TAG ...``, one sentence per line."""
    for s, tags in zip(sentences, predicted_tags):
        stream.write(" ".join(f"{w}/{t}" for w, t in zip(s.words, tags)) + "\n")


# ----------------------------------------------------------------------------- format detection

def detect_format(path) -> str:
    """'conllu', 'two-column' or 'plain', from the first 64 KB of a file (see ``detect_text``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", "replace")
    except FileNotFoundError:
        raise TinyRNNError(f"no such file: {path}: check the path") from None
    except OSError as e:
        raise TinyRNNError(f"cannot read {path}: {e.strerror or e}") from None
    return detect_text(head)


def detect_text(text: str, sample_lines: int = 200) -> str:
    """'conllu', 'two-column' or 'plain', from the first ``sample_lines`` non-blank lines.

    CoNLL-U: a line of 10 tab-separated columns whose first is a token ID. Two-column: tabs,
    ``-DOCSTART-``, or the same small number (1-6) of fields on every line with blank lines between
    sentences. Anything else is plain text (one sentence per line).
    """
    lines = text.split("\n")
    blank = any(not line.strip() for line in lines[:-1])
    sample = [line.rstrip("\r") for line in lines if line.strip()][:sample_lines]
    if any(_is_conllu_line(line) for line in sample if not line.startswith("#")):
        return "conllu"
    if any("\t" in line or line.startswith("-DOCSTART-") for line in sample):
        return "two-column"
    widths = {len(line.split()) for line in sample}
    if blank and len(widths) == 1 and widths.pop() <= 6:
        return "two-column"
    return "plain"


def _is_conllu_line(line: str) -> bool:
    fields = line.split("\t")
    return len(fields) == 10 and _token_kind(fields[0]) != "bad"


def read_any(source, fmt: str | None = None, column: str = "upos", require_tags: bool = True) -> tuple:
    """(format, sentences): read a path or stream as ``fmt`` ('conllu', 'two-column', 'plain'),
    or, with ``fmt`` None, as ``detect_format`` / ``detect_text`` says."""
    if fmt is None:
        if isinstance(source, (str, os.PathLike)):
            fmt = detect_format(source)
        else:                                            # a stream can be read once: keep its text
            name, text = _read_text(source)
            fmt = detect_text(text[: 1 << 16])
            source = io.StringIO(text)
            source.name = name
    if fmt == "conllu":
        return fmt, read_conllu(source, column, require_tags)
    if fmt == "two-column":
        return fmt, read_two_column(source, require_tags)
    if fmt == "plain":
        if require_tags:
            name, _ = _read_text(source)        # an empty, binary or non-UTF-8 file says so first
            raise TinyRNNError(f"{name} looks like plain text (no tags): give a CoNLL-U or two-column file")
        return fmt, read_plain(source)
    raise TinyRNNError(f"unknown format {fmt!r}: use conllu, two-column or plain")
