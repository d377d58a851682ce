"""HiDe-LLaVA (Guo et al., 2025): hierarchical decoupling of task-specific and general knowledge.

Each task trains its own LoRA adapter on every adapted layer. At inference the layers
below the top one use the fusion of all tasks' adapters (the mean of their updates:
each active with its scaling divided by the number of tasks), and the top layer uses
the one task expert whose mean training feature is most cosine-similar to the item's
(features as in `retain.methods.routing`).
"""

from __future__ import annotations

import re

from retain.methods.base import register
from retain.methods.lora import lora_layers
from retain.methods.routing import RoutedLoRA

LAYER = re.compile(r"layers\.(\d+)\.")


def layer_index(module_name: str) -> int:
    m = LAYER.search(module_name)
    return int(m.group(1)) if m else -1


@register
class HiDe(RoutedLoRA):
    name = "hide"
    plain_updates = "it fuses the lower layers by rescaling each adapter's update, which DoRA's magnitude rescaling changes."

    def configure(self, task: int) -> None:
        layers = lora_layers(self.mllm.model)
        top = max(layer_index(n) for n, _ in layers)
        k = len(self.adapters)
        base_scale = self.opts.alpha / self.opts.r
        for name, layer in layers:
            if layer_index(name) == top:
                layer.set_adapter([self.adapters[task]])
                for a in self.adapters:
                    layer.scaling[a] = base_scale
            else:
                layer.set_adapter(list(self.adapters))
                for a in self.adapters:
                    layer.scaling[a] = base_scale / k

    def restore(self, active) -> None:
        base_scale = self.opts.alpha / self.opts.r
        for _, layer in lora_layers(self.mllm.model):
            for a in self.adapters:
                layer.scaling[a] = base_scale
        super().restore(active)
