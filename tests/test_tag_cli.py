"""``tinyrnn tag`` end to end: train / predict / eval round trips, formats, stdin, every bad input.

One tiny tagger is trained once for the module (a few seconds); the data is the suffix-tagged
synthetic language of test_tagger.py, written to tmp_path.
"""
import json
import subprocess
import sys

import pytest

from _cli import CLI_MODULE, cli_tag, env, fails, ok   # the CLI under test
from test_tagger import sentences, write_conllu

TINY = ["--hidden", "16", "--layers", "1", "--word-dim", "8", "--char-dim", "8", "--char-hidden", "16",
        "--dropout", "0", "--batch-size", "16", "--lr", "0.03", "--warmup", "0", "--eval-every", "10", "--threads", "1", "--quiet"]
CONLLU = ("# newdoc id = shop\n# sent_id = 1\n# text = I walked mango-juice\n"
          "1\tI\tI\tPRON\tPRP\tCase=Nom\t2\tnsubj\t_\t_\n"
          "2\twalked\twalk\tVERB\tVBD\t_\t0\troot\t_\t_\n"
          "3-4\tmango-juice\t_\t_\t_\t_\t_\t_\t_\t_\n"
          "3\tmango\tmango\tNOUN\tNN\t_\t4\tcompound\t_\tSpaceAfter=No\n"
          "4\tjuice\tjuice\tNOUN\tNN\t_\t2\tobj\t_\t_\n"
          "4.1\tgot\tget\t_\t_\t_\t_\t_\t2:conj\t_\n"
          "\n# a comment between sentences\n\n"
          "# sent_id = 2\n1\tslowly\tslowly\tADV\tRB\t_\t0\troot\t_\t_\n\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("tag")
    return {"dir": d, "train": write_conllu(d / "train.conllu", sentences(40)),
            "dev": write_conllu(d / "dev.conllu", sentences(10, seed=3))}


@pytest.fixture(scope="module")
def run_dir(data):
    out = data["dir"] / "run"
    r = ok("tag", "train", data["train"], "--dev", data["dev"], *TINY, "--steps", "30", "--out", out)
    assert "dev accuracy" in r.stdout and "step 30/30" in r.stdout
    for name in ("last.json", "last.npz", "best.json", "best.npz", "metrics.jsonl"):
        assert (out / name).exists()
    return out


# ----------------------------------------------------------------------------- start-up and defaults

def test_help_does_not_load_numpy_or_numba():
    code = (f"import sys; from {CLI_MODULE} import cli\n"
            "from click.testing import CliRunner\n"
            "for args in (['--help'], ['tag', '--help'], ['tag', 'train', '--help'], ['tag', 'predict', '--help']):\n"
            "    r = CliRunner().invoke(cli, args); assert r.exit_code == 0, r.output\n"
            "assert not {'numba', 'numpy', 'tinyrnn'} & set(sys.modules), sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env())


def test_cli_defaults_match_tag_config():
    from tinyrnn.tagging.task import TagConfig

    cfg = TagConfig()
    for name, value in cli_tag.DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert "Model options" in ok("tag", "train", "--help").stdout


# ----------------------------------------------------------------------------- predict

def test_plain_text_from_stdin_gives_word_slash_tag(run_dir):
    r = ok("tag", "predict", run_dir, input="zorkly plimed quabo\nwarmy\n")
    assert r.stdout == "zorkly/ADV plimed/VERB quabo/NOUN\nwarmy/ADJ\n"
    r = ok("tag", "predict", run_dir, "--format", "conllu", input="zorkly plimed\n")
    assert r.stdout == ("# sent_id = 1\n# text = zorkly plimed\n1\tzorkly\t_\tADV\t_\t_\t_\t_\t_\t_\n"
                        "2\tplimed\t_\tVERB\t_\t_\t_\t_\t_\t_\n\n")


def test_conllu_keeps_every_byte_but_the_tag(run_dir, tmp_path):
    for newline in ("\n", "\r\n"):
        path = tmp_path / "in.conllu"
        path.write_bytes(CONLLU.replace("\n", newline).encode("utf-8"))
        out = ok("tag", "predict", run_dir, path).stdout_bytes.decode("utf-8")
        got, want = out.split("\n"), CONLLU.replace("\n", newline).split("\n")
        assert len(got) == len(want)
        for g, w in zip(got, want):
            gf, wf = g.split("\t"), w.split("\t")
            if len(wf) == 10 and wf[0].isdigit():                    # a word: only UPOS may change
                assert gf[:3] + gf[4:] == wf[:3] + wf[4:] and gf[3] in {"NOUN", "VERB", "ADV", "ADJ"}
            else:
                assert g == w
    assert "\tVERB\t" in out.split("\n")[4] and "\tADV\t" in out.split("\n")[-3]      # walked, slowly


def test_two_column_in_two_column_out(run_dir, tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("quabed\tX\nzorky\tX\n\nmangly\tX\n", encoding="utf-8")
    assert ok("tag", "predict", run_dir, path).stdout == "quabed\tVERB\nzorky\tADJ\n\nmangly\tADV\n\n"


def test_long_sentence_is_tagged_with_a_warning(run_dir):
    r = ok("tag", "predict", run_dir, input="mango " * 40 + "\n")
    assert r.stdout.count("/NOUN") == 40
    assert "warning: <stdin>:1: sentence of 40 words is longer than any in training (6); tagged anyway" in r.stderr


# ----------------------------------------------------------------------------- eval

def test_eval_text_and_json(run_dir, data):
    r = ok("tag", "eval", run_dir, data["dev"])
    assert "accuracy" in r.stdout and "OOV accuracy" in r.stdout and "precision" in r.stdout
    report = json.loads(ok("tag", "eval", run_dir, data["dev"], "--json").stdout)
    assert {"accuracy", "oov_accuracy", "tokens", "per_tag", "confusions", "unseen_tags"} <= set(report)
    assert 0.9 <= report["accuracy"] <= 1 and report["tokens"] > 0
    assert report["oov_accuracy"] is None or 0 <= report["oov_accuracy"] <= 1


def test_eval_lists_tags_the_model_never_saw(run_dir, tmp_path):
    path = write_conllu(tmp_path / "gold.conllu", sentences(3, seed=4))
    text = open(path, encoding="utf-8").read().replace("\tNOUN\t", "\tPROPN\t", 1)
    open(path, "w", encoding="utf-8").write(text)
    report = json.loads(ok("tag", "eval", run_dir, path, "--json").stdout)
    assert report["unseen_tags"] == {"PROPN": 1} and report["accuracy"] < 1
    assert "tags the model never saw (all counted as errors): PROPN (1)" in ok("tag", "eval", run_dir, path).stdout


# ----------------------------------------------------------------------------- bad input

def test_bad_training_files(tmp_path, data):
    def write(name, content):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    good = "1\tthe\t_\tDET\t_\t_\t_\t_\t_\t_\n"
    cases = [
        (write("cols.conllu", good + "2\tcat\t_\tNOUN\t_\t_\t_\t_\t_\n"), ["cols.conllu:2", "10 tab-separated", "found 9"]),
        (write("id.conllu", good + "two\tcat\t_\tNOUN\t_\t_\t_\t_\t_\t_\n"), ["id.conllu:2", "not an integer"]),
        (write("notags.conllu", good.replace("DET", "_")), ["notags.conllu", "no UPOS tags"]),
        (write("notag.tsv", "the\tDET\ncat\n"), ["notag.tsv:2", "no tag column"]),
        (write("empty.conllu", "\n\n"), ["empty.conllu is empty"]),
        (write("comments.conllu", "# only a comment\n"), ["comments.conllu", "no tags"]),
        (write("binary.conllu", b"1\tthe\x00\x01\n"), ["binary.conllu:1", "binary"]),
        (write("latin1.conllu", good.encode() + "2\tcaf\xe9\t_\tNOUN\t_\t_\t_\t_\t_\t_\n".encode("latin-1")),
         ["latin1.conllu:2", "invalid UTF-8"]),
        (write("plain.txt", "the cat sat\n"), ["plain.txt", "plain text (no tags)"]),
    ]
    for path, needles in cases:
        fails(["tag", "train", path, "--steps", "1", "--out", tmp_path / "never"], *needles)
    fails(["tag", "train", data["train"], "--dev", cases[0][0], "--steps", "1", "--out", tmp_path / "never"],
          "cols.conllu:2")
    fails(["tag", "train", "--steps", "1", "--out", tmp_path / "never"], "no training file")
    fails(["tag", "train", data["train"], "--hidden", "0", "--out", tmp_path / "never"], "Invalid value for '--hidden': 0 is not in the range x>=1")
    assert not (tmp_path / "never").exists()


def test_bad_files_to_tag_and_score(run_dir, tmp_path):
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    fails(["tag", "predict", run_dir, binary], "b.bin:3", "binary")
    fails(["tag", "predict", run_dir], "<stdin> is empty", input="")
    fails(["tag", "predict", run_dir], "<stdin>:2", "invalid UTF-8", input=b"fine\ncaf\xe9\n")
    fails(["tag", "predict", run_dir, tmp_path / "missing.txt"], "no such file")
    plain = tmp_path / "p.txt"
    plain.write_text("the cat\n", encoding="utf-8")
    fails(["tag", "eval", run_dir, plain], "p.txt", "plain text (no tags)")
    fails(["tag", "predict", tmp_path], "no checkpoint in")


def test_family_errors(run_dir, tmp_path):
    fails(["sample", run_dir], "holds a tagger, not a character model", "tinyrnn tag predict")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 30, encoding="utf-8")
    char_run = tmp_path / "char"
    ok("train", corpus, "--hidden", "8", "--layers", "1", "--embed", "4", "--batch-size", "2", "--seq-len", "8",
       "--steps", "1", "--quiet", "--out", char_run)
    for command in (["tag", "predict", char_run], ["tag", "eval", char_run, corpus]):
        fails(command, "holds a character model, not a tagger", "tinyrnn sample")


def test_resume_through_the_cli(data, tmp_path):
    out = tmp_path / "run"
    ok("tag", "train", data["train"], *TINY, "--steps", "3", "--out", out)
    fails(["tag", "train", data["train"], *TINY, "--steps", "3", "--out", out], "already holds a run")
    fails(["tag", "train", "--resume", "--out", out, "--hidden", "32"], "--hidden 32 conflicts")
    r = ok("tag", "train", "--resume", "--out", out, "--steps", "5", "--quiet")
    assert "resuming" in r.stderr and "step 5/5" in r.stdout and "no dev set" in r.stdout


def test_ctrl_c_saves_a_checkpoint(data, tmp_path):
    import signal
    import time

    from tinyrnn import checkpoint

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", CLI_MODULE, "tag", "train", data["train"], *TINY, "--steps", "1000000",
           "--eval-every", "1000000", "--save-every", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            if metrics.exists() and metrics.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted at step" in stderr and "tinyrnn tag train --resume" in stderr
    meta, _ = checkpoint.load(out / "last")
    assert meta["family"] == "tagger" and meta["step"] >= 20


def test_bio_tags_with_a_crf_get_span_scores(tmp_path):
    path = tmp_path / "ner.tsv"
    path.write_text("Ann\tB-PER\nSmith\tI-PER\nvisited\tO\nOslo\tB-LOC\n.\tO\n\n"
                    "Bob\tB-PER\nlikes\tO\nRome\tB-LOC\n\n" * 4, encoding="utf-8")
    out = tmp_path / "run"
    ok("tag", "train", path, *TINY, "--crf", "--steps", "4", "--out", out)
    report = json.loads(ok("tag", "eval", out, path, "--json").stdout)
    assert {"precision", "recall", "f1", "per_type"} <= set(report["spans"])
    assert "spans" in ok("tag", "eval", out, path).stdout
    tagged = ok("tag", "predict", out, input="Ann visited Rome\n").stdout.split()
    assert [w.split("/")[0] for w in tagged] == ["Ann", "visited", "Rome"]
