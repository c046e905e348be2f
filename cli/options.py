"""Shared pieces of the ``tinyrnn`` commands: options grouped into sections of the help text, a safe stdout.

Only click is imported here (``tinyrnn --help`` must not load numpy or numba).
"""
import functools
import sys

import click


class GroupedOption(click.Option):
    """An option that belongs to a named section of the help text."""

    def __init__(self, *args, group="Other", **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """Lists options in sections (Model, Optimisation, ...) instead of one long list."""

    def format_options(self, ctx, formatter):
        sections = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "group", "Other"), []).append(record)
        for name, records in sections.items():
            with formatter.section(f"{name} options"):
                formatter.write_dl(records)


def opt(*args, group, **kwargs):
    return click.option(*args, cls=GroupedOption, group=group, **kwargs)


def model_opt(*a, **k):
    return opt(*a, group="Model", **k)


def optim_opt(*a, **k):
    return opt(*a, group="Optimisation", **k)


def data_opt(*a, **k):
    return opt(*a, group="Data", **k)


def book_opt(*a, **k):
    return opt(*a, group="Bookkeeping", **k)


def print_stream():
    """stdout that never fails on characters the terminal's encoding lacks."""
    stream = sys.stdout
    if hasattr(stream, "reconfigure"):
        try:
            stream.reconfigure(errors="replace")
        except (ValueError, OSError):
            pass
    return stream


# ----------------------------------------------------------------------------- checked values

MAX_SEED = 2 ** 63 - 1


class Finite(click.ParamType):
    """A finite float (no nan/inf), optionally bounded: ``Finite(min=0)``, ``Finite(0, 1, max_open=True)``."""

    name = "number"

    def __init__(self, min=None, max=None, min_open=False, max_open=False):
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value, param, ctx):
        import math

        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low = self.min is not None and (x <= self.min if self.min_open else x < self.min)
        high = self.max is not None and (x >= self.max if self.max_open else x > self.max)
        if low or high:
            self.fail(f"{value} is not in the range {self._range()}", param, ctx)
        return x

    def _range(self):
        left = "-inf" if self.min is None else f"{self.min:g}"
        right = "inf" if self.max is None else f"{self.max:g}"
        opening = "(" if self.min_open or self.min is None else "["
        closing = ")" if self.max_open or self.max is None else "]"
        return f"{opening}{left}, {right}{closing}"


POSITIVE_INT = click.IntRange(min=1)
SEED = click.IntRange(0, MAX_SEED)


TIME_LIMIT_HELP = ("Stop after this many seconds (and save). The learning-rate schedule is fitted to the "
                   "budget: from the step rate measured as it goes, the cosine (or step) decay ends at the "
                   "limit, or at --steps / --epochs if they come first.")
# `tinyrnn train` only (tinyrnn.train.BUDGET_DEFAULTS, not imported: --help stays light)
TRAIN_TIME_LIMIT_HELP = TIME_LIMIT_HELP + (
    " Given alone (no model option but --dropout, no --optimizer, --lr, --batch-size, --seq-len, --steps or "
    "--epochs), the run trains the settings measured best for a few minutes on 2 cores: --cell gru --hidden 384 "
    "--seq-len 96 --lr 0.005. When it would read the text 7 times or more (foreseen from the text's size at the "
    "20K chars/s that GRU trains at on 2 cores, and decided again on the pace it measures in its first "
    "seconds), it adds --dropout 0.2 and stops after 8 passes: the model overfits. When it would train 1,600 "
    "updates or more (foreseen, then measured, likewise), it trains at --lr 0.0025: a long run does better at "
    "half the rate.")


def announces_compiling(command):
    """A command that runs kernels: on a terminal it prints one line on stderr when it first has to
    compile them (``tinyrnn.backend.compile_notice``), so a first run's wait is explained; piped
    or logged output stays as it was. The library is imported when the command runs, not when the
    CLI loads."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        from tinyrnn.backend import compile_notice

        say = (lambda message: click.echo(message, err=True)) if stderr_is_terminal() else None
        with compile_notice(say):
            return command(*args, **kwargs)

    return run


def stderr_is_terminal():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):          # replaced or closed
        return False
