"""A dual encoder with one classification head per task (task-incremental).

Each head starts from the zero-shot head (class-prompt embeddings times the logit
scale), as in LDIFS/WiSE-FT's "ZS-init"; logits are the normalised image features
times the head. Every parameter the loss touches is used inside `forward`, so the
module can be wrapped by DistributedDataParallel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retain.data.task import Task
from retain.models.dual_encoder import DualEncoder


def head_key(task_name: str) -> str:
    return task_name.replace(".", "_")


class ImageClassifier(nn.Module):
    def __init__(self, encoder: DualEncoder, tasks: list[Task]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ParameterDict()
        for task in tasks:
            self.heads[head_key(task.name)] = nn.Parameter(self.zero_shot_weights(task))

    def zero_shot_weights(self, task: Task) -> torch.Tensor:
        """(C, E) zero-shot head of `task` from the current text tower, times the logit scale."""
        head = self.encoder.zero_shot_head(task.class_names, task.templates)
        return (head * self.encoder.logit_scale.exp()).detach().clone()

    def head(self, task_name: str) -> nn.Parameter:
        return self.heads[head_key(task_name)]

    def forward(self, pixel_values: torch.Tensor, heads: list[str] | None = None,
                taps: tuple[int, ...] = (), text: dict | None = None) -> dict:
        """Image features, per-head logits, tapped states and (optionally) text features.

        Args:
            pixel_values: (B, 3, S, S) preprocessed images.
            heads: the task name of each item; items are scored by their own task's head.
            taps: block indices whose hidden states to return (see DualEncoder.image_forward).
            text: tokenised captions (input_ids, attention_mask) to encode as well.
        Returns:
            {"features": (B, E) unnormalised, "logits": {task: (n_task, C_task)},
             "positions": {task: LongTensor of item positions}, "taps": [(B, T, D)],
             "text_features": (N, E) or None}
        """
        feats, tapped = self.encoder.image_forward(pixel_values, taps)
        normed = F.normalize(feats, dim=-1)
        logits, positions = {}, {}
        for name in dict.fromkeys(heads or []):
            pos = torch.tensor([i for i, h in enumerate(heads) if h == name], device=normed.device)
            positions[name] = pos
            logits[name] = normed[pos] @ self.head(name).T
        text_feats = self.encoder.text_forward(**text) if text is not None else None
        return {"features": feats, "logits": logits, "positions": positions, "taps": tapped,
                "text_features": text_feats, "logit_scale": self.encoder.logit_scale}

    @torch.no_grad()
    def predict(self, pixel_values: torch.Tensor, task_name: str) -> torch.Tensor:
        feats, _ = self.encoder.image_forward(pixel_values)
        return F.normalize(feats, dim=-1) @ self.head(task_name).T


def classification_loss(outputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every item under its own task's head, averaged over items."""
    total, count = 0.0, 0
    for name, logits in outputs["logits"].items():
        pos = outputs["positions"][name]
        total = total + F.cross_entropy(logits, labels[pos], reduction="sum")
        count += len(pos)
    return total / max(count, 1)
