"""The one exception a user sees: a mistake they can fix, reported as one line and exit code 2.

It lives in a module of its own, importing nothing, so that every module can raise it without
pulling in the configuration (and with it the model and torch).  ``config.run_main`` turns it into
the line on stderr; a traceback is kept for bugs, which are ours.
"""


class UserError(Exception):
    """A mistake the user can fix (a bad setting, bad input, a missing file): one line, exit code 2.

    The message says what is wrong and what to do, in one sentence."""
