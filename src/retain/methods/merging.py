"""Model merging of per-task LoRA adapters: task arithmetic and TIES-merging.

Each task trains its own LoRA adapter from the base model (the others inactive), as
DISCO's do; the model answers with the merge of the adapters trained so far. With
tau_t = (alpha / r) B_t A_t the update of task t on one weight W:

- task arithmetic (Ilharco et al., 2023, "Editing models with task arithmetic"):

      W' = W + lambda * sum_t tau_t

  The paper picks lambda on held-out validation data of every task from {0, 0.05, ..., 1};
  a continual run has no earlier tasks' validation data, so lambda is fixed, at 0.4, the
  value Yadav et al. (2023) use for task arithmetic when no validation set is available.
- TIES-merging (Yadav et al., 2023, "Resolving interference when merging models"):
  trim each tau_t to its top `density` (20%) entries by magnitude (the rest set to 0),
  elect each entry's sign as the sign of the sum of the trimmed values, and average only
  the trimmed values that agree with it (the disjoint mean):

      gamma = sgn(sum_t trim(tau_t)),   A = {t : sgn(trim(tau_t)) = gamma}
      W' = W + lambda * (1 / |A|) sum_{t in A} trim(tau_t)      (0 where A is empty)

  with lambda 1, the paper's value without validation (it searches 0.8 to 2.5 with one).

PEFT does both where it can: task arithmetic is PEFT's `add_weighted_adapter` with
`combination_type="cat"`, which concatenates the weighted factors into one adapter whose
update is exactly lambda * sum_t tau_t. TIES is PEFT's `merge_utils.ties` applied to the
updates tau_t, but not through `add_weighted_adapter`: its "ties" applies TIES to the A and
B factors separately (not to tau_t) and its "ties_svd" truncates the merged update to a low
rank, while the trimmed, sign-elected merge is a dense matrix. So the merged update is added
to each weight for the duration of the `inference` context (the adapters switched off) and
the weight is put back afterwards. Departure from the paper: the trim keeps the top 20% of
each weight matrix (as PEFT and mergekit do), not of the whole model's flattened update.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated

import torch

from retain.config import FRACTION, NON_NEGATIVE
from retain.methods.base import register
from retain.methods.lora import delta_weight, lora_layers
from retain.methods.per_task_lora import PerTaskLoRA, PerTaskLoRAOptions

MERGED = "merged"
"""the PEFT adapter task arithmetic answers with (built for each `inference` context)"""


@dataclass
class TaskArithmeticOptions(PerTaskLoRAOptions):
    scaling: Annotated[float, NON_NEGATIVE] = 0.4
    """lambda: the sum of the task vectors is scaled by it"""


@dataclass
class TIESOptions(PerTaskLoRAOptions):
    scaling: Annotated[float, NON_NEGATIVE] = 1.0
    """lambda: the disjoint mean is scaled by it"""
    density: Annotated[float, FRACTION] = 0.2
    """share of each task vector's entries kept by the trim (top-k%, k = 20)"""


def ties_merge(task_vectors: list[torch.Tensor], scaling: float, density: float) -> torch.Tensor:
    """TIES-merging of same-shaped task vectors (PEFT's `ties`, sign elected by the summed
    trimmed values), times `scaling`."""
    from peft.utils.merge_utils import ties

    weights = torch.full((len(task_vectors),), float(scaling), dtype=task_vectors[0].dtype,
                         device=task_vectors[0].device)
    return ties(task_vectors, weights, density, majority_sign_method="total")


class MergedLoRA(PerTaskLoRA):
    """Per-task adapters, trained one at a time, answered with their merge."""

    plain_updates = "it merges the tasks' updates (alpha / r) B A, which DoRA's magnitude rescaling changes."

    def inference(self, model) -> contextlib.AbstractContextManager:
        return self.merged() if self.adapters else contextlib.nullcontext()  # before the first task: the model

    def merged(self) -> contextlib.AbstractContextManager:
        """The context in which the model is the base plus the merge of every task's adapter."""
        raise NotImplementedError


@register
class TaskArithmetic(MergedLoRA):
    name = "task_arithmetic"
    Options = TaskArithmeticOptions

    @contextlib.contextmanager
    def merged(self):
        peft = self.mllm.model
        was = list(peft.base_model.active_adapters)
        flags = [(p, p.requires_grad) for p in self.mllm.parameters()]
        peft.base_model.add_weighted_adapter(self.adapters, [self.opts.scaling] * len(self.adapters), MERGED,
                                             combination_type="cat")
        peft.train(peft.training)  # the new modules start in training mode (dropout on); keep the model's mode
        peft.base_model.set_adapter([MERGED])
        try:
            yield
        finally:
            peft.base_model.set_adapter(was)
            peft.delete_adapter(MERGED)
            for p, flag in flags:  # set_adapter marks adapters trainable; the trainer decides that
                p.requires_grad_(flag)


@register
class TIES(MergedLoRA):
    name = "ties"
    Options = TIESOptions

    @contextlib.contextmanager
    def merged(self):
        saved = []
        try:
            with torch.no_grad():
                for _, layer in lora_layers(self.mllm.model):
                    weight = layer.base_layer.weight
                    tau = [delta_weight(layer, a).float() for a in self.adapters]
                    update = ties_merge(tau, self.opts.scaling, self.opts.density)
                    saved.append((weight, weight.data))
                    weight.data = (weight.data.float() + update).to(weight.dtype)  # a new tensor: the old one is kept
            with self.mllm.model.disable_adapter():
                yield
        finally:
            for weight, data in saved:
                weight.data = data
