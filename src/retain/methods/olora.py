"""O-LoRA (Wang et al., 2023): orthogonal subspaces for continual instruction tuning.

Each task trains a new LoRA adapter while the earlier ones stay frozen and active (the
model is the base plus the sum of all adapters). The new adapter's A is pushed to be
orthogonal to every earlier A of the same layer:

    L_orth = weight * sum_layers sum_{j < t} sum |A_j A_t^T|       (weight 0.05, MCITlib)

which is zero when the row spaces are orthogonal and grows with their overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import NON_NEGATIVE
from retain.methods.base import register
from retain.methods.per_task_lora import PerTaskLoRA, PerTaskLoRAOptions
from retain.methods.lora import lora_layers


@dataclass
class OLoRAOptions(PerTaskLoRAOptions):
    orthogonal_weight: Annotated[float, NON_NEGATIVE] = 0.05
    """weight of the orthogonality penalty (lambda_1)"""


def orthogonality_penalty(new: torch.Tensor, old: list[torch.Tensor]) -> torch.Tensor:
    """sum over earlier A_j of sum |A_j A_new^T| (A: rank x in_features)."""
    return sum((a.detach() @ new.T).abs().sum() for a in old) if old else new.sum() * 0.0


@register
class OLoRA(PerTaskLoRA):
    name = "olora"
    Options = OLoRAOptions

    def set_training_adapters(self, index: int) -> None:
        self.mllm.model.base_model.set_adapter(self.adapters[:index + 1])

    def loss(self, batch, outputs, ctx):
        if len(self.adapters) < 2:
            return 0.0
        total = 0.0
        for _, layer in lora_layers(self.mllm.model):
            new = layer.lora_A[self.current()].weight
            total = total + orthogonality_penalty(new, [layer.lora_A[a].weight for a in self.adapters[:-1]])
        return self.opts.orthogonal_weight * total
