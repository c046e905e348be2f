"""The command line under test, shared by the test files that drive it.

    from _cli import fails, ok, run
    ok("train", corpus, "--steps", 2, "--out", out)           # in this process (click's runner)
    fails(["sample", out, "--top-p", 2], "--top-p")          # one `error: ...` line naming --top-p

``CLI_MODULE`` runs it as a subprocess (``python -m CLI_MODULE``, with ``env()``): the installed
package's name (``pip install -e .``), or ``cli.main`` in a plain checkout, the same file.
``one_line_error`` is the failure every bad input must give: a non-zero exit, no traceback, and one
line ``error: ...`` that names the problem, never the line of an error nobody foresaw.
"""
import os

from click.testing import CliRunner

try:                                   # installed (pip install -e .): the real package name
    import tinyrnn_cli.main as climain
    import tinyrnn_cli.tag as cli_tag
    CLI_MODULE = "tinyrnn_cli.main"
except ImportError:                    # a plain checkout: the same files
    import cli.main as climain
    import cli.tag as cli_tag
    CLI_MODULE = "cli.main"

__all__ = ["CLI_MODULE", "ROOT", "cli_tag", "climain", "env", "fails", "ok", "one_line_error", "run"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env():
    """os.environ with the checkout on PYTHONPATH: a subprocess runs the code under test."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def run(*args, input=None):
    """``tinyrnn ARGS`` in this process; the result has exit_code, stdout, stderr, output, exception."""
    return CliRunner().invoke(climain.cli, [str(a) for a in args], input=input, catch_exceptions=True)


def ok(*args, input=None):
    """``run``, which must succeed."""
    r = run(*args, input=input)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


def one_line_error(r, *needles, code=None, alone=True):
    """A failure as users are promised it: a non-zero exit (``code``, if given), no traceback (nor an
    exception the command let escape), and exactly one ``error: ...`` line, the last on stderr (the
    only one when ``alone``), that mentions every needle and is not the line of an error the
    command did not foresee ("... (unexpected; ... please report it)"). Returns it."""
    assert r.exit_code != 0, (r.stdout, r.stderr)
    if code is not None:
        assert r.exit_code == code, (r.exit_code, r.stderr)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output, r.output
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), r.stderr
    assert len([x for x in lines if x.startswith("error: ")]) == 1 and (len(lines) == 1 or not alone), r.stderr
    line = lines[-1]
    assert "please report" not in line, line     # cli/main.py's words for an error it did not foresee
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def fails(args, *needles, code=None, input=None, alone=True):
    """``run(*args)`` fails with one error line mentioning every needle (``one_line_error``)."""
    return one_line_error(run(*args, input=input), *needles, code=code, alone=alone)
