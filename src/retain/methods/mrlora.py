"""MR-LoRA (Zhao et al., 2025, "MLLM-CL", arXiv 2506.05453): one low-rank expert per task,
and the MLLM itself, with a router adapter, picking the expert that answers.

Parameter isolation: task t trains its own LoRA adapter (its expert) from the base model,
the others inactive; with `train_projector`, its own copy of the projector too, started
from the projector the model came with (the reference trains every expert separately
from the pre-trained LLaVA). Nothing of an earlier expert changes afterwards.

Routing: after each task, `router_samples` (20) training items of each task so far form
the router's few-shot set (the reference's "Router_train20"), and the router, a LoRA
adapter of the same MLLM on the original projector, is trained on them for
`router_epochs` (40) at `router_lr` (5e-6, cosine with 3% warm-up: the reference's
settings) to answer the letter of the item's task after the routing prompt

    There are N expert models, one per task:  A: <task 1>  B: <task 2> ...
    Question: <question>  Which expert should answer the question? ...

At inference an item (image and question) goes to the expert

    expert(x) = argmax_t log p_router(letter_t | routing prompt of x)

and is answered with that expert's adapter and projector (`MLLM.routing`).

Departures from the reference code (bjzhb666/MLLM-CL), each for a reason: there the router
generates its answer and an item whose answer is no letter goes to a random expert; here
the letters' likelihoods are compared, so every item gets a valid expert. There the router
is trained once, after the last task, starting from a checkpoint with the experts merged
in, and its prompt describes each domain in hand-written words; here a fresh router
adapter is trained after every task (the accuracy matrix needs a router after each task)
and the experts are named by their tasks' names.
"""

from __future__ import annotations

import contextlib
import math
import string
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from retain.config import POSITIVE
from retain.errors import RetainError
from retain.methods.base import TaskContext, register
from retain.methods.lora import inject_lora, lora_layers
from retain.methods.per_task_lora import PerTaskLoRA, PerTaskLoRAOptions
from retain.progress import bar
from retain.schedule import warmup_cosine

ROUTER = "router"
"""the router's PEFT adapter"""
LETTERS = string.ascii_uppercase


@dataclass
class MRLoRAOptions(PerTaskLoRAOptions):
    r: Annotated[int, POSITIVE] = 128
    """rank of each expert (and of the router): the reference's 128"""
    alpha: Annotated[int, POSITIVE] = 256
    """scaling numerator: each update is (alpha / r) B A"""
    router_samples: Annotated[int, POSITIVE] = 20
    """training items per task in the router's few-shot set"""
    router_epochs: Annotated[int, POSITIVE] = 40
    """passes over the few-shot set each time the router is trained"""
    router_lr: Annotated[float, POSITIVE] = 5e-6
    """peak learning rate of the router (AdamW, 3% warm-up, cosine decay)"""


class ExpertRouter:
    """What `MLLM.routing` asks: ready once an expert exists, an expert per item, its context."""

    def __init__(self, method: "MRLoRA"):
        self.method = method

    def ready(self) -> bool:
        return self.method.routable > 0

    def assign(self, mllm, images, questions) -> list[int]:
        return self.method.select(images, list(questions))

    def activate(self, task: int):
        return self.method.routed(task)


@register
class MRLoRA(PerTaskLoRA):
    name = "mrlora"
    Options = MRLoRAOptions

    def setup(self, model) -> None:
        super().setup(model)
        inject_lora(model, self.opts, adapter_name=ROUTER)
        self.projector = model.projector_parameters()
        self.initial = [p.detach().clone() for p in self.projector]  # the model's own projector: the router's
        self.projectors: dict[int, list[torch.Tensor]] = {}  # each expert's projector after its task
        self.samples: dict[int, torch.Tensor] = {}  # each task's few-shot item indices
        self.routable = 0  # experts the router was trained to pick from
        self.names: list[str] = []
        self.splits: list = []
        self.router = ExpertRouter(self)

    def router_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.mllm.named_parameters() if f".{ROUTER}." in n]

    def saved_parameters(self, model):
        return self.trainable(model) + self.router_parameters()

    def before_task(self, ctx: TaskContext) -> None:
        if len(ctx.tasks) > len(LETTERS):
            raise RetainError(f"mrlora names each expert by a letter: a sequence of at most {len(LETTERS)} tasks, "
                              f"not {len(ctx.tasks)}.")
        self.names, self.splits = [t.name for t in ctx.tasks], ctx.train_splits
        super().before_task(ctx)
        if self.opts.train_projector:
            swap(self.projector, self.initial, copy=True)  # every expert starts from the model's projector

    def after_task(self, ctx: TaskContext) -> None:
        if self.opts.train_projector:
            self.projectors[ctx.index] = [p.detach().clone() for p in self.projector]
        g = torch.Generator().manual_seed(ctx.seed)
        n = min(self.opts.router_samples, len(ctx.train))
        self.samples[ctx.index] = torch.randperm(len(ctx.train), generator=g)[:n].sort().values
        self.train_router(ctx.index + 1, ctx.batch_size, ctx.seed)
        self.routable = ctx.index + 1

    # ---- the router ------------------------------------------------------------------
    def routing_prompt(self, question: str, experts: int) -> str:
        pool = "\n".join(f"{LETTERS[t]}: {self.names[t]}" for t in range(experts))
        return (f"There are {experts} expert models, one per task:\n{pool}\nQuestion: {question}\n"
                "Which expert should answer the question? Answer with the expert's letter only.")

    def train_router(self, experts: int, batch_size: int, seed: int) -> None:
        """Train a fresh router adapter to answer each few-shot item's letter."""
        items = [(t, i) for t in range(experts) for i in self.samples[t].tolist()]
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, layer in lora_layers(self.mllm.model):
                layer.reset_lora_parameters(ROUTER, True)  # A re-drawn, B zero: the router starts as the base model
                if ROUTER in layer.lora_magnitude_vector:  # DoRA: magnitude back to the weight's row norms
                    layer.lora_magnitude_vector[ROUTER].weight.copy_(layer.get_base_layer().weight.norm(dim=1))
        params = self.router_parameters()
        flags = [(p, p.requires_grad) for p in self.mllm.parameters()]
        training = self.mllm.model.training
        optimizer = torch.optim.AdamW(params, lr=self.opts.router_lr, weight_decay=0.0)
        with_image = sum(self.splits[t].images[i] is not None for t, i in items)
        total = self.opts.router_epochs * (math.ceil(with_image / batch_size)
                                           + math.ceil((len(items) - with_image) / batch_size))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, math.ceil(0.03 * total), total))
        progress = bar(total=total, desc=f"MR-LoRA router ({len(items)} items, {self.opts.router_epochs} epochs)")
        try:
            with self.use_router():
                for p in self.mllm.parameters():
                    p.requires_grad_(False)
                for p in params:
                    p.requires_grad_(True)
                self.mllm.model.train()
                for _ in range(self.opts.router_epochs):
                    order = [items[k] for k in torch.randperm(len(items), generator=g).tolist()]
                    for kind in (True, False):  # a batch holds image items only or text-only items only
                        group = [(t, i) for t, i in order if (self.splits[t].images[i] is not None) == kind]
                        for s in range(0, len(group), batch_size):
                            batch = group[s:s + batch_size]
                            images = [self.splits[t].images[i] for t, i in batch] if kind else None
                            prompts = [self.routing_prompt(self.splits[t].questions[i], experts) for t, i in batch]
                            loss = self.mllm.training_loss(images, prompts, [LETTERS[t] for t, _ in batch])
                            loss.backward()
                            optimizer.step()
                            schedule.step()
                            optimizer.zero_grad(set_to_none=True)
                            progress.update(1)
        finally:
            progress.close()
            self.mllm.model.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)

    @torch.no_grad()
    def select(self, images, questions: list[str]) -> list[int]:
        """The expert of each item: the letter the router finds most likely (one item per forward,
        so no padding moves any model family's positions)."""
        letters = list(LETTERS[:self.routable])
        out = []
        with self.use_router(), self.mllm.routing(None):  # the router's own answers are not routed
            for k, question in enumerate(questions):
                image = None if images is None else images[k]
                scores = self.mllm.loglik(image, self.routing_prompt(question, self.routable), letters)
                out.append(int(np.argmax(scores)))
        return out

    # ---- switching adapters and projectors --------------------------------------------
    @contextlib.contextmanager
    def active(self, adapters: list[str], projector: list[torch.Tensor] | None):
        """The model with only `adapters` active and, when given, `projector`'s weights."""
        base = self.mllm.model.base_model
        was = list(base.active_adapters)
        flags = [(p, p.requires_grad) for p in self.mllm.parameters()]
        base.set_adapter(adapters)
        kept = swap(self.projector, projector) if projector is not None else None
        try:
            yield
        finally:
            if kept is not None:
                swap(self.projector, kept)
            base.set_adapter(was)
            for p, flag in flags:  # set_adapter marks adapters trainable; the trainer decides that
                p.requires_grad_(flag)

    def use_router(self):
        return self.active([ROUTER], self.initial if self.opts.train_projector else None)

    def routed(self, task: int):
        return self.active([self.adapters[task]], self.projectors.get(task) if self.opts.train_projector else None)

    def inference(self, model):
        return model.routing(self.router)

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {**super().state_dict(), "routable": torch.tensor(self.routable)}
        state.update({f"samples.{t}": idx for t, idx in self.samples.items()})
        for t, tensors in self.projectors.items():
            state.update({f"projector.{t}.{j}": v.cpu() for j, v in enumerate(tensors)})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.routable = int(state["routable"])
        self.samples = {int(k.split(".")[1]): v.long() for k, v in state.items() if k.startswith("samples.")}
        for t in {int(k.split(".")[1]) for k in state if k.startswith("projector.")}:
            self.projectors[t] = [state[f"projector.{t}.{j}"].to(p.device, p.dtype)
                                  for j, p in enumerate(self.projector)]


def swap(params: list[torch.nn.Parameter], values: list[torch.Tensor], copy: bool = False) -> list[torch.Tensor]:
    """Give `params` the tensors `values` (their copies with `copy`); return the tensors they had."""
    kept = [p.data for p in params]
    for p, v in zip(params, values):
        p.data = v.clone() if copy else v
    return kept
