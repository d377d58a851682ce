"""The one exception type retain raises for bad input: it names the item and what to do."""

from __future__ import annotations

import difflib


class RetainError(Exception):
    """A user-facing error. The CLI prints its message alone, without a traceback."""


def suggest(name: str, choices) -> str:
    """Return ' Did you mean X?' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
