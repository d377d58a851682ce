"""FLYP (Goyal et al., 2023): fine-tune like you pre-train.

Both towers train with the loss the model was pre-trained with (CLIP's softmax contrastive
loss, SigLIP's sigmoid loss: `DualEncoder.contrastive_loss`) between each image and a
caption made from its class name and a random prompt template; the classification head of
every task is the zero-shot head of the current text tower (recomputed after each task).
"""

from __future__ import annotations

import numpy as np
import torch

from retain.methods.base import Method, TaskContext, register


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
        return ctx.model.encoder.contrastive_loss(outputs["features"], outputs["text_features"],
                                                  batch["caption_of_item"])

    def after_task(self, ctx: TaskContext) -> None:
        with torch.no_grad():
            for task in ctx.tasks:
                ctx.model.head(task.name).copy_(ctx.model.zero_shot_weights(task))
