"""Linear probe (LP): a logistic-regression head on the frozen image features.

The head is fitted full-batch with L-BFGS on L2-normalised features, starting from the
zero-shot head, with an L2 penalty; the image tower never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from retain.config import NON_NEGATIVE, POSITIVE
from retain.eval.classification import image_features
from retain.methods.base import Method, TaskContext, register


@dataclass
class LinearProbeOptions:
    l2: Annotated[float, NON_NEGATIVE] = 1e-4
    """L2 penalty on the head weights"""
    max_iter: Annotated[int, POSITIVE] = 100
    """L-BFGS iterations"""


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, init: torch.Tensor,
                    l2: float = 1e-4, max_iter: int = 100) -> torch.Tensor:
    """Minimise mean CE(features @ W.T, labels) + l2 * ||W||^2 over W, starting at `init`."""
    w = init.detach().clone().float().requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=max_iter, line_search_fn="strong_wolfe")
    x, y = features.float(), labels.long()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def probe_head(ctx: TaskContext, l2: float, max_iter: int) -> None:
    """Replace the current task's head by a linear probe fitted on its training split."""
    model = ctx.model
    feats = image_features(model.encoder, ctx.train).to(ctx.device)
    labels = torch.as_tensor(ctx.train.labels, device=ctx.device)
    head = model.head(ctx.task.name)
    with torch.no_grad():
        head.copy_(fit_linear_head(feats, labels, head, l2, max_iter))


@register
class LinearProbe(Method):
    name = "linear_probe"
    Options = LinearProbeOptions
    trains = False

    def before_task(self, ctx: TaskContext) -> None:
        probe_head(ctx, self.opts.l2, self.opts.max_iter)
