"""CL-MoE (Huai et al., 2025): dual-router mixture of LoRA experts with dual momentum.

On MoELoRA's layers (E LoRA experts mixed per token):
- Dual router: the gate is softmax(R x + b_t), an instance-level router R shared by all
  tasks plus a task-level logit vector b_t learned for task t. At inference the task-level
  vector is that of the task whose mean training feature is most cosine-similar to the
  item's (features as DISCO's), so no task id is needed.
- Dual momentum: after task t, each expert e of each layer is blended with its state at
  the task's start, theta_e = m_e * theta_e_old + (1 - m_e) * theta_e_new, where m_e is
  `momentum_specific` (0.1) for the experts the task relied on (mean gate above 1/E on
  its training items) and `momentum_shared` (0.9) for the others: what the task used is
  kept, what it barely used stays close to what earlier tasks left.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn

from retain.config import FRACTION, POSITIVE
from retain.methods.base import TaskContext, register
from retain.methods.moelora import MoELoRA, MoELoRAOptions, moe_layers
from retain.methods.routing import Routed


@dataclass
class CLMoEOptions(MoELoRAOptions):
    momentum_specific: Annotated[float, FRACTION] = 0.1
    """momentum of the experts the task relied on (low: keep the new weights)"""
    momentum_shared: Annotated[float, FRACTION] = 0.9
    """momentum of the experts it barely used (high: keep the old weights)"""
    usage_items: Annotated[int, POSITIVE] = 64
    """training items whose gates measure each expert's usage"""


def blend(old: torch.Tensor, new: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    """Per-expert momentum update along dimension 0: m * old + (1 - m) * new."""
    m = momentum.view(-1, *([1] * (old.dim() - 1))).to(old.dtype)
    return m * old + (1 - m) * new


@register
class CLMoE(Routed, MoELoRA):
    name = "clmoe"
    Options = CLMoEOptions

    def setup(self, model) -> None:
        super().setup(model)
        self.setup_router(model)

    def layers(self):
        return moe_layers(self.mllm.model)

    def set_task(self, task: int) -> None:
        for _, layer in self.layers():
            layer.active_task = task

    def before_task(self, ctx: TaskContext) -> None:
        for _, layer in self.layers():
            while len(layer.lora_task_bias) <= ctx.index:
                layer.lora_task_bias.append(nn.Parameter(torch.zeros(layer.experts, device=layer.lora_A.device)))
        self.set_task(ctx.index)
        self.start = {n: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone()) for n, layer in self.layers()}
        self.add_prototype(ctx)

    def trainable(self, model):
        task = max(layer.active_task for _, layer in self.layers())
        mine = [p for n, p in model.named_parameters() if ".lora_" in n and ".lora_task_bias." not in n]
        mine += [layer.lora_task_bias[task] for _, layer in self.layers()]
        return mine + (model.projector_parameters() if self.opts.train_projector else [])

    def saved_parameters(self, model):
        return self.trainable(model) + [b for _, layer in self.layers() for b in layer.lora_task_bias]

    @torch.no_grad()
    def expert_usage(self, split) -> dict[str, torch.Tensor]:
        """Mean gate of every expert of every layer over up to `usage_items` training items."""
        sums, counts, hooks = {}, {}, []
        for name, layer in self.layers():
            def record(module, inputs, output, name=name):
                g = module.gates(inputs[0]).float().reshape(-1, module.experts)
                sums[name] = sums.get(name, 0) + g.sum(0)
                counts[name] = counts.get(name, 0) + g.shape[0]
            hooks.append(layer.register_forward_hook(record))
        try:
            n = min(self.opts.usage_items, len(split))
            for s in range(0, n, 8):
                idx = list(range(s, min(s + 8, n)))
                images = [split.images[i] for i in idx]
                batch = self.mllm.training_batch(None if images[0] is None else images,
                                                 [split.questions[i] for i in idx], [split.answers[i] for i in idx])
                batch.pop("labels")
                self.mllm.model(**batch)
        finally:
            for h in hooks:
                h.remove()
        return {n: sums[n] / counts[n] for n in sums}

    @torch.no_grad()
    def after_task(self, ctx: TaskContext) -> None:
        usage = self.expert_usage(ctx.train)
        for name, layer in self.layers():
            relied = usage[name] > 1.0 / layer.experts
            momentum = torch.where(relied, torch.tensor(self.opts.momentum_specific),
                                   torch.tensor(self.opts.momentum_shared)).to(layer.lora_A.device)
            old_a, old_b = self.start[name]
            layer.lora_A.copy_(blend(old_a, layer.lora_A, momentum))
            layer.lora_B.copy_(blend(old_b, layer.lora_B, momentum))

    @contextlib.contextmanager
    def routed(self, task: int):
        was = [layer.active_task for _, layer in self.layers()]
        self.set_task(task)
        try:
            yield
        finally:
            for (_, layer), t in zip(self.layers(), was):
                layer.active_task = t

    def state_dict(self) -> dict[str, torch.Tensor]:
        tasks = len(self.layers()[0][1].lora_task_bias) if self.layers() else 0
        return {"tasks": torch.tensor(tasks), **self.router.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for _, layer in self.layers():
            while len(layer.lora_task_bias) < int(state["tasks"]):
                layer.lora_task_bias.append(nn.Parameter(torch.zeros(layer.experts, device=layer.lora_A.device)))
        self.set_task(int(state["tasks"]) - 1)
        self.router.load_state_dict(state)
