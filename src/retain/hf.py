"""Facts about Hugging Face model objects that every floor of retain needs.

It sits on the lowest floor so that the WINGS learners (below the model wrappers), the
model wrappers, the methods and the evaluations share one definition instead of copies.
"""

from __future__ import annotations


def unwrapped(model):
    """The Hugging Face model under any PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
