"""Adapter-only fine-tuning of an MLLM: the vision-to-language projector trains, the
vision tower and the LLM stay frozen (EMT's "adapter" variant, LLaVA's stage 1)."""

from retain.methods.base import Method, register


@register
class Adapter(Method):
    name = "adapter"
    families = ("mllm",)

    def trainable(self, model):
        return model.projector_parameters()
