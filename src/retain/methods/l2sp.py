"""L2-SP (Li et al., 2018): penalise the distance of the weights to the starting point.

R = weight * 0.5 * ||theta - theta0||^2 over the image tower and its projection (for an
MLLM: over its LoRA adapters, as lora_ft places them, and its projector), theta0 the
weights at the start of the current task (the pre-trained model for the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import NON_NEGATIVE
from retain.methods.base import Method, TaskContext, is_mllm, mllm_trainable, register


@dataclass
class L2SPOptions:
    weight: Annotated[float, NON_NEGATIVE] = 0.01
    """alpha of L2-SP: the penalty's weight"""


def encoder_parameters(model) -> list[torch.nn.Parameter]:
    """What a regulariser anchors: the image tower and projection, or an MLLM's trainable adapters."""
    if is_mllm(model):
        return mllm_trainable(model)
    enc = model.encoder
    return [*enc.vision.parameters(), *enc.visual_projection.parameters()]


def setup_mllm_adapters(model) -> None:
    """Give an MLLM the LoRA adapters of lora_ft (default options) if it has none."""
    if is_mllm(model) and not any("lora_" in n for n, _ in model.named_parameters()):
        from retain.methods.lora_ft import LoRAOptions, inject_lora

        inject_lora(model, LoRAOptions())


def l2sp_penalty(params, anchors) -> torch.Tensor:
    """0.5 * sum ||p - p0||^2 over matching tensors."""
    return 0.5 * sum((p - a).pow(2).sum() for p, a in zip(params, anchors))


@register
class L2SP(Method):
    name = "l2sp"
    Options = L2SPOptions
    families = ("dual_encoder", "mllm")

    def setup(self, model) -> None:
        setup_mllm_adapters(model)

    def before_task(self, ctx: TaskContext) -> None:
        self.params = encoder_parameters(ctx.model)
        self.anchors = [p.detach().clone() for p in self.params]

    def loss(self, batch, outputs, ctx) -> torch.Tensor:
        return self.opts.weight * l2sp_penalty(self.params, self.anchors)
