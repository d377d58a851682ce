"""Data: Tasks and Sequences from the offline assets, Hugging Face `datasets`, image folders."""

from __future__ import annotations

from retain.data.task import DEFAULT_TEMPLATES, ImageSplit, Sequence, Task
from retain.errors import RetainError, suggest

__all__ = ["DEFAULT_TEMPLATES", "ImageSplit", "Sequence", "Task", "list_tasks", "load_task"]


def list_tasks() -> list[str]:
    from retain.data.offline import CONVERTERS

    return sorted(CONVERTERS)


def load_task(name: str) -> Task:
    """A validated Task by name: an offline asset, `hf:<dataset id or saved folder>`, or `folder:<path>`."""
    from retain.data import offline, sources

    if name in offline.CONVERTERS:
        task = offline.load_offline(name)
    elif name.startswith("hf:"):
        task = sources.load_hf_dataset(name[3:])
    elif name.startswith("folder:"):
        task = sources.load_image_folder(name[len("folder:"):])
    else:
        raise RetainError(
            f"Unknown task {name!r}.{suggest(name, list_tasks())} Available: {', '.join(list_tasks())}, "
            "hf:<dataset id>, folder:<path>."
        )
    return task.validate()
