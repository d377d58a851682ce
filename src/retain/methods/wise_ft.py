"""WiSE-FT (Wortsman et al., 2022): fine-tune, then interpolate the weights.

After each task, theta = (1 - alpha) * theta0 + alpha * theta_ft over the whole model
(image tower, projection and the task's head), theta0 the model before the task.
alpha = 0 keeps the start, alpha = 1 keeps the fine-tuned model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import FRACTION
from retain.methods.base import Method, TaskContext, register


@dataclass
class WiSEFTOptions:
    alpha: Annotated[float, FRACTION] = 0.5
    """mixing coefficient: weight of the fine-tuned model"""


def interpolate_(model: torch.nn.Module, start: dict[str, torch.Tensor], alpha: float) -> None:
    """In place: every floating tensor becomes (1 - alpha) * start + alpha * current."""
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name in start and value.is_floating_point():
                value.copy_(torch.lerp(start[name].to(value), value, alpha))


@register
class WiSEFT(Method):
    name = "wise_ft"
    Options = WiSEFTOptions

    def before_task(self, ctx: TaskContext) -> None:
        self.start = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}

    def after_task(self, ctx: TaskContext) -> None:
        interpolate_(ctx.model, self.start, self.opts.alpha)
        del self.start
