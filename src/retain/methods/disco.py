"""DISCO (Guo et al., 2025): one LoRA subspace per task, selected at inference.

Each task trains its own adapter (the others inactive) and keeps the running mean of its
training items' features (the model's own image and question features, adapters off,
see `retain.methods.routing`). At inference an item is answered with the adapter of the
task whose mean feature is most cosine-similar to the item's, so no task id is needed.
"""

from __future__ import annotations

from retain.methods.base import register
from retain.methods.routing import RoutedLoRA


@register
class DISCO(RoutedLoRA):
    name = "disco"
