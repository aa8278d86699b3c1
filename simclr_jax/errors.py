"""The two kinds of failure the command line reports as one line (exit status 2).

Everything else is a bug and keeps its traceback, so only these types are caught in `main.py`.
"""
from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user gave us (config, paths, inputs): the message says how to fix it.

    A ValueError so library callers that catch ValueError keep working.
    """


class DivergedError(RuntimeError):
    """Training diverged (non-finite or exploding); nothing after the last good save was kept."""


class NonFiniteLossError(DivergedError):
    """A NaN/Inf loss or gradient; the state that produced it was not saved."""
