"""MoELoRA (Chen et al., 2024, as in CoIN/MCITlib): LoRA split into experts mixed by a router.

Every adapted linear layer W gets E experts, each a LoRA of rank r / E, and a token router:

    y = W x + (alpha / r) * sum_e g_e(x) B_e A_e x,      g(x) = softmax(R x)

The experts and routers train with the projector through the whole sequence. The layers
are wrapped in place (`MoELoRALinear` around the original `nn.Linear`); no model code is
copied.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from retain.config import POSITIVE, Range
from retain.errors import RetainError
from retain.methods.base import Method, register


@dataclass
class MoELoRAOptions:
    r: Annotated[int, POSITIVE] = 16
    """total rank, split equally over the experts"""
    alpha: Annotated[int, POSITIVE] = 32
    """scaling numerator: the update is (alpha / r) * sum_e g_e B_e A_e"""
    experts: Annotated[int, POSITIVE] = 8
    """number of experts per layer"""
    dropout: Annotated[float, Range(ge=0, le=0.999)] = 0.05
    """dropout on the experts' input"""
    target_modules: str = ""
    """regex of the modules to adapt (empty: the LLM's attention and MLP projections)"""
    train_projector: bool = True
    """also train the vision-to-language projector"""


class MoELoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: int, experts: int, dropout: float = 0.0):
        super().__init__()
        if r % experts:
            raise RetainError(f"MoELoRA: the rank {r} must split equally over {experts} experts.")
        self.base, self.experts, self.scaling = base, experts, alpha / r
        rank = r // experts
        self.lora_A = nn.Parameter(torch.empty(experts, rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(experts, base.out_features, rank))
        self.lora_router = nn.Linear(base.in_features, experts, bias=False)
        for e in range(experts):
            nn.init.kaiming_uniform_(self.lora_A.data[e], a=math.sqrt(5))
        nn.init.zeros_(self.lora_router.weight)  # uniform routing at the start
        self.lora_task_bias = nn.ParameterList()  # CL-MoE's task-level router: one logit vector per task
        self.active_task = -1  # which task's bias applies (-1: none)
        self.dropout = nn.Dropout(dropout)
        self.to(base.weight.device, base.weight.dtype)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) routing weights of each token; they sum to one."""
        logits = self.lora_router(x).float()
        if self.active_task >= 0:
            logits = logits + self.lora_task_bias[self.active_task].float()
        return F.softmax(logits, dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        low = torch.einsum("...i,eri->...er", h, self.lora_A)  # (..., E, rank)
        up = torch.einsum("...er,eor->...eo", low, self.lora_B)  # (..., E, out)
        mixed = (self.gates(x).unsqueeze(-1) * up).sum(-2)
        return self.base(x) + self.scaling * mixed


def inject_moelora(model: nn.Module, opts: MoELoRAOptions) -> list[str]:
    """Wrap every `nn.Linear` whose name matches the target regex; return their names."""
    from retain.models.mllm import LM_TARGETS

    pattern = re.compile(opts.target_modules or LM_TARGETS)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    if not names:
        raise RetainError(f"MoELoRA found no linear layer matching {pattern.pattern!r}.")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, MoELoRALinear(getattr(parent, child), opts.r, opts.alpha, opts.experts, opts.dropout))
    model.train(model.training)  # the new modules follow the model's mode
    return names


def moe_layers(model: nn.Module) -> list[tuple[str, MoELoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MoELoRALinear)]


@register
class MoELoRA(Method):
    name = "moelora"
    Options = MoELoRAOptions
    families = ("mllm",)

    def setup(self, model) -> None:
        inject_moelora(model.model, self.opts)

    def trainable(self, model):
        mine = [p for n, p in model.named_parameters() if ".lora_" in n]
        return mine + (model.projector_parameters() if self.opts.train_projector else [])
