"""WINGS injected into a tiny LLaVA: a no-op until it trains, text-only skips the visual learner."""

import numpy as np
import pytest
import torch

from direct import option_logprob
from retain.wings.inject import inject_wings


@pytest.fixture
def mllm(tiny_llava_dir):
    from retain.registry import load_mllm

    torch.manual_seed(0)
    return load_mllm(str(tiny_llava_dir))


def batches(mllm):
    ims = [np.full((8, 8, 3), 30 * k, np.uint8) for k in range(2)]
    image = mllm.training_batch(ims, ["What is it?", "Which colour is this shape?"], ["a", "b"])
    text = mllm.training_batch(None, ["What is 2 plus 3?", "Name a fruit."], ["5", "apple"])
    for b in (image, text):
        b.pop("labels")
    return image, text


def logits(mllm, batch):
    with torch.no_grad():
        return mllm.model(**batch).logits


def randomise(wings, part):
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in wings.layers:
            for lr in (getattr(layer, part).q, getattr(layer, part).k, getattr(layer, part).v, getattr(layer, part).o):
                lr.B.normal_(0, 0.5)


def test_injection_is_a_no_op_until_the_learners_train(mllm):
    image, text = batches(mllm)
    before = [logits(mllm, image), logits(mllm, text)]
    answer_before = mllm.generate([np.zeros((8, 8, 3), np.uint8)], ["Describe it."], max_new_tokens=5)
    wings = inject_wings(mllm.model, rank=4)
    assert torch.allclose(logits(mllm, image), before[0], atol=1e-5)
    assert torch.allclose(logits(mllm, text), before[1], atol=1e-5)
    assert mllm.generate([np.zeros((8, 8, 3), np.uint8)], ["Describe it."], max_new_tokens=5) == answer_before
    names = [n for n, _ in mllm.model.named_parameters() if ".wings." in f".{n}"]
    assert len(names) == 2 * len(wings.layers) * 8 + 2 * len(wings.layers)  # A, B of q, k, v, o per learner + router


def test_text_only_input_skips_the_visual_learner(mllm):
    image, text = batches(mllm)
    wings = inject_wings(mllm.model, rank=4)
    plain_image, plain_text = logits(mllm, image), logits(mllm, text)
    randomise(wings, "visual")
    assert torch.allclose(logits(mllm, text), plain_text, atol=1e-6)  # untouched without an image
    assert not torch.allclose(logits(mllm, image), plain_image, atol=1e-3)
    randomise(wings, "textual")
    assert not torch.allclose(logits(mllm, text), plain_text, atol=1e-3)


def test_generation_with_trained_learners_matches_full_forwards(mllm):
    """The hooks carry the features through the KV cache: greedy decoding step by step equals
    re-running the whole sequence each step. In float64: the learners' N(0, 0.5) weights make
    the logits sensitive enough that float32 rounding alone changes greedy tokens on some CPUs."""
    wings = inject_wings(mllm.model, rank=4)
    randomise(wings, "visual")
    randomise(wings, "textual")
    mllm.model.to(torch.float64)
    img = np.full((8, 8, 3), 90, np.uint8)
    answer = mllm.generate([img], ["Describe it."], max_new_tokens=4)[0]
    enc = mllm._encode([img], [mllm.chat_prompt("Describe it.")], "left")
    ids = enc["input_ids"]
    for _ in range(4):
        with torch.no_grad():
            out = mllm.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=enc["pixel_values"])
        nxt = out.logits[0, -1].argmax().view(1, 1)
        if nxt.item() == mllm.tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, nxt], 1)
    full = mllm.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert answer == full


@pytest.mark.parametrize("stage", [1, 2])
def test_gradients_reach_only_what_the_stage_trains(mllm, stage):
    from retain.methods import create_method
    from retain.methods.wings import stage_parameters

    method = create_method("wings", {"stage": stage, "rank": 4}, family="mllm")
    method.setup(mllm)
    wings = mllm.model.wings
    randomise(wings, "visual")
    randomise(wings, "textual")  # so every learner part has a gradient path
    trainable = {id(p) for p in method.trainable(mllm)}
    for p in mllm.parameters():
        p.requires_grad_(id(p) in trainable)
    batch = mllm.training_batch([np.full((8, 8, 3), 60, np.uint8)] * 2, ["What is it?", "Which?"], ["a", "b"])
    mllm.model(**batch).loss.backward()
    got = {n for n, p in mllm.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    expected = {n for n, p in mllm.model.named_parameters() if id(p) in trainable}
    assert got <= expected
    assert any("wings.layers.0.visual" in n for n in got) and any("multi_modal_projector" in n for n in got)
    in_stage2 = [n for n in got if "textual" in n or "router" in n or n.startswith("model.language_model")]
    assert bool(in_stage2) == (stage == 2)
    assert not any("vision_tower" in n for n in got)
    assert stage_parameters(mllm, 1) and len(stage_parameters(mllm, 2)) > len(stage_parameters(mllm, 1))


@pytest.fixture
def float64_softmax(monkeypatch):
    """Softmax in float64 for float64 inputs. transformers' eager attention (which WINGS needs,
    for its attention weights) computes its softmax in float32 whatever the model's dtype: with
    the randomised learners that float32 island put the two computations 3.4e-9 apart on one x86
    CPU and under 1e-9 on another; in float64 throughout they agree to 1e-14."""
    softmax = torch.nn.functional.softmax

    def float64_aware(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim, dtype=None if x.dtype == torch.float64 else dtype)

    monkeypatch.setattr(torch.nn.functional, "softmax", float64_aware)


def test_option_scoring_through_an_expanded_cache_matches_full_forwards(mllm, float64_softmax):
    """Option scoring runs every option at once over the prompt's cache as a prefix tree (the
    learners must see the tree's mask, not a causal one: they saw siblings and differed by 4e-4),
    or with the cache repeated once per option (the learners' features follow). In float64
    throughout, where the computations must agree to rounding (~1e-14 here): a cache the hooks
    did not see (transformers renamed `past_key_values` to `cache`) differed by 4e-3."""
    wings = inject_wings(mllm.model, rank=4)
    randomise(wings, "visual")
    randomise(wings, "textual")
    mllm.model.to(torch.float64)
    ims = [np.full((8, 8, 3), 40 * k, np.uint8) for k in range(3)]  # two batches: state must not carry over
    options = ["golden retriever", "golden eagle", "a red circle", "7"]
    scores = mllm.loglik_many(ims, "What is it?", options, batch_size=2)
    for img, row in zip(ims, scores):
        enc = mllm._encode([img], [mllm.chat_prompt("What is it?")], "left")
        for opt, score in zip(options, row):
            assert score == pytest.approx(option_logprob(mllm, enc, opt), abs=1e-9)
    mllm._tree_attention = lambda: False  # the cache repeated per option
    repeated = mllm.loglik_many(ims, "What is it?", options, batch_size=2)
    assert np.asarray(repeated) == pytest.approx(np.asarray(scores), abs=1e-9)
