"""LoRA fine-tuning of an MLLM (EMT's "adapter + LoRA" variant, MCITlib's LoRA-FT).

Low-rank adapters (Hu et al., 2022) on the LLM's attention and MLP projections, through
PEFT, trained with the projector; the vision tower stays frozen. One set of adapters is
trained through the whole sequence.
"""

from __future__ import annotations

from retain.methods.base import Method, register
from retain.methods.lora import LoRAOptions, inject_lora


@register
class LoRAFT(Method):
    name = "lora_ft"
    Options = LoRAOptions
    families = ("mllm",)

    def setup(self, model) -> None:
        inject_lora(model, self.opts)

    def trainable(self, model):
        lora = [p for n, p in model.named_parameters() if "lora_" in n]
        return lora + (model.projector_parameters() if self.opts.train_projector else [])
