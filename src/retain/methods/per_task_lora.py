"""Shared machinery of the methods that give every task its own LoRA adapter (O-LoRA,
DISCO, HiDe): adapters `task0`, `task1`, ... added through PEFT before each task, the new
one trained with the projector, and recreated on resume before their weights load. With
`dora: true` each task's adapter is a DoRA adapter and its magnitude vector trains with it;
a method whose math needs plain (alpha / r) B A updates names why in `plain_updates` and
then refuses DoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch

from retain.config import POSITIVE
from retain.methods.base import Method, TaskContext
from retain.methods.lora import LoRAOptions, inject_lora, refuse_dora


@dataclass
class PerTaskLoRAOptions(LoRAOptions):
    r: Annotated[int, POSITIVE] = 8
    """rank of each task's adapter"""
    alpha: Annotated[int, POSITIVE] = 16
    """scaling numerator: each update is (alpha / r) * B A"""


class PerTaskLoRA(Method):
    Options = PerTaskLoRAOptions
    families = ("mllm",)
    plain_updates: ClassVar[str] = ""
    """why the method needs each update to be (alpha / r) B A (then it refuses DoRA); empty: DoRA is fine"""

    def __init__(self, options=None):
        super().__init__(options)
        if self.plain_updates:  # when the method is created, before any model loads
            refuse_dora(self.name, self.opts, self.plain_updates)

    def setup(self, model) -> None:
        self.mllm = model
        self.adapters: list[str] = []

    def add_adapter(self) -> str:
        name = f"task{len(self.adapters)}"
        inject_lora(self.mllm, self.opts, adapter_name=name)
        self.adapters.append(name)
        return name

    def before_task(self, ctx: TaskContext) -> None:
        while len(self.adapters) <= ctx.index:
            self.add_adapter()
        self.set_training_adapters(ctx.index)

    def set_training_adapters(self, index: int) -> None:
        """Which adapters are active while task `index` trains (default: its own)."""
        self.mllm.model.base_model.set_adapter([self.adapters[index]])

    def current(self) -> str:
        return self.adapters[-1]

    def trainable(self, model):
        mine = [p for n, p in model.named_parameters()
                if any(f"{part}.{self.current()}." in n for part in ("lora_A", "lora_B", "lora_magnitude_vector"))]
        return mine + (model.projector_parameters() if self.opts.train_projector else [])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"adapters": torch.tensor(len(self.adapters))}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        while len(self.adapters) < int(state["adapters"]):
            self.add_adapter()
