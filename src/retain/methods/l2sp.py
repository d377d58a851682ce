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
from retain.methods.base import Method, TaskContext, register
from retain.methods.lora import encoder_parameters, setup_mllm_adapters


@dataclass
class L2SPOptions:
    weight: Annotated[float, NON_NEGATIVE] = 0.01
    """alpha of L2-SP: the penalty's weight"""


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
