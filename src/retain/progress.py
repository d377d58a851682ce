"""Progress bars and status lines; `RETAIN_QUIET=1` (or `--quiet`) silences both for CI logs."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def quiet() -> bool:
    return os.environ.get("RETAIN_QUIET", "") not in ("", "0")


def set_quiet(value: bool) -> None:
    """Quiet (or not) retain's own output and the progress bars of Hugging Face libraries."""
    os.environ["RETAIN_QUIET"] = "1" if value else "0"
    if value:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by huggingface_hub, transformers, datasets
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()


def bar(iterable=None, desc: str = "", total: int | None = None, disable: bool = False, **kw):
    """A tqdm bar with counts, rate and time left, off in quiet mode or on non-main processes.
    Written to a file or a pipe (a log, nohup), it updates every 30 s instead of many times a second."""
    if not sys.stderr.isatty():
        kw.setdefault("mininterval", 30.0)
    return tqdm(iterable, desc=desc, total=total, disable=disable or quiet() or not is_main(),
                dynamic_ncols=True, file=sys.stderr, **kw)


def say(message: str) -> None:
    """A status line on stderr from the main process, unless quiet."""
    if not quiet() and is_main():
        print(message, file=sys.stderr, flush=True)


def is_main() -> bool:
    return os.environ.get("LOCAL_RANK", "0") in ("0", "") and os.environ.get("RANK", "0") in ("0", "")


def time_left(seconds: list[float], remaining: int) -> str:
    """'; about 3 min left' from the durations of finished units and how many remain ('' when none)."""
    if not seconds or remaining <= 0:
        return ""
    left = sum(seconds) / len(seconds) * remaining
    return f"; about {left / 60:.0f} min left" if left >= 90 else f"; about {left:.0f} s left"
