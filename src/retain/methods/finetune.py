"""Full fine-tuning from the zero-shot-initialised head (FT, ZS-init), the plain baseline."""

from retain.methods.base import Method, register


@register
class FineTune(Method):
    name = "finetune"
