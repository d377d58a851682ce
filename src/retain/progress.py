"""Progress bars and status lines; `RETAIN_QUIET=1` (or `--quiet`) silences both for CI logs."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("RETAIN_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    os.environ["RETAIN_QUIET"] = "1" if value else "0"


def bar(iterable=None, desc: str = "", total: int | None = None, disable: bool = False, **kw):
    """A tqdm bar with counts, rate and time left, off in quiet mode or on non-main processes."""
    return tqdm(iterable, desc=desc, total=total, disable=disable or quiet() or not is_main(),
                dynamic_ncols=True, file=sys.stderr, **kw)


def say(message: str) -> None:
    """A status line on stderr from the main process, unless quiet."""
    if not quiet() and is_main():
        print(message, file=sys.stderr, flush=True)


def is_main() -> bool:
    return os.environ.get("LOCAL_RANK", "0") in ("0", "") and os.environ.get("RANK", "0") in ("0", "")
