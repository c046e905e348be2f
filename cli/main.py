"""The ``tinyrnn`` command: train, sample, eval and fill character-level models.

    tinyrnn train                       # the bundled corpus, default model (a few minutes on 2 cores)
    tinyrnn train poems.txt --cell gru --hidden 128 --steps 2000 --out runs/poems
    tinyrnn sample runs/poems --prime "The " --length 300 --temperature 0.8
    tinyrnn eval runs/poems test.txt
    tinyrnn train poems.txt --bidir --out runs/fill && tinyrnn fill runs/fill "th_ qu_ck br_wn f_x"

Only click is imported at module level: ``tinyrnn --help`` must be instant, so numpy, numba and the
library load inside each command. Errors the user can fix (``TinyRNNError``) and usage errors are
printed as one line on stderr with a non-zero exit code; ``--debug`` (anywhere on the command
line) shows the full traceback instead. Options are checked where they are parsed (``click.IntRange``,
``Finite``: no NaN or infinity), before anything is read or written.

Exit codes: 0 done; 1 an error (one ``error: ...`` line); 2 a usage error; 130 stopped by Ctrl-C
(SIGINT) and 143 by SIGTERM (``kill``, ``timeout``, schedulers) - after saving the ``last``
checkpoint (``train --resume`` continues it).
"""
import os
import sys

import click

from .options import (POSITIVE_INT, SEED, TRAIN_TIME_LIMIT_HELP, Finite, GroupedCommand, announces_compiling,
                      book_opt, data_opt, model_opt, optim_opt)
from .options import print_stream as _print_stream

# Defaults, mirrored from tinyrnn.train.TrainConfig (kept here so --help imports nothing heavy;
# tests/test_cli.py checks that the two agree).
DEFAULTS = dict(cell="lstm", layers=2, hidden=256, embed=64, dropout=0.0, optimizer="adam", lr=6e-3,
                lr_schedule="cosine", warmup=50, clip=5.0, batch_size=32, seq_len=64, val_frac=0.1,
                encoding_errors="strict", eval_every=250, save_every=500, eval_chars=32768, seed=1337)
DEFAULT_STEPS = 1500
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------- error handling

def _one_line(text):
    return " ".join(str(text).split())


class App(click.Group):
    """A click group whose errors are one line on stderr (``--debug``: the traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args or bool(os.environ.get("TINYRNN_DEBUG"))
        args = [a for a in args if a != "--debug"]
        for stream in (sys.stdout, sys.stderr):        # a path that is not UTF-8 never breaks a message
            try:
                stream.reconfigure(errors="backslashreplace")
            except (AttributeError, ValueError, OSError):
                pass
        if debug:
            return super().main(args, prog_name or "tinyrnn", complete_var, standalone_mode, **extra)
        code = 0
        try:
            rv = super().main(args, prog_name or "tinyrnn", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {_one_line(e.format_message())}{hint}", err=True)
            code = e.exit_code
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            code = e.exit_code
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            code = EXIT_INTERRUPTED
        except Exception as e:                        # noqa: BLE001 - every error becomes one line
            from tinyrnn.errors import TinyRNNError

            if isinstance(e, TinyRNNError):
                click.echo(f"error: {_one_line(e)}", err=True)
            else:
                click.echo(f"error: {type(e).__name__}: {_one_line(e)} (unexpected; run again with --debug "
                           "for the traceback and please report it)", err=True)
            code = getattr(e, "exit_code", 1) if isinstance(e, TinyRNNError) else 1
        if standalone_mode:
            sys.exit(code)
        return code


# ----------------------------------------------------------------------------- commands

@click.group(cls=App, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option("0.1.0", prog_name="tinyrnn")
def cli():
    """Character-level RNN/LSTM/GRU models: train on any UTF-8 text, then sample, evaluate or fill in.

    Add --debug to any command to see full tracebacks.
    """


@cli.command(cls=GroupedCommand)
@click.argument("corpus", required=False)
@model_opt("--cell", type=click.Choice(["rnn", "lstm", "gru"]), default=DEFAULTS["cell"], show_default=True,
           help="Recurrent cell.")
@model_opt("--layers", type=POSITIVE_INT, default=DEFAULTS["layers"], show_default=True, help="Stacked layers.")
@model_opt("--hidden", type=POSITIVE_INT, default=DEFAULTS["hidden"], show_default=True, help="Hidden units per layer.")
@model_opt("--embed", type=POSITIVE_INT, default=DEFAULTS["embed"], show_default=True, help="Character embedding size.")
@model_opt("--dropout", type=Finite(0, 1, max_open=True), default=DEFAULTS["dropout"], show_default=True,
           help="Dropout between layers and before the output.")
@model_opt("--bidir", is_flag=True, help="Fill-in objective: predict each character from both sides "
           "(two separate stacks merged at the output). Use `tinyrnn fill` afterwards.")
@optim_opt("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop", "adagrad"]),
           default=DEFAULTS["optimizer"], show_default=True)
@optim_opt("--lr", type=Finite(0, min_open=True), default=DEFAULTS["lr"], show_default=True, help="Peak learning rate.")
@optim_opt("--lr-schedule", type=click.Choice(["cosine", "constant", "step"]), default=DEFAULTS["lr_schedule"],
           show_default=True, help="After --warmup steps of linear warm-up.")
@optim_opt("--warmup", type=click.IntRange(min=0), default=DEFAULTS["warmup"], show_default=True, help="Warm-up steps.")
@optim_opt("--clip", type=Finite(0), default=DEFAULTS["clip"], show_default=True,
           help="Clip the gradient norm to this (0: off).")
@optim_opt("--batch-size", type=POSITIVE_INT, default=DEFAULTS["batch_size"], show_default=True,
           help="Parallel streams over the text.")
@optim_opt("--seq-len", type=POSITIVE_INT, default=DEFAULTS["seq_len"], show_default=True,
           help="Characters per backpropagation window.")
@optim_opt("--steps", type=POSITIVE_INT, default=None, help=f"Updates to run [default: {DEFAULT_STEPS}, unless "
           "--epochs or --time-limit is given]. With --resume: the new total; the cosine/step schedule is "
           "stretched to it, so the learning rate jumps back up (give the original --steps to keep the old "
           "schedule).")
@optim_opt("--epochs", type=Finite(0, min_open=True), default=None,
           help="Passes over the training text (instead of --steps).")
@optim_opt("--time-limit", type=Finite(0, min_open=True), default=None, help=TRAIN_TIME_LIMIT_HELP)
@data_opt("--val-frac", type=Finite(0, 1, max_open=True), default=DEFAULTS["val_frac"], show_default=True,
          help="The last fraction of the text held out for validation.")
@data_opt("--encoding-errors", type=click.Choice(["strict", "replace"]), default=DEFAULTS["encoding_errors"],
          show_default=True, help="What to do with invalid UTF-8.")
@book_opt("--out", type=str, default=None, help="Run directory [default: runs/<corpus>-<cell>].")
@book_opt("--eval-every", type=POSITIVE_INT, default=DEFAULTS["eval_every"], show_default=True)
@book_opt("--save-every", type=POSITIVE_INT, default=DEFAULTS["save_every"], show_default=True)
@book_opt("--seed", type=SEED, default=DEFAULTS["seed"], show_default=True)
@book_opt("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@book_opt("--allow-changed-data", is_flag=True, help="With --resume: continue even if CORPUS's bytes differ "
          "from the text the run was trained on.")
@book_opt("--threads", type=click.IntRange(1, 1024), default=None, help="Compute threads per process [default: "
          "all cores; under mpirun: the cores shared among the processes on each machine].")
@book_opt("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
          help="Where to compute (cuda: an NVIDIA GPU through numba.cuda).")
@book_opt("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train(ctx, corpus, quiet, resume, out, **options):
    """Train a character model on CORPUS (UTF-8 text; default: the bundled sample corpus).

    The model defaults below are for a run of --steps; a --time-limit run with no model option of
    its own trains the budget's settings instead (see --time-limit).

    Writes OUT/last and OUT/best checkpoints, OUT/metrics.jsonl and (with matplotlib) OUT/loss.png.
    Ctrl-C or SIGTERM saves a checkpoint (exit 130 / 143); --resume continues from it. One run per
    OUT at a time (OUT/.lock). A training loss that climbs away from its lowest and stays there goes
    back to OUT/best with the learning rate halved (at most 3 times, then it stops).
    """
    from click.core import ParameterSource

    from tinyrnn.train import TrainConfig, train as run_training

    explicit = {name for name in options
                if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    cfg = TrainConfig(corpus=corpus, **options)
    summary = run_training(cfg, out=out, resume=resume, explicit=explicit, progress=not quiet, budget=True)
    if summary["root"]:                       # under mpirun, rank 0 alone reports
        click.echo(summary["line"])
    if summary["stopped"] == "interrupted" and summary["root"]:
        click.echo(f"interrupted at step {summary['step']}: saved {summary['out']}/last; continue with: "
                   f"tinyrnn train --resume --out {summary['out']}", err=True)
        ctx.exit(summary.get("exit_code") or EXIT_INTERRUPTED)


WEIGHT_FORMATS = ["bf16", "int8", "f32"]   # tinyrnn.generate.WEIGHT_FORMATS (not imported: --help stays light)
SAMPLE_WEIGHTS = "bf16"    # the default of `sample --weights`: same bits/char as f32 to 1e-4 (BENCHMARKS.md)


@cli.command()
@click.argument("checkpoint")
@click.option("--prime", default="", help="Text to start from (not repeated in the output).")
@click.option("--length", type=click.IntRange(min=0), default=500, show_default=True, help="Characters to generate.")
@click.option("--temperature", type=Finite(0), default=0.8, show_default=True,
              help="Lower is more conservative; 0 means --argmax.")
@click.option("--top-k", type=POSITIVE_INT, default=None, help="Sample only among the k most likely characters.")
@click.option("--top-p", type=Finite(0, 1, min_open=True), default=None,
              help="Sample only from the smallest set with probability >= p.")
@click.option("--seed", type=SEED, default=None, help="Seed for repeatable samples.")
@click.option("--argmax", is_flag=True, help="Always take the most likely character.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to run the model (cuda: an NVIDIA GPU).")
@click.option("--weights", type=click.Choice(WEIGHT_FORMATS), default=SAMPLE_WEIGHTS, show_default=True,
              help="Number format of the weight matrices while sampling: bf16 reads half the bytes per character, "
                   "int8 (a scale per row) a quarter and is the fastest, above all on CPUs without AVX-512 BF16 "
                   "(AVX2 laptops: bf16 there is 1.3-1.45x f32, int8 1.6-2.5x); `tinyrnn eval --weights` scores the same "
                   "weights.")
@announces_compiling
def sample(checkpoint, prime, length, temperature, top_k, top_p, seed, argmax, device, weights):
    """Generate text from a checkpoint (a run directory, or a .json/.npz file), streaming to stdout."""
    from tinyrnn.generate import check_sampling_options, generate_text
    from tinyrnn.checkpoint import load_model

    check_sampling_options(length, temperature, top_k, top_p)
    model, vocab, _ = load_model(checkpoint, device)
    texts = generate_text(model, vocab, prime, length, temperature, top_k, top_p, seed, argmax, weights)
    first = next(texts, "")                  # checks the prime (and the model) before anything is printed
    out = _print_stream()
    out.write(prime + first)
    out.flush()
    for text in texts:                       # a kernel call's characters at a time: 32, then up to 512
        out.write(text)
        out.flush()
    out.write("\n")
    out.flush()


@cli.command(name="eval")
@click.argument("checkpoint")
@click.argument("file")
@click.option("--encoding-errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True)
@click.option("--seq-len", type=POSITIVE_INT, default=256, show_default=True, help="Characters per evaluation window.")
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to run the model (cuda: an NVIDIA GPU).")
@click.option("--weights", type=click.Choice(WEIGHT_FORMATS), default="f32", show_default=True,
              help="Score the model with its weight matrices rounded as `tinyrnn sample --weights` stores them.")
@announces_compiling
def eval_cmd(checkpoint, file, encoding_errors, seq_len, batch_size, device, weights):
    """Bits per character and perplexity of a checkpoint on FILE (fill-in bits/char for --bidir models)."""
    import math

    from tinyrnn.data import describe_chars, load_corpus, remap
    from tinyrnn.errors import TinyRNNError
    from tinyrnn.generate import evaluate, round_to_weights
    from tinyrnn.checkpoint import load_model

    if seq_len <= 0 or batch_size <= 0:
        raise TinyRNNError("--seq-len and --batch-size must be positive")
    if weights != "f32" and device != "cpu":
        raise TinyRNNError(f"--weights {weights} is scored on the CPU: drop --device {device}")
    model, vocab, _ = load_model(checkpoint, device)
    round_to_weights(model, weights)
    corpus = load_corpus(file, encoding_errors=encoding_errors)
    ids, unknown = remap(corpus.ids, corpus.vocab, vocab)
    if unknown:
        ids = ids[ids >= 0]
    if len(ids) < 2:
        raise TinyRNNError(f"{file} has fewer than 2 characters the model knows: nothing to evaluate")
    loss, count = evaluate(model, ids, batch_size=batch_size, seq_len=seq_len)
    bpc = loss / math.log(2)
    kind = "fill-in bits/char" if model.bidir else "bits/char"
    click.echo(f"{file}: {bpc:.4f} {kind}, perplexity {math.exp(loss):.3f} per character ({count} characters scored)")
    if unknown:
        listed = ", ".join(f"{describe_chars(c)} x{n}" for c, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:10])
        click.echo(f"skipped {sum(unknown.values())} characters outside the model's vocabulary: {listed}")


@cli.command()
@click.argument("checkpoint")
@click.argument("text")
@click.option("--mask", default="_", show_default=True, help="The character that marks a gap.")
@click.option("--sweeps", type=POSITIVE_INT, default=2, show_default=True, help="Passes over the gaps.")
@click.option("--temperature", type=Finite(0), default=0.0, show_default=True,
              help="0 picks the most likely character.")
@click.option("--seed", type=SEED, default=None)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where to run the model (cuda: an NVIDIA GPU).")
@announces_compiling
def fill(checkpoint, text, mask, sweeps, temperature, seed, device):
    """Fill the gaps in TEXT with a bidirectional checkpoint: tinyrnn fill CKPT "th_ qu_ck br_wn f_x"."""
    from tinyrnn.generate import fill as fill_text
    from tinyrnn.checkpoint import load_model

    model, vocab, _ = load_model(checkpoint, device)
    _print_stream().write(fill_text(model, vocab, text, mask=mask, sweeps=sweeps, temperature=temperature,
                                    seed=seed) + "\n")


@cli.command()
@click.argument("checkpoint")
@click.option("--format", "fmt", type=click.Choice(["onnx", "safetensors", "torch"]), required=True,
              help="onnx: ONNX's LSTM/GRU/RNN operators (needs tinyrnn[onnx]); safetensors: the weights under "
              "PyTorch's names; torch: a PyTorch module OUT.py plus its weights OUT.safetensors.")
@click.option("--out", required=True, help="The file to write (its directory must exist).")
def export(checkpoint, fmt, out):
    """Export a character model or a tagger (a run directory or checkpoint file) for ONNX Runtime or PyTorch."""
    from tinyrnn.export import export as export_model

    for path in export_model(checkpoint, fmt, out):
        click.echo(f"wrote {path}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
def bench(bench_args):
    """Speed benchmark: training chars/s for five configs with PyTorch, sampling, start-up, memory, the tagger.

    All arguments go to the benchmark script (see `tinyrnn bench --help`), e.g.
    tinyrnn bench --configs a,b --repeats 5 --threads 2
    tinyrnn bench --only tagger                 # the tagger's training and tagging tokens/s
    """
    from tinyrnn.bench import main as run_bench

    run_bench(list(bench_args))


# ----------------------------------------------------------------------------- the tagger (cli/tag.py)

from .tag import tag  # noqa: E402

cli.add_command(tag)


def main(argv=None):
    """Console-script entry point (``tinyrnn``)."""
    return cli.main(argv)


if __name__ == "__main__":
    main()
