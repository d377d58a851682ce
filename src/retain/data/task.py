"""Tasks and Sequences: the vocabulary every trainer and evaluator speaks.

A Task is an image-classification dataset with fixed splits, its class names and the
prompt templates that turn a class name into a caption. A Sequence is an ordered list
of Tasks (a continual-learning benchmark).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from retain.errors import RetainError

DEFAULT_TEMPLATES = ["a photo of a {}.", "a picture of a {}.", "an image of a {}."]


@dataclass
class ImageSplit:
    """One split: uint8 images (N, H, W, C) with C in {1, 3}, int64 labels (N,).

    `captions`, when present, describe each item with all its attributes (used to
    pre-train mini-CLIP); otherwise a caption is a template filled with the class name.
    """

    images: np.ndarray
    labels: np.ndarray
    captions: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, limit: int | None, seed: int = 0) -> "ImageSplit":
        """A fixed random subset of at most `limit` items (all of them when None)."""
        if limit is None or limit >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:limit])
        caps = [self.captions[i] for i in idx] if self.captions is not None else None
        return ImageSplit(self.images[idx], self.labels[idx], caps)


@dataclass
class Task:
    """A classification task: name, class names, prompt templates and splits."""

    name: str
    class_names: list[str]
    splits: dict[str, ImageSplit]
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (hex) of the items the task holds, to tell whether two runs saw the same data.

        Hashes the class names and, per split in name order, the split's name, image
        shape and dtype, image bytes, label bytes and captions. Computed once, on first
        use (about 30 ms for the largest built-in task, 55 MB of images); a task whose
        splits are changed afterwards keeps the old value.
        """
        h = hashlib.sha256()
        h.update("\n".join(self.class_names).encode() + b"\0")
        for name, s in sorted(self.splits.items()):
            h.update(f"{name}\0{s.images.shape}\0{s.images.dtype}\0".encode())
            h.update(np.ascontiguousarray(s.images).data)
            h.update(np.ascontiguousarray(s.labels, dtype=np.int64).data)
            h.update(b"\0" if s.captions is None else "\n".join(s.captions).encode() + b"\1")
        return h.hexdigest()

    def split(self, name: str) -> ImageSplit:
        if name not in self.splits:
            raise RetainError(
                f"Task {self.name!r} has no {name!r} split (it has {sorted(self.splits)})."
            )
        return self.splits[name]

    def validate(self) -> "Task":
        """Check every split: non-empty, images well formed, labels inside the class list."""
        if not self.class_names:
            raise RetainError(f"Task {self.name!r} has an empty class list.")
        for split_name, s in self.splits.items():
            where = f"task {self.name!r}, split {split_name!r}"
            if len(s) == 0:
                raise RetainError(
                    f"The {where} is empty: give it items or leave the split out."
                )
            if s.images.ndim != 4 or s.images.shape[-1] not in (1, 3) or s.images.dtype != np.uint8:
                raise RetainError(
                    f"The {where} has images of shape {s.images.shape} and dtype "
                    f"{s.images.dtype}; expected uint8 (N, H, W, 1 or 3)."
                )
            if s.images.shape[0] != len(s):
                raise RetainError(f"The {where} has {s.images.shape[0]} images but {len(s)} labels.")
            bad = np.flatnonzero((s.labels < 0) | (s.labels >= self.num_classes))
            if bad.size:
                i = int(bad[0])
                raise RetainError(
                    f"Item {i} of the {where} has label {int(s.labels[i])}, outside the "
                    f"{self.num_classes} classes {self.class_names}. Fix the label or add the class."
                )
        return self

    def prompts(self, class_index: int) -> list[str]:
        return [t.format(self.class_names[class_index]) for t in self.templates]


@dataclass
class Sequence:
    """An ordered list of Tasks trained one after another."""

    name: str
    tasks: list[Task]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise RetainError(f"Sequence {self.name!r} names a task twice: {names}.")

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)
