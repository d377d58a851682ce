"""Instruction tasks for MLLMs: an image (or none), a question, a reference answer.

An `InstructionTask` is what the MLLM trainer trains and evaluates on. Classification
datasets become instruction tasks through the EMT prompt (`from_classification`): the
question lists the classes, the answer is the class name, and the scorer is EMT's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retain.data.task import Task
from retain.errors import RetainError


@dataclass
class InstructionSplit:
    images: list  # uint8 (H, W, C) arrays or None for text-only turns
    questions: list[str]
    answers: list[str]
    labels: np.ndarray | None = None  # class indices, for tasks made from a classification dataset

    def __post_init__(self):
        n = len(self.questions)
        if len(self.images) != n or len(self.answers) != n or (self.labels is not None and len(self.labels) != n):
            raise RetainError(f"An instruction split needs as many images, questions and answers (got "
                              f"{len(self.images)}, {n}, {len(self.answers)}).")

    def __len__(self) -> int:
        return len(self.questions)

    def take(self, idx) -> "InstructionSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return InstructionSplit([self.images[i] for i in idx], [self.questions[i] for i in idx],
                                [self.answers[i] for i in idx], None if self.labels is None else self.labels[idx])

    def subset(self, limit: int | None, seed: int = 0) -> "InstructionSplit":
        """At most `limit` items, drawn by a seeded permutation (all when limit is None)."""
        if not limit or limit >= len(self):
            return self
        return self.take(np.sort(np.random.default_rng(seed).permutation(len(self))[:limit]))


@dataclass
class InstructionTask:
    name: str
    splits: dict[str, InstructionSplit]
    scorer: str  # "emt": a classification dataset scored as in EMT
    source: Task | None = field(default=None, repr=False)  # the classification task, for scorer "emt"

    def split(self, name: str) -> InstructionSplit:
        if name not in self.splits:
            raise RetainError(f"Instruction task {self.name!r} has no {name!r} split (it has {sorted(self.splits)}).")
        return self.splits[name]


def from_classification(task: Task, template: str | None = None) -> InstructionTask:
    """`task` posed as EMT questions whose answers are the class names."""
    from retain.eval.emt import EMT_TEMPLATE, emt_prompt

    prompt = emt_prompt(task, template or EMT_TEMPLATE)
    splits = {}
    for name in ("train", "val", "test"):
        if name not in task.splits:
            continue
        s = task.split(name)
        splits[name] = InstructionSplit(list(s.images), [prompt] * len(s), [task.class_names[y] for y in s.labels],
                                        np.asarray(s.labels))
    if not splits.get("train") or not len(splits["train"]):
        raise RetainError(f"Task {task.name!r} has no training items to fine-tune an MLLM on.")
    return InstructionTask(task.name, splits, "emt", task)
