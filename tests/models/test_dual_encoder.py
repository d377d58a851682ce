"""The dual-encoder interface over a tiny random Hugging Face CLIPModel saved to disk."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retain.errors import RetainError
from retain.registry import load_dual_encoder


def test_hf_clip_folder_loads_and_matches_clipmodel(tiny_clip_dir):
    from transformers import CLIPModel

    enc = load_dual_encoder(str(tiny_clip_dir))
    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    images = np.random.default_rng(0).integers(0, 255, (3, 20, 20, 1), dtype=np.uint8)
    pixels = enc.preprocess(images)
    assert pixels.shape == (3, 3, 16, 16)
    # Same numbers as CLIPModel's own image and text features.
    ref_img = clip.get_image_features(pixel_values=pixels)
    ref_img = getattr(ref_img, "pooler_output", ref_img)
    torch.testing.assert_close(enc.encode_image(pixels), F.normalize(ref_img, dim=-1))
    tokens = enc.tokenize(["a red circle.", "a photo of a dog."])
    ref_txt = clip.get_text_features(**tokens)
    ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
    torch.testing.assert_close(enc.encode_text(["a red circle.", "a photo of a dog."]), F.normalize(ref_txt, dim=-1))


def test_taps_are_embedding_and_block_outputs(tiny_clip_dir):
    enc = load_dual_encoder(str(tiny_clip_dir))
    pixels = torch.randn(2, 3, 16, 16)
    feats, taps = enc.image_forward(pixels, taps=(0, 2, 4))
    assert feats.shape == (2, 16)
    assert [t.shape for t in taps] == [(2, 17, 32)] * 3
    # tap 0 is the embedding output after the pre-LayerNorm
    emb = enc.vision.pre_layrnorm(enc.vision.embeddings(pixels))
    torch.testing.assert_close(taps[0], emb)


def test_zero_shot_head_is_normalised_template_mean(tiny_clip_dir):
    enc = load_dual_encoder(str(tiny_clip_dir))
    head = enc.zero_shot_head(["cat", "dog"], ["a {}.", "a photo of a {}."])
    e = enc.encode_text(["a cat.", "a photo of a cat."])
    torch.testing.assert_close(head[0], F.normalize(e.mean(0), dim=0))
    assert torch.allclose(head.norm(dim=-1), torch.ones(2))


def test_unknown_model_name_is_a_clear_error(tmp_path):
    with pytest.raises(RetainError, match="Unknown dual encoder 'not-a-model'"):
        load_dual_encoder("not-a-model")
    with pytest.raises(RetainError, match="Could not load the CLIP model"):
        load_dual_encoder("hf:nobody/does-not-exist-clip")
