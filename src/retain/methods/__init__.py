"""Continual fine-tuning methods, one file each, registered by name."""

from retain.methods import (  # noqa: F401  (each import registers its method)
    ewc,
    finetune,
    flyp,
    l2sp,
    ldifs,
    linear_probe,
    lp_ft,
    replay,
    wise_ft,
    zero_shot,
)
from retain.methods.base import METHODS, Method, TaskContext, create_method, register

__all__ = ["METHODS", "Method", "TaskContext", "create_method", "register"]
