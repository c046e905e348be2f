"""Smoke tests of the tagger rows of `tinyrnn bench` (issue 11): the rows appear, with positive
numbers, and --json holds them. Tiny sizes (1 step, a few hundred tokens to tag); how fast the
tagger is belongs to the benchmark, never to a test."""
import json
import math

import numpy as np
import pytest

from _cli import ok

ROWS = ("training, B32 sentences", "predict in process, B256", "tag predict end to end (CoNLL-U)")
TINY = ("--only", "tagger", "--repeats", "1", "--steps", "1", "--tagger-tokens", "200")


def rows(stdout):
    """{row label: the number after each framework's name on it}"""
    found = {}
    for line in stdout.splitlines():
        for label in ROWS:
            if line.strip().startswith(label):
                words = line.strip()[len(label):].split()
                found[label] = {w: float(words[i + 1]) for i, w in enumerate(words[:-1]) if w in ("tinyrnn", "torch")}
    return found


def check(data, stdout, with_torch):
    got = rows(stdout)
    assert set(got) == set(ROWS), stdout
    tagger = data["tagger"]
    for key in ("train", "predict"):
        assert tagger[key]["tinyrnn"] > 0
        if with_torch:
            assert tagger[key]["torch"] > 0 and tagger[key]["ratio"] > 0
        else:
            assert math.isnan(tagger[key]["torch"])
    assert tagger["predict_end_to_end"]["tinyrnn"] > 0
    assert got[ROWS[0]]["tinyrnn"] == pytest.approx(tagger["train"]["tinyrnn"], abs=0.5)
    assert got[ROWS[2]]["tinyrnn"] == pytest.approx(tagger["predict_end_to_end"]["tinyrnn"], abs=0.5)
    # --only tagger: nothing else ran
    assert data["configs"] == {} and "sampling" not in data and "matmul_peak_gflops" not in data


def test_tagger_rows_no_torch(tmp_path):
    r = ok("bench", *TINY, "--no-torch", "--json", tmp_path / "b.json")
    check(json.loads((tmp_path / "b.json").read_text()), r.stdout, with_torch=False)


def test_tagger_rows_with_torch(tmp_path):
    pytest.importorskip("torch")
    r = ok("bench", *TINY, "--json", tmp_path / "b.json")
    check(json.loads((tmp_path / "b.json").read_text()), r.stdout, with_torch=True)


def test_tagger_rows_from_a_conllu_file(tmp_path):
    from tinyrnn.bench.tagger import synthetic_sentences

    path = tmp_path / "small.conllu"
    with open(path, "w") as f:
        for n, s in enumerate(synthetic_sentences(n_sentences=120, seed=3), 1):
            f.write(f"# sent_id = {n}\n" + "".join(f"{i}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_\n"
                                                  for i, (w, t) in enumerate(zip(s.words, s.tags), 1)) + "\n")
    r = ok("bench", *TINY, "--no-torch", "--tagger-data", path, "--json", tmp_path / "b.json")
    assert str(path) in r.stdout
    check(json.loads((tmp_path / "b.json").read_text()), r.stdout, with_torch=False)


def test_unknown_item_is_refused(capsys):
    from tinyrnn.bench import main

    with pytest.raises(SystemExit) as e:
        main(["--only", "taggr"])
    assert e.value.code != 0 and "taggr" in capsys.readouterr().err


def test_synthetic_lengths_are_ewt_like():
    from tinyrnn.bench.tagger import sentence_lengths, synthetic_sentences

    lengths = sentence_lengths(20000, np.random.default_rng(0))
    assert 14 <= lengths.mean() <= 18 and lengths.min() >= 1 and lengths.max() <= 80
    assert np.percentile(lengths, 99) >= 45                        # the long tail
    a, b = synthetic_sentences(n_tokens=500, seed=1), synthetic_sentences(n_tokens=500, seed=1)
    assert [s.words for s in a] == [s.words for s in b] and sum(map(len, a)) >= 500
    assert all(1 <= len(w) <= 12 for s in a for w in s.words)
