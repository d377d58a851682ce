"""WINGS (Zhang et al., 2024) as a trainer method: visual and textual LoRRA learners beside
every decoder layer's attention (`retain.wings.inject`), trained in WINGS's two stages.

- stage 1: the visual learners and the projector (LLM and vision tower frozen);
- stage 2: also the textual learners, the routers and the LLM.

`stage: 2` on a model that has no learners yet injects fresh ones (a WINGS stage 2 run
normally starts from a stage-1 checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from retain.config import POSITIVE
from retain.errors import RetainError
from retain.methods.base import Method, register
from retain.methods.lora import base_llava


@dataclass
class WingsOptions:
    stage: Literal[1, 2] = 1
    """1: visual learners + projector; 2: also textual learners, routers and the LLM"""
    rank: Annotated[int, POSITIVE] = 64
    """rank of every LoRRA projection (the paper's scripts use 64)"""


def stage_parameters(mllm, stage: int) -> list:
    base = base_llava(mllm)
    wings = getattr(base, "wings", None)
    if wings is None:
        raise RetainError("This model has no WINGS learners: use the `wings` method (it injects them).")
    params = [p for layer in wings.layers for p in layer.visual.parameters()] + mllm.projector_parameters()
    if stage == 2:
        params += [p for layer in wings.layers for m in (layer.textual, layer.router) for p in m.parameters()]
        params += list(base.model.language_model.parameters())
    return params


@register
class Wings(Method):
    name = "wings"
    Options = WingsOptions
    families = ("mllm",)

    def setup(self, model) -> None:
        from retain.wings.inject import inject_wings

        if self.opts.stage not in (1, 2):
            raise RetainError(f"method_args.wings.stage must be 1 or 2, got {self.opts.stage}.")
        if getattr(base_llava(model), "wings", None) is None:
            inject_wings(model.model, rank=self.opts.rank)

    def trainable(self, model):
        return stage_parameters(model, self.opts.stage)
