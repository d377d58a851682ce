"""LoRA fine-tuning of an MLLM (EMT's "adapter + LoRA" variant, MCITlib's LoRA-FT).

Low-rank adapters (Hu et al., 2022) on the LLM's attention and MLP projections, through
PEFT, trained with the projector; the vision tower stays frozen. One set of adapters is
trained through the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from retain.config import POSITIVE, Range
from retain.methods.base import MLLMMethod, register


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


def inject_lora(mllm, opts: LoRAOptions, adapter_name: str = "default") -> None:
    """Wrap `mllm.model` with PEFT LoRA adapters (a second call adds another adapter)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from retain.models.mllm import LM_TARGETS

    config = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                        target_modules=opts.target_modules or LM_TARGETS)
    training = mllm.model.training
    if isinstance(mllm.model, PeftModel):
        mllm.model.add_adapter(adapter_name, config)
    else:
        mllm.model = get_peft_model(mllm.model, config, adapter_name=adapter_name)
    mllm.model.train(training)  # new modules start in training mode; keep the model's mode


@register
class LoRAFT(MLLMMethod):
    name = "lora_ft"
    Options = LoRAOptions

    def setup(self, model) -> None:
        inject_lora(model, self.opts)

    def trainable(self, model):
        lora = [p for n, p in model.named_parameters() if "lora_" in n]
        return lora + (model.projector_parameters() if self.opts.train_projector else [])
