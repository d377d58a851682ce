"""SMoLoRA (Wang et al., ICCV 2025, "SMoLoRA: Exploring and defying dual catastrophic
forgetting in continual visual instruction tuning"): separable routing over LoRA experts,
one router for visual understanding and one for instruction following.

Every adapted linear layer W gets E LoRA experts of rank r / E, in two halves: E / 2
visual-understanding (VU) experts and E / 2 instruction-following (IF) experts, each half
with its own router. For an item with image feature z_vu and instruction feature z_if:

    v = argmax R_vu z_vu,        i = argmax R_if z_if          (top-1 in each half)
    u_vu = s B_v A_v x,          u_if = s B_{E/2+i} A_{E/2+i} x   (s = alpha / r)
    (w_vu, w_if) = softmax(f_vu(u_vu), f_if(u_if))             (per token; f: out -> 1)
    y = W x + w_vu u_vu + w_if u_if

The experts and the fusion maps f train with the projector. The routers get no gradient
through the top-1 choice (as in the reference code), so they stay at their seeded
initialisation: fixed partitions of the two feature spaces. Items with similar images share
VU experts and items with similar instructions share IF experts, whatever their task, and
an expert that no item of a task picks is not changed by that task (without weight decay).

Defaults are the reference's scripts (Minato-Zackie/SMoLoRA): 8 experts, r 128, alpha 256
(16 per expert), A drawn from N(0, 0.01^2), B zero. Departures, each for a reason: the
reference routes VU by the mean of the layer's input over the tokens of the current
forward (mostly image tokens) and IF by a sentence-BERT embedding of the task's instruction
template, picked by a task id given at test time. Here both routing inputs are per item
and computed once per item by the model itself, adapters off
(`retain.methods.routing.item_features`): z_vu the vision tower's pooled image feature
(zero for text-only items), z_if the mean input embedding of the question. So no task id
and no second model are needed, and an item's experts are the same in training, in prompt
encoding, in token-by-token decoding and in option scoring (the reference's mean over the
current forward's tokens changes at each decoding step). At inference the MLLM answers the
items in groups that share every layer's choice (`MLLM.routing`), so evaluation batches
are smaller than other methods'.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from retain.config import POSITIVE, Range
from retain.errors import RetainError
from retain.methods.base import Method, TaskContext, register
from retain.methods.lora import base_llava
from retain.methods.routing import item_features


@dataclass
class SMoLoRAOptions:
    r: Annotated[int, POSITIVE] = 128
    """total rank, split equally over the experts"""
    alpha: Annotated[int, POSITIVE] = 256
    """scaling numerator: each expert's update is (alpha / r) B_e A_e"""
    experts: Annotated[int, POSITIVE] = 8
    """experts per layer: the first half visual-understanding, the second instruction-following"""
    dropout: Annotated[float, Range(ge=0, le=0.999)] = 0.05
    """dropout on the experts' input"""
    target_modules: str = ""
    """regex of the modules to adapt (empty: the LLM's attention and MLP projections)"""
    train_projector: bool = True
    """also train the vision-to-language projector"""


class Routes:
    """What the SMoLoRA layers route by: each item's (z_vu, z_if) while training, or one
    fixed choice per layer while the MLLM answers a routed group of items."""

    def __init__(self):
        self.features: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, d_vision), (B, d_text)
        self.fixed: tuple[int, ...] | None = None  # (v_0, i_0, v_1, i_1, ...): layer k's choices at 2k, 2k + 1


class SMoLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: int, experts: int, vu_dim: int, if_dim: int,
                 dropout: float, routes: Routes, index: int):
        super().__init__()
        if experts < 2 or experts % 2:
            raise RetainError(f"SMoLoRA: experts must be even (half visual-understanding, half instruction-following), "
                              f"got {experts}.")
        if r % experts:
            raise RetainError(f"SMoLoRA: the rank {r} must split equally over {experts} experts.")
        self.base, self.half, self.scaling = base, experts // 2, alpha / r
        self.routes, self.index = routes, index
        rank = r // experts
        self.lora_A = nn.Parameter(torch.empty(experts, rank, base.in_features).normal_(0, 0.01))
        self.lora_B = nn.Parameter(torch.zeros(experts, base.out_features, rank))
        self.lora_vu_router = nn.Linear(vu_dim, self.half, bias=False)
        self.lora_if_router = nn.Linear(if_dim, self.half, bias=False)
        self.lora_fuse_vu = nn.Linear(base.out_features, 1, bias=False)
        self.lora_fuse_if = nn.Linear(base.out_features, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to(base.weight.device, base.weight.dtype)

    def choices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(VU expert, IF expert) of each item, (B,) each; (1,) for a routed group."""
        if self.routes.fixed is not None:
            v, i = self.routes.fixed[2 * self.index:2 * self.index + 2]
            return torch.tensor([v]), torch.tensor([i])
        if self.routes.features is None:
            raise RetainError("SMoLoRA layers route by each item's image and question: run the model in a training "
                              "batch or inside the method's inference context.")
        z_vu, z_if = self.routes.features
        with torch.no_grad():
            return (self.lora_vu_router(z_vu.to(self.lora_A.dtype)).argmax(-1).cpu(),
                    self.lora_if_router(z_if.to(self.lora_A.dtype)).argmax(-1).cpu())

    def expert(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """s B_e A_e h for each item's expert e: h (B, T, in) -> (B, T, out)."""
        e = e.to(self.lora_A.device)
        if len(e) not in (1, h.shape[0]):
            raise RetainError(f"SMoLoRA: {len(e)} items' routes for a batch of {h.shape[0]}.")
        low = h @ self.lora_A[e].transpose(1, 2)  # (B, T, rank)
        return self.scaling * (low @ self.lora_B[e].transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, i = self.choices()
        h = self.dropout(x)
        vu, fi = self.expert(h, v), self.expert(h, i + self.half)
        w = F.softmax(torch.cat([self.lora_fuse_vu(vu), self.lora_fuse_if(fi)], -1).float(), -1).to(x.dtype)
        return self.base(x) + w[..., :1] * vu + w[..., 1:] * fi


class SeparableRouter:
    """What `MLLM.routing` asks: every layer's two choices per item, and the context that fixes them."""

    def __init__(self, method: "SMoLoRA"):
        self.method = method

    def ready(self) -> bool:
        return True

    def assign(self, mllm, images, questions) -> list[tuple[int, ...]]:
        routes = self.method.routes
        was = routes.fixed, routes.features
        routes.fixed, routes.features = None, self.method.features(images, list(questions))
        try:
            picks = [layer.choices() for layer in self.method.layers]
        finally:
            routes.fixed, routes.features = was
        return [tuple(int(c[k]) for v, i in picks for c in (v, i)) for k in range(len(questions))]

    @contextlib.contextmanager
    def activate(self, key: tuple[int, ...]):
        routes = self.method.routes
        was = routes.fixed, routes.features
        routes.fixed, routes.features = key, None
        try:
            yield
        finally:
            routes.fixed, routes.features = was


@register
class SMoLoRA(Method):
    name = "smolora"
    Options = SMoLoRAOptions
    families = ("mllm",)

    def setup(self, model) -> None:
        from retain.models.mllm import LM_TARGETS

        self.mllm = model
        self.routes = Routes()
        self.router = SeparableRouter(self)
        if_dim = base_llava(model).get_input_embeddings().weight.shape[1]
        vu_dim = item_features(model, None, ["width"]).shape[1] - if_dim  # the image feature's width
        self.vu_dim = vu_dim
        pattern = re.compile(self.opts.target_modules or LM_TARGETS)
        names = [n for n, m in model.model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
        if not names:
            raise RetainError(f"SMoLoRA found no linear layer matching {pattern.pattern!r}.")
        self.layers = []
        for k, name in enumerate(names):
            parent_name, _, child = name.rpartition(".")
            parent = model.model.get_submodule(parent_name)
            layer = SMoLoRALinear(getattr(parent, child), self.opts.r, self.opts.alpha, self.opts.experts,
                                  vu_dim, if_dim, self.opts.dropout, self.routes, k)
            setattr(parent, child, layer)
            self.layers.append(layer)
        model.model.train(model.model.training)  # the new modules follow the model's mode

    def features(self, images, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_vu, z_if) of each item: its pooled image feature and its question's mean embedding."""
        f = item_features(self.mllm, images, questions)
        return f[:, :self.vu_dim], f[:, self.vu_dim:]

    def trainable(self, model):
        mine = [p for layer in self.layers for p in (layer.lora_A, layer.lora_B, layer.lora_fuse_vu.weight,
                                                     layer.lora_fuse_if.weight)]
        return mine + (model.projector_parameters() if self.opts.train_projector else [])

    def saved_parameters(self, model):
        """The routers do not train, but they are drawn once: they are checkpointed too."""
        routers = [p for layer in self.layers for p in (layer.lora_vu_router.weight, layer.lora_if_router.weight)]
        return self.trainable(model) + routers

    def extend_batch(self, batch: dict, ctx: TaskContext) -> dict:
        """Route the batch's items by their own image and question (the batch is unchanged)."""
        self.routes.fixed = None
        self.routes.features = self.features(batch["images"], list(batch["questions"]))
        return batch

    def inference(self, model):
        return model.routing(self.router)
