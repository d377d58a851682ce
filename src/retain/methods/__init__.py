"""Continual fine-tuning methods, one file each, registered by name.

`base` holds the `Method` hooks and `@register`; `registry` imports every method and
creates one by name; `lora` and `routing` hold the parts several methods share.
"""

from retain.methods.base import METHODS, Method, TaskContext, is_mllm, register
from retain.methods.registry import Variant, create_method, expand_methods, load_plugins, options_dict
from retain.methods import keeplora, merging, mrlora, smolora  # noqa: F401, E402  (each import registers its methods)

__all__ = ["METHODS", "Method", "TaskContext", "Variant", "create_method", "expand_methods", "is_mllm",
           "load_plugins", "options_dict", "register"]
