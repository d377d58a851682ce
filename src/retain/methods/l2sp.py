"""L2-SP (Li et al., 2018): penalise the distance of the weights to the starting point.

R = weight * 0.5 * ||theta - theta0||^2 over the image tower and its projection, theta0
the weights at the start of the current task (the pre-trained model for the first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retain.methods.base import Method, TaskContext, register


@dataclass
class L2SPOptions:
    weight: float = 0.01
    """alpha of L2-SP: the penalty's weight"""


def encoder_parameters(model) -> list[torch.nn.Parameter]:
    enc = model.encoder
    return [*enc.vision.parameters(), *enc.visual_projection.parameters()]


def l2sp_penalty(params, anchors) -> torch.Tensor:
    """0.5 * sum ||p - p0||^2 over matching tensors."""
    return 0.5 * sum((p - a).pow(2).sum() for p, a in zip(params, anchors))


@register
class L2SP(Method):
    name = "l2sp"
    Options = L2SPOptions

    def before_task(self, ctx: TaskContext) -> None:
        self.params = encoder_parameters(ctx.model)
        self.anchors = [p.detach().clone() for p in self.params]

    def loss(self, batch, outputs, ctx) -> torch.Tensor:
        return self.opts.weight * l2sp_penalty(self.params, self.anchors)
