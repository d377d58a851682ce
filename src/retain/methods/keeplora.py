"""KeepLoRA (Luo et al., ICLR 2026, "KeepLoRA: Continual learning with residual gradient
adaptation"): each task's LoRA update lives in the part of the gradient space that the
pre-trained weights and the earlier tasks do not use.

Every adapted layer W (out x in) keeps a principal subspace M (rows: an orthonormal basis
of input directions). It starts as the top right singular vectors of W holding
`weight_energy` (60%) of sum sigma^2 (fewer than that share, at least one), the
directions the pre-trained model relies on. For task t:

1. Before training: G = mean over `gradient_fraction` (20%, evenly spaced) of the task's
   training items of dL/dW. The residual R = G^T - M^T M G^T (in x out) is the gradient
   with the subspace projected out; A is set to the top r left singular vectors of R
   (A = U_r^T, r x in, orthonormal rows with A M^T = 0) and frozen; B starts at zero.
2. Training: only B (and the projector) train, so the update dW = (alpha / r) B A has
   dW M^T = 0: an input inside the subspace meets exactly the old weight.
3. After training: dW is merged into W, B is zeroed, and G is taken again on the merged
   model. M grows by the top left singular vectors of R = G^T - M^T M G^T until the share
   of ||G||_F^2 inside the subspace reaches `gradient_energy` (99%):

       captured = (||G||^2 - ||R||^2) / ||G||^2,  add u_i while captured < 0.99
       (captured += sigma_i(R)^2 / ||G||^2 for each added u_i)

Defaults are the reference's MCITlib scripts (MaolinLuo/KeepLoRA): rank 32, alpha 8
(rank / 4), energies 0.6 and 0.99, 20% of the items. Departures: the gradients are taken
on batches of train.batch_size items (the reference: one item at a time), and A comes from
an exact SVD (the reference: `torch.svd_lowrank`, a randomised one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import FRACTION, POSITIVE, Range
from retain.methods.base import Method, TaskContext, register
from retain.methods.lora import LoRAOptions, inject_lora, lora_layers, refuse_dora
from retain.progress import bar

ADAPTER = "default"


@dataclass
class KeepLoRAOptions(LoRAOptions):
    r: Annotated[int, POSITIVE] = 32
    """rank of the adapter (the number of residual gradient directions A spans)"""
    alpha: Annotated[int, POSITIVE] = 8
    """scaling numerator: the update is (alpha / r) B A (the reference: rank / 4)"""
    weight_energy: Annotated[float, Range(gt=0, le=1)] = 0.6
    """share of the pre-trained weight's spectral energy its principal subspace keeps"""
    gradient_energy: Annotated[float, FRACTION] = 0.99
    """share of a task's gradient energy the subspace must hold after the task"""
    gradient_fraction: Annotated[float, Range(gt=0, le=1)] = 0.2
    """share of a task's training items (evenly spaced) whose mean gradient is taken"""


def exact(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 at least (SVD takes no half precision; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def weight_subspace(weight: torch.Tensor, energy: float) -> torch.Tensor:
    """(k, in) top right singular vectors of `weight` (out x in) holding less than `energy`
    of sum sigma^2 (at least one)."""
    u, s, _ = torch.linalg.svd(exact(weight).T, full_matrices=False)  # W^T = U S V^T: U spans W's inputs
    share = (s ** 2).cumsum(0) / (s ** 2).sum()
    k = max(int((share < energy).sum()), 1)
    return u[:, :k].T


def project_out(gradient: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """R = G^T - M^T M G^T (in x out) for G (out x in) and M (k x in, orthonormal rows)."""
    g = exact(gradient).T
    m = basis.to(g.dtype)
    return g - m.T @ (m @ g)


def residual_basis(gradient: torch.Tensor, basis: torch.Tensor, rank: int) -> torch.Tensor:
    """(rank, in): the top `rank` left singular vectors of the residual gradient, as rows;
    rows beyond the residual's rank are zero."""
    u, _, _ = torch.linalg.svd(project_out(gradient, basis), full_matrices=False)
    a = u.new_zeros(rank, u.shape[0])
    k = min(rank, u.shape[1])
    a[:k] = u[:, :k].T
    return a


def extend_subspace(basis: torch.Tensor, gradient: torch.Tensor, energy: float) -> torch.Tensor:
    """`basis` with the residual gradient's top directions added until the subspace holds
    `energy` of ||G||_F^2 (at most `in` rows)."""
    total = float((exact(gradient) ** 2).sum())
    if total == 0.0:
        return basis
    residual = project_out(gradient, basis)
    u, s, _ = torch.linalg.svd(residual, full_matrices=False)
    captured = (total - float((residual ** 2).sum())) / total
    add = 0
    for sigma in s.tolist():
        if captured >= energy:
            break
        captured += sigma ** 2 / total
        add += 1
    grown = torch.cat([basis.to(u.dtype), u[:, :add].T])
    return grown[:u.shape[0]].to(basis.dtype)


@register
class KeepLoRA(Method):
    name = "keeplora"
    Options = KeepLoRAOptions
    families = ("mllm",)

    def __init__(self, options=None):
        super().__init__(options)
        refuse_dora(self.name, self.opts, "its A spans residual gradient directions and its update (alpha / r) B A "
                                          "must vanish on the kept subspace, which DoRA's magnitude rescaling breaks.")

    def setup(self, model) -> None:
        self.mllm = model
        inject_lora(model, self.opts, adapter_name=ADAPTER)
        self.subspaces = {name: weight_subspace(layer.base_layer.weight.detach(), self.opts.weight_energy)
                          .to(layer.base_layer.weight.device) for name, layer in lora_layers(model.model)}

    def trainable(self, model):
        b = [p for n, p in model.named_parameters() if f"lora_B.{ADAPTER}." in n]
        return b + (model.projector_parameters() if self.opts.train_projector else [])

    def saved_parameters(self, model):
        """A and the merged weights change too, so they are checkpointed with B."""
        layers = lora_layers(model.model)
        return (self.trainable(model) + [layer.lora_A[ADAPTER].weight for _, layer in layers]
                + [layer.base_layer.weight for _, layer in layers])

    def before_task(self, ctx: TaskContext) -> None:
        gradients = self.mean_gradients(ctx)
        with torch.no_grad():
            for name, layer in lora_layers(self.mllm.model):
                a = layer.lora_A[ADAPTER].weight
                a.copy_(residual_basis(gradients[name], self.subspaces[name], a.shape[0]).to(a.device, a.dtype))
                layer.lora_B[ADAPTER].weight.zero_()

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        for _, layer in lora_layers(self.mllm.model):
            weight = layer.base_layer.weight
            b, a = layer.lora_B[ADAPTER].weight.float(), layer.lora_A[ADAPTER].weight.float()
            weight += (layer.scaling[ADAPTER] * b @ a).to(weight.dtype)
            layer.lora_B[ADAPTER].weight.zero_()
        gradients = self.mean_gradients(ctx)
        for name in self.subspaces:
            self.subspaces[name] = extend_subspace(self.subspaces[name], gradients[name],
                                                   self.opts.gradient_energy).to(self.subspaces[name].device)

    @torch.enable_grad()
    def mean_gradients(self, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """Mean dL/dW of every adapted weight over the task's evenly spaced gradient items."""
        split = ctx.train
        n = max(1, math.floor(self.opts.gradient_fraction * len(split)))
        items = torch.linspace(0, len(split) - 1, n).long().tolist()
        layers = lora_layers(self.mllm.model)
        weights = {name: layer.base_layer.weight for name, layer in layers}
        sums = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()}
        flags = [(p, p.requires_grad) for p in self.mllm.parameters()]
        batches = 0  # at least one: a task has an item
        try:
            for p in self.mllm.parameters():
                p.requires_grad_(False)
            for w in weights.values():
                w.requires_grad_(True)
            for kind in (True, False):  # a batch holds image items only or text-only items only
                group = [i for i in items if (split.images[i] is not None) == kind]
                if not group:
                    continue
                for s in bar(range(0, len(group), ctx.batch_size), desc=f"keeplora gradients of task {ctx.index + 1}"):
                    idx = group[s:s + ctx.batch_size]
                    loss = self.mllm.training_loss([split.images[i] for i in idx] if kind else None,
                                                   [split.questions[i] for i in idx], [split.answers[i] for i in idx])
                    grads = torch.autograd.grad(loss, list(weights.values()))
                    for name, g in zip(weights, grads):
                        sums[name] += g.float()
                    batches += 1
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        return {name: s / batches for name, s in sums.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"subspace.{name}": m.cpu() for name, m in self.subspaces.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.subspaces:
            if f"subspace.{name}" in state:
                self.subspaces[name] = state[f"subspace.{name}"].to(self.subspaces[name].device)
