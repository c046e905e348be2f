"""Scoring a tagger as papers do: token accuracy, OOV accuracy, per-tag F1, conlleval span F1.

    r = report(gold, predicted, words=[s.words for s in dev], train_words=word_vocab,
               known_tags=tag_vocab.itos)
    r["accuracy"], r["oov_accuracy"], r["spans"]["f1"]      # fractions in [0, 1]
    print(format_report(r))

gold, predicted: one list of tag strings per sentence. A word is out of vocabulary (OOV) if it is
not ``in train_words`` (a set, or a ``Vocab``). Gold tags the model never saw (not in
``known_tags``) cannot be predicted: they count as errors and are listed under ``unseen_tags``.

Spans: when every tag is ``O`` or ``B-X`` / ``I-X``, entities are scored like CoNLL's
``conlleval``: a span starts at B-X, or at I-X after O or after a tag of another type (IOB1), and
ends before the next B, O or change of type; it is correct only if its type and both boundaries
match a gold span. Precision and recall are over spans, not tokens.
"""
from __future__ import annotations

from collections import Counter


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _prf(correct: int, predicted: int, gold: int) -> dict:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


# ----------------------------------------------------------------------------- spans (conlleval)

def _split(tag: str) -> tuple:
    """('B', 'PER') for 'B-PER'; ('O', '') for 'O'."""
    prefix, dash, kind = tag.partition("-")
    return (prefix, kind) if dash else (tag, "")


def _ends(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    """conlleval's endOfChunk: does a span that reached the previous token stop before this one?"""
    if prev in ("B", "I") and tag in ("B", "O"):
        return True
    return prev != "O" and prev_kind != kind


def _starts(prev: str, prev_kind: str, tag: str, kind: str) -> bool:
    """conlleval's startOfChunk: does a span begin at this token?"""
    if tag == "B" or (prev == "O" and tag == "I"):
        return True
    return tag != "O" and prev_kind != kind


def spans(tags) -> list:
    """The labelled spans of one sentence as (start, end, type), end exclusive, conlleval rules."""
    found, start = [], None
    prev, prev_kind = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):       # a final O closes a span at sentence end
        cur, kind = _split(tag)
        if start is not None and _ends(prev, prev_kind, cur, kind):
            found.append((start, i, prev_kind))
            start = None
        if i < len(tags) and _starts(prev, prev_kind, cur, kind):
            start = i
        prev, prev_kind = cur, kind
    return found


def is_bio(tag_sets) -> bool:
    """True if every tag is O, B-X or I-X and at least one is not O."""
    tags = set().union(*tag_sets)
    return any(t != "O" for t in tags) and all(t == "O" or t[:2] in ("B-", "I-") and len(t) > 2 for t in tags)


def span_scores(gold, predicted) -> dict:
    """conlleval precision / recall / F1 over all sentences, overall and per type."""
    correct, n_gold, n_pred = Counter(), Counter(), Counter()
    for g, p in zip(gold, predicted):
        gs, ps = set(spans(g)), set(spans(p))
        n_gold.update(s[2] for s in gs)
        n_pred.update(s[2] for s in ps)
        correct.update(s[2] for s in gs & ps)
    total = _prf(sum(correct.values()), sum(n_pred.values()), sum(n_gold.values()))
    total.update(gold_spans=sum(n_gold.values()), predicted_spans=sum(n_pred.values()),
                 correct_spans=sum(correct.values()))
    total["per_type"] = {k: {**_prf(correct[k], n_pred[k], n_gold[k]), "support": n_gold[k]}
                         for k in sorted(set(n_gold) | set(n_pred))}
    return total


# ----------------------------------------------------------------------------- the report

def report(gold, predicted, words=None, train_words=None, known_tags=None, max_confusions: int = 10) -> dict:
    """All scores as a JSON-ready dict (fractions in [0, 1]; None where nothing was counted).

    Keys: accuracy, tokens, correct, sentences, sentence_accuracy, oov_accuracy, oov_tokens,
    per_tag {tag: precision, recall, f1, support}, confusions [[gold, predicted, count], ...],
    unseen_tags {tag: count}, and spans (see ``span_scores``) when the tags are BIO.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    flat_g, flat_p, flat_oov = [], [], []
    exact = 0
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        flat_g.extend(g)
        flat_p.extend(p)
        exact += list(g) == list(p)
        if words is not None and train_words is not None:
            flat_oov.extend(w not in train_words for w in words[i])
    right = [a == b for a, b in zip(flat_g, flat_p)]
    n = len(flat_g)
    oov = [r for r, o in zip(right, flat_oov) if o]
    result = {
        "accuracy": sum(right) / n if n else None, "tokens": n, "correct": sum(right),
        "sentences": len(gold), "sentence_accuracy": exact / len(gold) if gold else None,
        "oov_accuracy": sum(oov) / len(oov) if oov else None, "oov_tokens": len(oov),
    }
    gold_count, pred_count = Counter(flat_g), Counter(flat_p)
    hits = Counter(a for a, r in zip(flat_g, right) if r)
    result["per_tag"] = {t: {**_prf(hits[t], pred_count[t], gold_count[t]), "support": gold_count[t]}
                         for t in sorted(set(gold_count) | set(pred_count))}
    confusions = Counter((a, b) for a, b, r in zip(flat_g, flat_p, right) if not r)
    result["confusions"] = [[a, b, c] for (a, b), c in confusions.most_common(max_confusions)]
    known = set(known_tags) if known_tags is not None else None
    result["unseen_tags"] = {} if known is None else {t: c for t, c in sorted(gold_count.items()) if t not in known}
    if is_bio([gold_count, pred_count]):
        result["spans"] = span_scores(gold, predicted)
    return result


def _pct(x) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def format_report(r: dict) -> str:
    """A readable text table of ``report``'s dict."""
    out = [f"tokens {r['tokens']}  sentences {r['sentences']}",
           f"accuracy      {_pct(r['accuracy'])} %",
           f"OOV accuracy  {_pct(r['oov_accuracy'])} %  ({r['oov_tokens']} OOV tokens)",
           f"sentences     {_pct(r['sentence_accuracy'])} % exactly right"]
    if "spans" in r:
        s = r["spans"]
        out.append(f"spans  precision {_pct(s['precision'])}  recall {_pct(s['recall'])}  F1 {_pct(s['f1'])}"
                   f"  ({s['correct_spans']} of {s['gold_spans']} gold, {s['predicted_spans']} predicted)")
        out.append(_table("type", s["per_type"]))
    out.append(_table("tag", r["per_tag"]))
    if r["confusions"]:
        out.append("most frequent errors (gold -> predicted):")
        out.extend(f"  {a:>10} -> {b:<10} {c}" for a, b, c in r["confusions"])
    if r["unseen_tags"]:
        listed = ", ".join(f"{t} ({c})" for t, c in r["unseen_tags"].items())
        out.append(f"tags the model never saw (all counted as errors): {listed}")
    return "\n".join(out)


def _table(title: str, rows: dict) -> str:
    width = max([len(title)] + [len(k) for k in rows])
    lines = [f"{title:<{width}}  precision  recall      F1  support"]
    lines += [f"{k:<{width}}     {_pct(v['precision'])}  {_pct(v['recall'])}  {_pct(v['f1'])}  {v['support']:7d}"
              for k, v in rows.items()]
    return "\n".join(lines)
