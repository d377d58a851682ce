"""Adapter-only fine-tuning of an MLLM: the vision-to-language projector trains, the
vision tower and the LLM stay frozen (EMT's "adapter" variant, LLaVA's stage 1)."""

from retain.methods.base import MLLMMethod, register


@register
class Adapter(MLLMMethod):
    name = "adapter"
