"""The one exception type that user-facing code raises for bad input.

Library code raises ``TinyRNNError`` with a message that names the problem *and* the fix
("corpus.txt is empty: give a file with some text"). The command line prints that message
as one line on stderr and exits non-zero; ``--debug`` shows the traceback instead.
"""


class TinyRNNError(Exception):
    """Bad input or state the user can fix: a missing file, invalid UTF-8, a corrupt checkpoint..."""
