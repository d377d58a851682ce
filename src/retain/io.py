"""Atomic file writes: a finished file is either the old one or the new one, never half.

A written file gets the mode an ordinary `open(path, "w")` would give it (0666 less the
umask: 0644 by default), not the 0600 of the temporary file it was written as, so
colleagues on a shared machine can read results. A write that fails (a full disk, a
read-only folder) leaves the old file in place and says which file it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from retain.errors import RetainError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename the temp file onto `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise RetainError(f"Could not write {path} ({e.strerror or e}): free space or fix the folder's "
                              "permissions, or choose another output_dir; the finished files are kept.") from e
        raise


def current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it and put it back
    os.umask(mask)
    return mask


def check_writable(directory: str | Path) -> None:
    """Create `directory` and write a file in it, or say why not, before any work starts."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".retain-write-check."):
            pass
    except OSError as e:
        raise RetainError(f"The output directory {directory} cannot be written ({e.strerror or e}): choose another "
                          "output_dir (or fix its permissions).") from e


def write_text(path: str | Path, text: str) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, _write)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def folder_in_place(target: str | Path):
    """A fresh folder beside `target`, yielded to be filled; when the block ends without an
    error it takes `target`'s place in one rename (a reader never sees half a folder), and
    otherwise it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
