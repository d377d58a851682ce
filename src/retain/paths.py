"""Where retain keeps its caches: converted datasets and built zoo models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$RETAIN_CACHE` (default `~/.cache/retain`) joined with `parts`, created."""
    root = Path(os.environ.get("RETAIN_CACHE", Path.home() / ".cache" / "retain"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
