"""The method interface: the `Method` hooks and the `@register` table.

A method is one short class with hooks the continual trainer calls (DESIGN.md):
`setup`, `trainable`, `before_task`, `extend_batch`, `loss`, `after_task`, `inference`,
and `state_dict`/`load_state_dict` for what it must carry across a resume. Options are a
dataclass declared next to the method; configs name a method by its registry name
(`retain.methods.registry.create_method`). The model families a method applies to are
its `families`; at run time `is_mllm(model)` tells which family a model belongs to.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from retain.errors import RetainError

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make `cls` available as `method: <cls.name>` in configs."""
    if cls.name in METHODS:
        raise RetainError(f"method {cls.name!r} is already registered (a built-in method or another plugin): "
                          "give yours another name.")
    METHODS[cls.name] = cls
    return cls


@dataclass
class NoOptions:
    """A method without options."""


@dataclass
class TaskContext:
    """What a hook may look at: the task being trained and the run around it."""

    task: Any  # retain.data.Task
    index: int  # position of the task in the sequence (0-based)
    train: Any  # retain.data.ImageSplit actually trained on
    model: Any  # the unwrapped ImageClassifier
    tasks: list  # every task of the sequence
    train_splits: list  # the training split of every task, in sequence order
    device: torch.device
    seed: int
    batch_size: int
    tracker: Any = None  # retain.tracking.Tracker: per-step losses go to the run's experiment trackers


class Method:
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    trains: ClassVar[bool] = True
    """False for methods with no gradient steps (zero-shot, linear probe)"""
    taps: tuple[int, ...] = ()
    """vision blocks whose hidden states the trainer should return in outputs["taps"]"""
    lr_scale: float = 1.0
    """the method's learning rate as a multiple of train.lr (soft prompts want a larger one)"""
    families: ClassVar[tuple[str, ...]] = ("dual_encoder",)
    """model families the method applies to: dual_encoder (CLIP-style), mllm (LLaVA-style)"""

    def __init__(self, options=None):
        self.opts = options if options is not None else self.Options()

    def setup(self, model) -> None:
        """Called once with the unwrapped model before the first task."""

    def trainable(self, model) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates: for a dual encoder the image tower, its
        projection and the heads; for an MLLM its LoRA adapters and projector."""
        if is_mllm(model):
            return mllm_trainable(model)
        enc = model.encoder
        return [*enc.vision.parameters(), *enc.visual_projection.parameters(), *model.heads.parameters()]

    def saved_parameters(self, model) -> list[torch.nn.Parameter]:
        """MLLM runs: the parameters a checkpoint must hold (what the method changes)."""
        return self.trainable(model)

    def before_task(self, ctx: TaskContext) -> None:
        """Called before the task's first step (store anchors, fit a probe, ...)."""

    def extend_batch(self, batch: dict, ctx: TaskContext) -> dict:
        """Add items to a training batch (replay)."""
        return batch

    def text_inputs(self, batch: dict, ctx: TaskContext) -> dict | None:
        """Captions the model should also encode in its forward (FLYP)."""
        return None

    def task_loss(self, batch: dict, outputs, ctx: TaskContext) -> torch.Tensor:
        if is_mllm(ctx.model):
            return outputs.loss
        from retain.models.classifier import classification_loss

        return classification_loss(outputs, batch["labels"])

    def loss(self, batch: dict, outputs: dict, ctx: TaskContext) -> torch.Tensor | float:
        """Extra terms added to the task loss (regularisers)."""
        return 0.0

    def after_task(self, ctx: TaskContext) -> None:
        """Called after the task's last step, before its evaluation (consolidate, merge)."""

    def inference(self, model) -> contextlib.AbstractContextManager:
        """The context every evaluation of `model` runs in (not training steps): a method
        that answers items in its own way (a router picking per-task adapters or prompts)
        installs that for the duration and removes it on exit. Default: the model as it is."""
        return contextlib.nullcontext()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors this method must keep across a resume (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned (on --resume)."""


def is_mllm(model) -> bool:
    """Whether `model` is an MLLM (LLaVA-style) rather than a dual encoder: the one run-time
    test of a model's family."""
    from retain.models.mllm import MLLM

    return isinstance(model, MLLM)


def mllm_trainable(model) -> list[torch.nn.Parameter]:
    """An MLLM's LoRA parameters (all adapters) and its projector."""
    return [p for n, p in model.named_parameters() if "lora_" in n] + model.projector_parameters()
