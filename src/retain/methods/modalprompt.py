"""ModalPrompt (Zeng et al., 2024): per-task soft prompts picked by image and text features.

Each task learns `length` prompt vectors; the model and its adapters stay frozen. The
prompts sit at placeholder tokens put before every question (`<|retain_prompt_i|>`, added
to the tokenizer; in training batches by `extend_batch`, at inference by the `inference`
context); a hook on the input embedding replaces the placeholders' embeddings by the
active task's vectors. At inference an item gets the prompts of the task whose mean
training feature (image and question features, as DISCO's) is most cosine-similar.
Prompt tuning wants a larger learning rate than adapters: `lr_scale` multiplies train.lr.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn

from retain.config import POSITIVE
from retain.methods.base import Method, TaskContext, register
from retain.methods.lora import base_llava
from retain.methods.routing import Routed

TOKEN = "<|retain_prompt_{}|>"


@dataclass
class ModalPromptOptions:
    length: Annotated[int, POSITIVE] = 10
    """prompt vectors per task"""
    lr_scale: Annotated[float, POSITIVE] = 50.0
    """prompt learning rate as a multiple of train.lr"""


class PromptBank(nn.Module):
    """The prompts of every task, kept on the embedding module so they checkpoint with it."""

    def __init__(self):
        super().__init__()
        self.tasks = nn.ParameterList()
        self.active = 0
        self.first_id = 0

    def hook(self, module, inputs, output):
        ids = inputs[0]
        if not len(self.tasks):
            return output
        length = self.tasks[0].shape[0]
        mask = (ids >= self.first_id) & (ids < self.first_id + length)
        if not mask.any():
            return output
        out = output.clone()
        out[mask] = self.tasks[self.active][ids[mask] - self.first_id].to(out.dtype)
        return out


@register
class ModalPrompt(Routed, Method):
    name = "modalprompt"
    Options = ModalPromptOptions
    families = ("mllm",)

    def setup(self, model) -> None:
        self.mllm = model
        self.lr_scale = self.opts.lr_scale
        tok = model.tokenizer
        tokens = [TOKEN.format(i) for i in range(self.opts.length)]
        tok.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
        base_llava(model).resize_token_embeddings(len(tok))
        embedding = base_llava(model).get_input_embeddings()
        self.bank = PromptBank()
        self.bank.first_id = tok.convert_tokens_to_ids(tokens[0])
        if tok.convert_tokens_to_ids(tokens) != list(range(self.bank.first_id, self.bank.first_id + len(tokens))):
            raise RuntimeError("the prompt tokens did not get consecutive ids")
        embedding.add_module("retain_prompts", self.bank)
        embedding.register_forward_hook(self.bank.hook)
        self.prefix = "".join(tokens) + " "
        self.setup_router(model)

    def before_task(self, ctx: TaskContext) -> None:
        embedding = base_llava(self.mllm).get_input_embeddings()
        while len(self.bank.tasks) <= ctx.index:
            g = torch.Generator().manual_seed(ctx.seed + len(self.bank.tasks))
            rows = torch.randint(0, self.bank.first_id, (self.opts.length,), generator=g)
            init = embedding.weight.detach()[rows.to(embedding.weight.device)].clone()
            self.bank.tasks.append(nn.Parameter(init))
        self.bank.active = ctx.index
        self.add_prototype(ctx)

    def extend_batch(self, batch: dict, ctx: TaskContext) -> dict:
        """The task's prompt tokens before every training question."""
        return {**batch, "questions": [self.prefix + q for q in batch["questions"]]}

    def trainable(self, model):
        return [self.bank.tasks[self.bank.active]]

    def inference(self, model):
        """Routed prompts from the first task on (row 0 is the model as it came)."""
        return super().inference(model) if len(self.bank.tasks) else contextlib.nullcontext()

    @contextlib.contextmanager
    def routed(self, task: int):
        was = self.bank.active
        self.bank.active = task
        try:
            yield
        finally:
            self.bank.active = was

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"tasks": torch.tensor(len(self.bank.tasks)), **self.router.state_dict()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        embedding = base_llava(self.mllm).get_input_embeddings()
        while len(self.bank.tasks) < int(state["tasks"]):
            self.bank.tasks.append(nn.Parameter(torch.zeros(self.opts.length, embedding.weight.shape[1],
                                                            device=embedding.weight.device)))
        self.router.load_state_dict(state)
