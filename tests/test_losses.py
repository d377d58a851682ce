"""The shared contrastive loss against a direct computation."""

import math

import pytest
import torch

from retain.losses import contrastive_loss


def test_contrastive_loss_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    caption = torch.tensor([0, 1, 0])  # items 0 and 2 share caption 0
    scale = torch.tensor(0.0)  # exp(0) = 1
    # normalised images: e0, e1, e0 -> logits rows [1,0], [0,1], [1,0]
    li = -math.log(math.e / (math.e + 1))  # every item's own caption has logit 1 vs 0
    # text 0: logits over items [1, 0, 1], positives items 0 and 2; text 1: [0, 1, 0], positive item 1
    z0 = 2 * math.e + 1
    lt0 = -(math.log(math.e / z0) * 2) / 2
    lt1 = -math.log(math.e / (math.e + 2))
    expected = (li + (lt0 + lt1) / 2) / 2
    assert float(contrastive_loss(img, txt, caption, scale)) == pytest.approx(expected, rel=1e-6)
