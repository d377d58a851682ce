"""Losses shared by pre-training (the zoo) and fine-tuning methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, caption_of_item: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch where several items may share one caption.

    Args:
        image_features: (B, E) image embeddings (normalised here).
        text_features: (U, E) embeddings of the batch's distinct captions.
        caption_of_item: (B,) index of each item's caption among the U.
        logit_scale: log of the inverse temperature (capped at 100 after exp, as CLIP).
    Image to text is a U-way cross-entropy; text to image treats every item with that
    caption as a positive (mean log-probability over the positives).
    """
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, U)
    positives = F.one_hot(caption_of_item, txt.shape[0]).T.float()  # (U, B)
    loss_i = F.cross_entropy(logits, caption_of_item)
    loss_t = -(logits.T.log_softmax(-1) * positives).sum(1).div(positives.sum(1)).mean()
    return (loss_i + loss_t) / 2
