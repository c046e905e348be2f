"""Tagging metrics on hand-worked examples: token and OOV accuracy, per-tag scores, confusions,
unseen tags, and conlleval span F1 (IOB2 and IOB1, type changes, spans at sentence ends)."""
import json

import pytest

from tinyrnn.tagging import metrics
from tinyrnn.tagging.metrics import format_report, report, span_scores, spans


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),
    (["O", "I-PER", "I-PER", "O"], [(1, 3, "PER")]),                     # IOB1: I- after O starts a span
    (["I-PER", "I-PER"], [(0, 2, "PER")]),                               # ... also at sentence start
    (["B-PER", "I-LOC"], [(0, 1, "PER"), (1, 2, "LOC")]),                # a type change splits
    (["I-PER", "I-LOC", "I-LOC"], [(0, 1, "PER"), (1, 3, "LOC")]),
    (["B-PER", "B-PER"], [(0, 1, "PER"), (1, 2, "PER")]),                # B- always starts a new span
    (["I-PER", "B-PER", "I-PER"], [(0, 1, "PER"), (1, 3, "PER")]),
    (["O", "B-PER"], [(1, 2, "PER")]),                                   # a span at sentence end
    (["O", "B-ORG", "I-ORG"], [(1, 3, "ORG")]),
    (["O", "O"], []),
])
def test_spans(tags, expected):
    assert spans(tags) == expected


def test_span_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "I-ORG", "I-ORG"], ["B-PER", "I-LOC"], ["B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "I-ORG"], ["B-PER", "I-PER"], ["O"]]
    # gold: PER 0-2, LOC 3-4 | ORG 1-3 | PER 0-1, LOC 1-2 | MISC 0-1  (6)
    # pred: PER 0-2, ORG 3-4 | ORG 1-3 | PER 0-2                      (4); correct: PER 0-2, ORG 1-3
    s = span_scores(gold, pred)
    assert (s["gold_spans"], s["predicted_spans"], s["correct_spans"]) == (6, 4, 2)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(0.4)
    per = s["per_type"]
    assert per["PER"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert per["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per["MISC"]["support"] == 1 and per["MISC"]["f1"] == 0.0


def test_spans_do_not_cross_sentences():
    gold = [["O", "B-PER"], ["I-PER", "O"]]
    s = span_scores(gold, [["O", "B-PER"], ["B-PER", "O"]])
    assert s["gold_spans"] == 2 and s["correct_spans"] == 2 and s["f1"] == 1.0


def test_boundary_mismatch_is_wrong():
    s = span_scores([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]])
    assert s["correct_spans"] == 0 and s["f1"] == 0.0


def test_report_by_hand():
    gold = [["DET", "NOUN", "VERB"], ["PRON", "VERB"]]
    pred = [["DET", "VERB", "VERB"], ["PRON", "NOUN"]]
    words = [["the", "zorp", "ran"], ["I", "glorped"]]
    r = report(gold, pred, words=words, train_words={"the", "ran", "I"}, known_tags=["DET", "VERB", "PRON"])
    assert r["accuracy"] == pytest.approx(3 / 5) and r["tokens"] == 5 and r["correct"] == 3
    assert r["oov_accuracy"] == 0.0 and r["oov_tokens"] == 2
    assert r["sentences"] == 2 and r["sentence_accuracy"] == 0.0
    assert r["per_tag"]["DET"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert r["per_tag"]["VERB"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_tag"]["NOUN"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert sorted(map(tuple, r["confusions"])) == [("NOUN", "VERB", 1), ("VERB", "NOUN", 1)]
    assert r["unseen_tags"] == {"NOUN": 1}
    assert "spans" not in r
    json.dumps(r)                                                       # JSON-ready
    text = format_report(r)
    assert "60.00" in text and "NOUN" in text and "never saw" in text


def test_report_oov_and_confusion_order():
    gold = [["A", "A", "A", "B"]]
    pred = [["B", "B", "A", "A"]]
    r = report(gold, pred, words=[["x", "y", "x", "z"]], train_words={"x"}, max_confusions=1)
    assert r["oov_accuracy"] == 0.0 and r["oov_tokens"] == 2             # y and z
    assert r["confusions"] == [["A", "B", 2]]
    assert r["unseen_tags"] == {}
    assert report(gold, gold)["oov_accuracy"] is None                    # no vocabulary given


def test_report_with_bio_tags_has_spans():
    gold = [["B-PER", "I-PER", "O"]]
    r = report(gold, [["B-PER", "I-PER", "O"]])
    assert r["spans"]["f1"] == 1.0 and r["accuracy"] == 1.0
    assert "spans" in format_report(r)
    assert metrics.is_bio([{"O", "B-X", "I-X"}]) and not metrics.is_bio([{"O"}])
    assert not metrics.is_bio([{"NOUN", "B-X"}])


def test_report_rejects_misaligned_input():
    with pytest.raises(ValueError, match="sentence 0"):
        report([["A", "B"]], [["A"]])
    with pytest.raises(ValueError, match="sentences"):
        report([["A"]], [])
