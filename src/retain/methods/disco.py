"""DISCO (Guo et al., 2025): one LoRA subspace per task, selected at inference.

Each task trains its own adapter (the others inactive) and keeps the running mean of its
training items' features (the model's own image and question features, adapters off,
see `retain.methods.routing`). At inference an item is answered with the adapter of the
task whose mean feature is most cosine-similar to the item's, so no task id is needed.
"""

from __future__ import annotations

import contextlib

import torch

from retain.methods.base import TaskContext, register
from retain.methods.per_task_lora import PerTaskLoRA
from retain.methods.routing import PrototypeRouter, item_features
from retain.progress import bar

FEATURE_BATCH = 32


def accumulate_prototype(router: PrototypeRouter, mllm, split, task: int) -> None:
    """Add the routing features of every item of `split` to task `task`'s running mean."""
    for s in bar(range(0, len(split), FEATURE_BATCH), desc=f"routing features of task {task + 1}"):
        images = split.images[s:s + FEATURE_BATCH]
        router.update(task, item_features(mllm, images, split.questions[s:s + FEATURE_BATCH]))


class RoutedLoRA(PerTaskLoRA):
    """A per-task LoRA method whose router picks the adapters for each item at inference."""

    def setup(self, model) -> None:
        super().setup(model)
        self.router = PrototypeRouter(self.routed)
        model.router = self.router

    def before_task(self, ctx: TaskContext) -> None:
        super().before_task(ctx)
        if ctx.index not in self.router.counts:
            accumulate_prototype(self.router, self.mllm, ctx.train, ctx.index)

    def configure(self, task: int) -> None:
        """Activate the adapters that answer an item routed to `task`."""
        self.mllm.model.base_model.set_adapter([self.adapters[task]])

    @contextlib.contextmanager
    def routed(self, task: int):
        was = self.mllm.model.base_model.active_adapters
        flags = [(p, p.requires_grad) for p in self.mllm.parameters()]
        self.configure(task)
        try:
            yield
        finally:
            self.restore(was)
            for p, flag in flags:  # set_adapter marks adapters trainable; the trainer decides that
                p.requires_grad_(flag)

    def restore(self, active) -> None:
        self.mllm.model.base_model.set_adapter(list(active))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), **self.router.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.router.load_state_dict(state)


@register
class DISCO(RoutedLoRA):
    name = "disco"
