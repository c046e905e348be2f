"""``tinyrnn tag``: train a part-of-speech (or any per-word) tagger, tag text with it, score it.

    tinyrnn tag train en_ewt-ud-train.conllu --dev en_ewt-ud-dev.conllu --out runs/pos
    echo "I love mango juice" | tinyrnn tag predict runs/pos          # I/PRON love/VERB mango/NOUN juice/NOUN
    tinyrnn tag predict runs/pos test.conllu > tagged.conllu           # the tag column filled in
    tinyrnn tag eval runs/pos en_ewt-ud-dev.conllu [--json]

As in ``main.py``, only click is imported at module level; the library loads inside each command.
"""
import click

from .options import (POSITIVE_INT, SEED, TIME_LIMIT_HELP, Finite, GroupedCommand, announces_compiling, book_opt,
                      data_opt, model_opt, optim_opt, print_stream)

# Defaults, mirrored from tinyrnn.tagging.task.TagConfig (tests/test_tag_cli.py checks that they agree).
DEFAULTS = dict(column="upos", cell="lstm", layers=2, hidden=128, word_dim=100, char_dim=50, char_hidden=50,
                dropout=0.33, word_dropout=0.25, batch_size=32, epochs=20.0, optimizer="adam", lr=2e-3,
                lr_schedule="cosine", warmup=50, clip=5.0, eval_every=250, save_every=500, seed=1337)
EXIT_INTERRUPTED = 130
FORMATS = ["conllu", "two-column", "plain"]


@click.group()
def tag():
    """Part-of-speech tagging: a bidirectional RNN tagger with character features (CoNLL-U in and out)."""


@tag.command(cls=GroupedCommand)
@click.argument("train_file", metavar="[TRAIN]", required=False)
@data_opt("--dev", type=str, default=None, help="Held-out file: evaluated as training goes; the best is kept.")
@data_opt("--column", type=click.Choice(["upos", "xpos"]), default=DEFAULTS["column"], show_default=True,
          help="CoNLL-U tag column to learn.")
@model_opt("--cell", type=click.Choice(["rnn", "lstm", "gru"]), default=DEFAULTS["cell"], show_default=True)
@model_opt("--layers", type=POSITIVE_INT, default=DEFAULTS["layers"], show_default=True, help="Sentence BiRNN layers.")
@model_opt("--hidden", type=POSITIVE_INT, default=DEFAULTS["hidden"], show_default=True, help="Units per direction.")
@model_opt("--word-dim", type=click.IntRange(min=0), default=DEFAULTS["word_dim"], show_default=True,
           help="Word embedding size (0: characters only).")
@model_opt("--char-dim", type=click.IntRange(min=0), default=DEFAULTS["char_dim"], show_default=True, help="Character embedding size.")
@model_opt("--char-hidden", type=click.IntRange(min=0), default=DEFAULTS["char_hidden"], show_default=True,
           help="Character BiRNN units per direction (0: no character features).")
@model_opt("--dropout", type=Finite(0, 1, max_open=True), default=DEFAULTS["dropout"], show_default=True)
@model_opt("--word-dropout", type=Finite(0), default=DEFAULTS["word_dropout"], show_default=True,
           help="alpha: a word seen c times becomes <unk> with probability alpha/(alpha+c).")
@model_opt("--crf", is_flag=True, help="A linear-chain CRF over the tags (Viterbi decoding); for BIO tags.")
@optim_opt("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop", "adagrad"]),
           default=DEFAULTS["optimizer"], show_default=True)
@optim_opt("--lr", type=Finite(0, min_open=True), default=DEFAULTS["lr"], show_default=True, help="Peak learning rate.")
@optim_opt("--lr-schedule", type=click.Choice(["cosine", "constant", "step"]), default=DEFAULTS["lr_schedule"],
           show_default=True)
@optim_opt("--warmup", type=click.IntRange(min=0), default=DEFAULTS["warmup"], show_default=True, help="Warm-up steps.")
@optim_opt("--clip", type=Finite(0), default=DEFAULTS["clip"], show_default=True, help="Gradient norm clip (0: off).")
@optim_opt("--batch-size", type=POSITIVE_INT, default=DEFAULTS["batch_size"], show_default=True, help="Sentences per batch.")
@optim_opt("--epochs", type=Finite(0, min_open=True), default=DEFAULTS["epochs"], show_default=True, help="Passes over TRAIN.")
@optim_opt("--steps", type=POSITIVE_INT, default=None, help="Updates to run (instead of --epochs).")
@optim_opt("--time-limit", type=Finite(0, min_open=True), default=None, help=TIME_LIMIT_HELP)
@book_opt("--out", type=str, default=None, help="Run directory [default: runs/<train>-tagger].")
@book_opt("--eval-every", type=POSITIVE_INT, default=DEFAULTS["eval_every"], show_default=True)
@book_opt("--save-every", type=POSITIVE_INT, default=DEFAULTS["save_every"], show_default=True)
@book_opt("--seed", type=SEED, default=DEFAULTS["seed"], show_default=True)
@book_opt("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@book_opt("--threads", type=click.IntRange(1, 1024), default=None, help="Compute threads [default: all cores].")
@book_opt("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx, train_file, quiet, resume, out, **options):
    """Train a tagger on TRAIN (CoNLL-U, or word<TAB>tag lines with blank lines between sentences).

    Writes OUT/last and OUT/best (by dev accuracy) checkpoints and OUT/metrics.jsonl. Ctrl-C saves
    a checkpoint; --resume continues from it (TRAIN may then be left out).
    """
    from click.core import ParameterSource

    from tinyrnn.tagging.task import TagConfig, train_tagger

    explicit = {name for name in options
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    summary = train_tagger(TagConfig(train=train_file, **options), out=out, resume=resume, explicit=explicit,
                           progress=not quiet)
    if summary["root"]:                       # under mpirun, rank 0 alone reports
        click.echo(summary["line"])
    if summary["stopped"] == "interrupted" and summary["root"]:
        click.echo(f"interrupted at step {summary['step']}: saved {summary['out']}/last; continue with: "
                   f"tinyrnn tag train --resume --out {summary['out']}", err=True)
        ctx.exit(EXIT_INTERRUPTED)


def _load(run, threads):
    from tinyrnn import set_num_threads
    from tinyrnn.checkpoint import load_model

    if threads:
        set_num_threads(threads)
    model, _, meta = load_model(run, family="tagger")
    return model, meta


@tag.command()
@click.argument("run")
@click.argument("file", required=False)
@click.option("--format", "out_format", type=click.Choice(FORMATS), default=None,
              help="Output format [default: the input's; plain text gives word/TAG pairs].")
@click.option("--input-format", type=click.Choice(FORMATS), default=None, help="Input format [default: detected].")
@click.option("--batch-size", type=POSITIVE_INT, default=256, show_default=True, help="Sentences tagged at once, at most (long sentences go in smaller batches).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Compute threads [default: all cores].")
@announces_compiling
def predict(run, file, out_format, input_format, batch_size, threads):
    """Tag FILE (default: stdin) with the tagger in RUN; the tagged text goes to stdout.

    CoNLL-U in: the same file with the tag column filled in. Plain text (one sentence per line,
    words split on spaces) in: word/TAG pairs. Two-column in: two-column out.
    """
    import sys

    from tinyrnn.tagging.predict import check_lengths, read_input, write_output

    model, meta = _load(run, threads)
    fmt, sentences = read_input(file if file is not None else sys.stdin, meta["column"], input_format)
    check_lengths(sentences, meta.get("data", {}).get("max_length"), file or "<stdin>",
                  lambda msg: click.echo(msg, err=True))
    tags = model.predict(sentences, max(1, batch_size))
    write_output(sentences, tags, print_stream(), fmt, meta["column"], out_format)


@tag.command(name="eval")
@click.argument("run")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object (fractions in [0, 1]).")
@click.option("--batch-size", type=POSITIVE_INT, default=256, show_default=True, help="Sentences tagged at once, at most (long sentences go in smaller batches).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="Compute threads [default: all cores].")
@announces_compiling
def eval_cmd(run, file, as_json, batch_size, threads):
    """Score the tagger in RUN on FILE (tagged CoNLL-U or two-column): accuracy, OOV accuracy, per-tag F1."""
    import json

    from tinyrnn.tagging import conll
    from tinyrnn.tagging.metrics import format_report
    from tinyrnn.tagging.predict import evaluate

    model, meta = _load(run, threads)
    _, sentences = conll.read_any(file, column=meta["column"])
    report = evaluate(model, sentences, max(1, batch_size))
    click.echo(json.dumps(report) if as_json else f"{file}: " + format_report(report))
