"""Reading and writing tagged sentences: CoNLL-U byte-for-byte round trips, two-column and plain
text, format detection, and a one-line TinyRNNError naming the line for every kind of bad input."""
import io

import pytest

from tinyrnn.errors import TinyRNNError
from tinyrnn.tagging import conll

CONLLU = (
    "# newdoc id = d1\n"
    "# sent_id = 1\n"
    "# text = Don't stop.\n"
    "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
    "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
    "3\tstop\tstop\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No\n"
    "4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_\n"
    "\n"
    "# sent_id = 2\n"
    "1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n"
    "2\tcame\tcome\tVERB\tVBD\t_\t0\troot\t_\t_\n"
    "2.1\tcame\tcome\tVERB\tVBD\t_\t_\t_\t0:root\tCopyOf=2\n"
    "3\thome\thome\tADV\tRB\t_\t2\tadvmod\t_\t_\n"
    "\n"
    "# sent_id = 3\n"
    "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n"     # the last sentence: no blank line at EOF
)


def _write(tmp_path, text, name="f.txt", raw=False):
    path = tmp_path / name
    path.write_bytes(text if raw else text.encode("utf-8"))
    return str(path)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(TinyRNNError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_conllu_words_tags_and_special_lines(tmp_path):
    s = conll.read_conllu(_write(tmp_path, CONLLU))
    assert [x.words for x in s] == [["Do", "n't", "stop", "."], ["I", "came", "home"], ["Hi"]]
    assert s[0].tags == ["AUX", "PART", "VERB", "PUNCT"]
    assert s[1].tags == ["PRON", "VERB", "ADV"]                  # 2.1 is kept but not a word
    assert [len(x) for x in s] == [4, 3, 1]
    assert conll.read_conllu(_write(tmp_path, CONLLU), column="xpos")[0].tags == ["VBP", "RB", "VB", "."]


@pytest.mark.parametrize("text", [CONLLU, CONLLU + "\n", CONLLU + "\n\n", CONLLU.rstrip("\n"),
                                  CONLLU.replace("\n", "\r\n"), CONLLU.replace("\n\n", "\n\n\n"),
                                  "# a comment block\n\n" + CONLLU + "\n# trailing comment\n",
                                  CONLLU.replace("# sent_id = 2\n", "# loose\n\n# sent_id = 2\n")])
def test_conllu_round_trip_byte_for_byte(tmp_path, text):
    path = _write(tmp_path, text)
    out = io.StringIO()
    conll.write_conllu(conll.read_conllu(path), None, out)
    assert out.getvalue() == text
    sentences = conll.read_conllu(path)
    out = io.StringIO()
    conll.write_conllu(sentences, [x.tags for x in sentences], out)   # writing the same tags back
    assert out.getvalue() == text


def test_conllu_writes_predictions_into_one_column(tmp_path):
    sentences = conll.read_conllu(_write(tmp_path, CONLLU))
    predicted = [["X"] * len(x) for x in sentences]
    out = io.StringIO()
    conll.write_conllu(sentences, predicted, out)
    lines_in, lines_out = CONLLU.split("\n"), out.getvalue().split("\n")
    assert len(lines_in) == len(lines_out)
    for a, b in zip(lines_in, lines_out):
        fa, fb = a.split("\t"), b.split("\t")
        if len(fa) == 10 and fa[0].isdigit():
            assert fb[3] == "X" and fa[:3] + fa[4:] == fb[:3] + fb[4:]
        else:
            assert a == b                                            # comments, 1-2, 2.1 unchanged
    out = io.StringIO()
    conll.write_conllu(sentences, predicted, out, column="xpos")
    assert out.getvalue().split("\n")[4].split("\t")[3:5] == ["AUX", "X"]


def test_conllu_from_streams(tmp_path):
    assert len(conll.read_conllu(io.StringIO(CONLLU))) == 3
    binary = io.BytesIO(CONLLU.encode())
    assert conll.read_conllu(binary)[2].words == ["Hi"]


def test_conllu_utf8_and_bom(tmp_path):
    text = "1\tcafé\tcafé\tNOUN\tNN\t_\t0\troot\t_\t_\n"
    assert conll.read_conllu(_write(tmp_path, "\ufeff" + text))[0].words == ["café"]


def test_conllu_without_tags_for_prediction(tmp_path):
    text = "1\tHello\t_\t_\t_\t_\t_\t_\t_\t_\n2\tthere\t_\t_\t_\t_\t_\t_\t_\t_\n"
    path = _write(tmp_path, text)
    s = conll.read_conllu(path, require_tags=False)
    assert s[0].words == ["Hello", "there"] and s[0].tags is None
    message = _error(conll.read_conllu, path)
    assert "no UPOS tags" in message and path in message


def test_two_column(tmp_path):
    text = ("-DOCSTART- -X- -X- O\n\n"
            "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\n"     # CoNLL-2003: last column
            "Peter\tB-PER\nBlackburn\tI-PER\n")
    s = conll.read_two_column(_write(tmp_path, text))
    assert [x.words for x in s] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
    assert [x.tags for x in s] == [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]
    out = io.StringIO()
    conll.write_two_column(s, None, out)
    assert out.getvalue() == "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\n\nPeter\tB-PER\nBlackburn\tI-PER\n\n"
    assert conll.read_two_column(io.StringIO("a b\n")) [0].tags == ["b"]


def test_two_column_mixed_tagged_and_untagged(tmp_path):
    path = _write(tmp_path, "a\tX\n\nb\tY\nc\n")
    message = _error(conll.read_two_column, path, require_tags=False)
    assert f"{path}:4:" in message and "word 2" in message


def test_two_column_words_with_spaces_need_tabs(tmp_path):
    s = conll.read_two_column(_write(tmp_path, "New York\tPROPN\ncity\tNOUN\n"))
    assert s[0].words == ["New York", "city"]


def test_plain_text_and_output(tmp_path):
    s = conll.read_plain(_write(tmp_path, "The cat sat .\n\n  Hello   world\n"))
    assert [x.words for x in s] == [["The", "cat", "sat", "."], ["Hello", "world"]]
    assert s[0].tags is None
    assert conll.read_plain(["a b", "c"])[1].words == ["c"]
    out = io.StringIO()
    conll.write_plain(s, [["DET", "NOUN", "VERB", "PUNCT"], ["INTJ", "NOUN"]], out)
    assert out.getvalue() == "The/DET cat/NOUN sat/VERB ./PUNCT\nHello/INTJ world/NOUN\n"


def test_detect_format(tmp_path):
    assert conll.detect_format(_write(tmp_path, CONLLU, "a")) == "conllu"
    assert conll.detect_format(_write(tmp_path, "-DOCSTART- O\n\nEU B-ORG\n", "b")) == "two-column"
    assert conll.detect_format(_write(tmp_path, "The DET\ncat NOUN\n\nHi INTJ\n", "c")) == "two-column"
    assert conll.detect_format(_write(tmp_path, "a\tb\n", "d")) == "two-column"
    assert conll.detect_format(_write(tmp_path, "The cat sat on the mat .\nHi there\n", "e")) == "plain"
    fmt, s = conll.read_any(_write(tmp_path, "The cat sat .\n", "f"), require_tags=False)
    assert fmt == "plain" and s[0].words == ["The", "cat", "sat", "."]
    fmt, s = conll.read_any(io.StringIO(CONLLU))
    assert fmt == "conllu" and len(s) == 3
    assert "plain text" in _error(conll.read_any, _write(tmp_path, "The cat sat .\n", "g"))


# ----------------------------------------------------------------------------- bad input

def test_wrong_number_of_columns(tmp_path):
    path = _write(tmp_path, "# c\n1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n2 b b NOUN NN _ 1 obj _ _\n")
    message = _error(conll.read_conllu, path)
    assert f"{path}:3:" in message and "10 tab-separated" in message and "tabs" in message


def test_non_integer_token_id(tmp_path):
    path = _write(tmp_path, "1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n\nx\tB\tb\tX\tX\t_\t0\troot\t_\t_\n")
    message = _error(conll.read_conllu, path)
    assert f"{path}:3:" in message and "'x'" in message and "integer" in message


def test_one_column_file_has_no_tag_column(tmp_path):
    path = _write(tmp_path, "The\ncat\n\nHi\n")
    message = _error(conll.read_two_column, path)
    assert f"{path}:1:" in message and "no tag column" in message
    assert conll.read_two_column(path, require_tags=False)[0].tags is None


def test_underscore_upos_on_some_words(tmp_path):
    path = _write(tmp_path, "1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n2\tb\tb\t_\tNN\t_\t1\tobj\t_\t_\n")
    message = _error(conll.read_conllu, path)
    assert f"{path}:2:" in message and "UPOS" in message


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    path = _write(tmp_path, text)
    for reader in (conll.read_conllu, conll.read_two_column, conll.read_plain):
        assert "empty" in _error(reader, path)


def test_no_sentences(tmp_path):
    assert "no sentences" in _error(conll.read_conllu, _write(tmp_path, "# only a comment\n", "a"))
    assert "no sentences" in _error(conll.read_two_column, _write(tmp_path, "-DOCSTART- O\n\n", "b"))


def test_binary_file(tmp_path):
    path = _write(tmp_path, b"1\tA\n2\tB\x00\x01\n", raw=True)
    message = _error(conll.read_conllu, path)
    assert f"{path}:2:" in message and "binary" in message


def test_invalid_utf8(tmp_path):
    path = _write(tmp_path, "1\tA\ta\tDET\tDT\t_\t0\troot\t_\t_\n".encode() + b"2\tb\xff\n", raw=True)
    message = _error(conll.read_conllu, path)
    assert f"{path}:2:" in message and "UTF-8" in message and "0xff" in message


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in _error(conll.read_conllu, str(tmp_path / "nope.conllu"))
    assert "directory" in _error(conll.read_two_column, str(tmp_path))


def test_unknown_column(tmp_path):
    assert "upos or xpos" in _error(conll.read_conllu, _write(tmp_path, CONLLU), column="lemma")
