"""LoRA parts shared by the MLLM methods: adapters injected through PEFT, their layers and
updates, and what a regulariser anchors.

LoRA (Hu et al., 2022): a frozen weight W gets a trainable low-rank update
(alpha / r) B A; here on the LLM's attention and MLP projections of an MLLM. With
`dora: true` the adapters are DoRA's (Liu et al., 2024, through PEFT's `use_dora`):

    W' = m * (W + (alpha / r) B A) / ||W + (alpha / r) B A||_c

with ||.||_c the norm of each output row and m a trainable magnitude per output row
(PEFT's `lora_magnitude_vector`, initialised to ||W||_c). The update is then no longer
(alpha / r) B A: a method whose math needs it (merging updates, penalising or rescaling
them) refuses `dora` with `refuse_dora`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import POSITIVE, Range
from retain.errors import RetainError
from retain.hf import unwrapped
from retain.methods.base import is_mllm, mllm_trainable


@dataclass
class LoRAOptions:
    r: Annotated[int, POSITIVE] = 16
    """rank of the adapters"""
    alpha: Annotated[int, POSITIVE] = 32
    """scaling numerator: the update is (alpha / r) * B A"""
    dropout: Annotated[float, Range(ge=0, le=0.999)] = 0.05
    """dropout on the adapters' input"""
    target_modules: str = ""
    """regex of the modules to adapt (empty: the LLM's attention and MLP projections)"""
    train_projector: bool = True
    """also train the vision-to-language projector"""
    dora: bool = False
    """DoRA adapters (Liu et al., 2024): a trainable magnitude per output row times the adapted direction"""


def refuse_dora(method: str, opts, why: str) -> None:
    """Stop a method whose math needs plain (alpha / r) B A updates when it is given `dora: true`."""
    if getattr(opts, "dora", False):
        raise RetainError(f"Method {method!r} cannot use DoRA (method_args.{method}.dora: true): {why} "
                          f"Set method_args.{method}.dora: false (lora_ft, olora, disco and mrlora take DoRA).")


def inject_lora(mllm, opts: LoRAOptions, adapter_name: str = "default") -> None:
    """Wrap `mllm.model` with PEFT LoRA adapters (a second call adds another adapter)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from retain.models.mllm import LM_TARGETS

    config = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                        target_modules=opts.target_modules or LM_TARGETS, use_dora=opts.dora)
    training = mllm.model.training
    if isinstance(mllm.model, PeftModel):
        mllm.model.add_adapter(adapter_name, config)
    else:
        mllm.model = get_peft_model(mllm.model, config, adapter_name=adapter_name)
    mllm.model.train(training)  # new modules start in training mode; keep the model's mode


def setup_mllm_adapters(model) -> None:
    """Give an MLLM the LoRA adapters of lora_ft (default options) if it has none."""
    if is_mllm(model) and not any("lora_" in n for n, _ in model.named_parameters()):
        inject_lora(model, LoRAOptions())


def encoder_parameters(model) -> list[torch.nn.Parameter]:
    """What a regulariser anchors: the image tower and projection, or an MLLM's trainable adapters."""
    if is_mllm(model):
        return mllm_trainable(model)
    enc = model.encoder
    return [*enc.vision.parameters(), *enc.visual_projection.parameters()]


def base_llava(mllm):
    """The underlying Hugging Face model, under any PEFT wrapper."""
    return unwrapped(mllm.model)


def lora_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(module name, PEFT LoRA layer) pairs of a PEFT-wrapped model."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def delta_weight(layer, adapter: str) -> torch.Tensor:
    """The update a (plain, not DoRA) LoRA adapter adds to its layer's weight: scaling * B A."""
    return layer.scaling[adapter] * (layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight)
