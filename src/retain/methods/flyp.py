"""FLYP (Goyal et al., 2023): fine-tune like you pre-train.

Both towers train with CLIP's contrastive loss between each image and a caption made
from its class name and a random prompt template; the classification head of every task
is the zero-shot head of the current text tower (recomputed after each task).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from retain.methods.base import Method, TaskContext, register


def contrastive_loss(image_features, text_features, caption_of_item, logit_scale) -> torch.Tensor:
    """Symmetric InfoNCE where items sharing a caption are all positives of it."""
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, U)
    positives = F.one_hot(caption_of_item, txt.shape[0]).T.float()  # (U, B)
    loss_i = F.cross_entropy(logits, caption_of_item)
    loss_t = -(logits.T.log_softmax(-1) * positives).sum(1).div(positives.sum(1)).mean()
    return (loss_i + loss_t) / 2


@register
class FLYP(Method):
    name = "flyp"

    def trainable(self, model):
        enc = model.encoder
        return [*super().trainable(model), *enc.text.parameters(), *enc.text_projection.parameters()]

    def before_task(self, ctx: TaskContext) -> None:
        self.rng = np.random.default_rng(ctx.seed)

    def text_inputs(self, batch: dict, ctx: TaskContext) -> dict:
        by_name = {t.name: t for t in ctx.tasks}
        captions = []
        for head, label in zip(batch["heads"], batch["labels"].tolist()):
            task = by_name[head]
            captions.append(task.templates[self.rng.integers(len(task.templates))].format(task.class_names[label]))
        unique, inverse = np.unique(captions, return_inverse=True)
        batch["caption_of_item"] = torch.from_numpy(inverse).to(batch["labels"].device)
        return ctx.model.encoder.tokenize(list(unique))

    def task_loss(self, batch, outputs, ctx) -> torch.Tensor:
        return contrastive_loss(outputs["features"], outputs["text_features"], batch["caption_of_item"],
                                outputs["logit_scale"])

    def after_task(self, ctx: TaskContext) -> None:
        with torch.no_grad():
            for task in ctx.tasks:
                ctx.model.head(task.name).copy_(ctx.model.zero_shot_weights(task))
