"""Shared pieces of the ``tinyrnn`` commands: options grouped into sections of the help text, a safe stdout.

Only click is imported here (``tinyrnn --help`` must not load numpy or numba).
"""
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
