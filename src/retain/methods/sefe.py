"""SEFE's RegLoRA (Chen et al., 2025): keep the key entries of earlier tasks' updates.

One LoRA adapter. After each task the update dW = (alpha / r) B A of every adapted layer
is merged into the layer's weight, its largest `top_ratio` (2%) entries by |dW| are marked
as that task's key positions, and the adapter restarts (A re-drawn, B zero). While later
tasks train, the adapter's update is penalised on the marked positions only:

    R = weight * sum_layers || M ⊙ (alpha / r) B A ||^2

so it can change everything except what earlier tasks relied on most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import FRACTION, NON_NEGATIVE
from retain.methods.base import Method, TaskContext, register
from retain.methods.lora import LoRAOptions, delta_weight, inject_lora, lora_layers, refuse_dora


@dataclass
class SEFEOptions(LoRAOptions):
    top_ratio: Annotated[float, FRACTION] = 0.02
    """share of each layer's update entries kept as key positions after a task"""
    weight: Annotated[float, NON_NEGATIVE] = 1.0
    """weight of the penalty on key positions"""


def top_mask(delta: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the `ratio` largest-magnitude entries of `delta` (at least one)."""
    k = max(1, int(round(ratio * delta.numel())))
    idx = delta.abs().flatten().topk(k).indices
    mask = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    mask[idx] = True
    return mask.view_as(delta)


@register
class SEFE(Method):
    name = "sefe"
    Options = SEFEOptions
    families = ("mllm",)

    def __init__(self, options=None):
        super().__init__(options)
        refuse_dora(self.name, self.opts, "its penalty and its merge after each task act on the plain update "
                                          "(alpha / r) B A, which DoRA's magnitude rescaling changes.")

    def setup(self, model) -> None:
        self.mllm = model
        inject_lora(model, self.opts)
        self.masks: dict[str, torch.Tensor] = {}

    def trainable(self, model):
        lora = [p for n, p in model.named_parameters() if "lora_" in n]
        return lora + (model.projector_parameters() if self.opts.train_projector else [])

    def saved_parameters(self, model):
        """The merged weights change too, so they are checkpointed with the adapter."""
        return self.trainable(model) + [layer.base_layer.weight for _, layer in lora_layers(model.model)]

    def loss(self, batch, outputs, ctx):
        if not self.masks:
            return 0.0
        total = 0.0
        for name, layer in lora_layers(self.mllm.model):
            if name in self.masks:
                total = total + (delta_weight(layer, "default")[self.masks[name]]).pow(2).sum()
        return self.opts.weight * total

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        for name, layer in lora_layers(self.mllm.model):
            delta = delta_weight(layer, "default")
            mask = top_mask(delta, self.opts.top_ratio)
            self.masks[name] = self.masks[name] | mask if name in self.masks else mask
            layer.base_layer.weight += delta.to(layer.base_layer.weight.dtype)
            layer.reset_lora_parameters("default", True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"mask.{n}": m for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks = {k[len("mask."):]: v.bool() for k, v in state.items() if k.startswith("mask.")}
