"""EWC (Kirkpatrick et al., 2017): a quadratic penalty weighted by the diagonal Fisher.

After task k the diagonal empirical Fisher F_k = E_x[(d log p(y|x) / d theta)^2] is
estimated from per-item gradients on `fisher_samples` training items, and later tasks
pay weight/2 * sum_k sum_j F_k,j (theta_j - theta*_k,j)^2 (one anchor per past task).
For an MLLM, theta are its LoRA adapters (as lora_ft places them) and projector, and
log p(y|x) is the log-likelihood of the reference answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from retain.config import NON_NEGATIVE, POSITIVE
from retain.methods.base import Method, TaskContext, is_mllm, register
from retain.methods.lora import encoder_parameters, setup_mllm_adapters


@dataclass
class EWCOptions:
    weight: Annotated[float, NON_NEGATIVE] = 100.0
    """lambda: the penalty's weight"""
    fisher_samples: Annotated[int, POSITIVE] = 200
    """training items whose per-item gradients estimate the Fisher"""


def diagonal_fisher(params: list[torch.nn.Parameter], log_likelihood, items: int) -> list[torch.Tensor]:
    """Mean over items of squared per-item gradients of `log_likelihood(i)` w.r.t. `params`."""
    fisher = [torch.zeros_like(p) for p in params]
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            for i in range(items):
                grads = torch.autograd.grad(log_likelihood(i), params, allow_unused=True)
                for f, g in zip(fisher, grads):
                    if g is not None:
                        f.add_(g.detach().pow(2))
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)
    return [f / max(items, 1) for f in fisher]


def ewc_penalty(params, fishers, anchors) -> torch.Tensor:
    return sum((f * (p - a).pow(2)).sum() for p, f, a in zip(params, fishers, anchors)) / 2


@register
class EWC(Method):
    name = "ewc"
    Options = EWCOptions
    families = ("dual_encoder", "mllm")

    def setup(self, model) -> None:
        setup_mllm_adapters(model)
        self.params = encoder_parameters(model)
        self.fishers: list[list[torch.Tensor]] = []
        self.anchors: list[list[torch.Tensor]] = []

    def loss(self, batch, outputs, ctx):
        if not self.fishers:
            return 0.0
        return self.opts.weight * sum(ewc_penalty(self.params, f, a) for f, a in zip(self.fishers, self.anchors))

    def after_task(self, ctx: TaskContext) -> None:
        model, split = ctx.model, ctx.train
        n = min(self.opts.fisher_samples, len(split))
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(ctx.seed))[:n]
        if is_mllm(model):
            self._consolidate_mllm(model, split, order.tolist())
            return
        pixels = model.encoder.preprocess(split.images[order.numpy()])
        labels = torch.as_tensor(split.labels[order.numpy()], device=pixels.device)
        was = model.training
        model.eval()

        def log_likelihood(i: int) -> torch.Tensor:
            logits = model.forward(pixels[i:i + 1], [ctx.task.name])["logits"][ctx.task.name]
            return -F.cross_entropy(logits, labels[i:i + 1])

        self.fishers.append(diagonal_fisher(self.params, log_likelihood, n))
        self.anchors.append([p.detach().clone() for p in self.params])
        model.train(was)

    def _consolidate_mllm(self, mllm, split, order: list[int]) -> None:
        was = mllm.model.training
        mllm.model.eval()

        def log_likelihood(i: int) -> torch.Tensor:
            k = order[i]
            image = split.images[k]
            return -mllm.training_loss(None if image is None else [image], [split.questions[k]], [split.answers[k]])

        self.fishers.append(diagonal_fisher(self.params, log_likelihood, len(order)))
        self.anchors.append([p.detach().clone() for p in self.params])
        mllm.model.train(was)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for k, (fs, an) in enumerate(zip(self.fishers, self.anchors)):
            for j, (f, a) in enumerate(zip(fs, an)):
                state[f"fisher.{k}.{j}"] = f
                state[f"anchor.{k}.{j}"] = a
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        tasks = sorted({int(k.split(".")[1]) for k in state if k.startswith("fisher.")})
        n = len(self.params)
        dev = [p.device for p in self.params]
        self.fishers = [[state[f"fisher.{k}.{j}"].to(dev[j]) for j in range(n)] for k in tasks]
        self.anchors = [[state[f"anchor.{k}.{j}"].to(dev[j]) for j in range(n)] for k in tasks]
