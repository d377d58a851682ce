"""Continual fine-tuning methods, one file each, registered by name."""

from retain.methods import (  # noqa: F401  (each import registers its method)
    adapter,
    clmoe,
    disco,
    ewc,
    finetune,
    flyp,
    hide,
    l2sp,
    ldifs,
    linear_probe,
    lora_ft,
    lp_ft,
    modalprompt,
    moelora,
    olora,
    replay,
    sefe,
    wings,
    wise_ft,
    zero_shot,
)
from retain.methods.base import METHODS, Method, MLLMMethod, TaskContext, create_method, register

__all__ = ["METHODS", "MLLMMethod", "Method", "TaskContext", "create_method", "register"]
