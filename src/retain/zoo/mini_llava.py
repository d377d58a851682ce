"""Building mini-LLaVA the way LLaVA-1.5 is built (Liu et al., 2023), on offline assets, or
the WINGS way (`learners: wings` in the recipe) from the same start, data and steps.

mini-CLIP's image tower + a two-layer MLP projector + SmolLM2-135M-Instruct.
Stage 1 aligns the projector on image captions (tower and LM frozen). Stage 2 tunes the
projector and LoRA adapters on the LM's attention and MLP projections with the
instruction mix of `retain.data.instructions`; the adapters are merged at the end, so the
result is a plain `LlavaForConditionalGeneration` folder that any LLaVA code can load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from retain.progress import bar
from retain.schedule import warmup_cosine


def build_mini_llava(recipe: dict, folder: Path, vision_dir: Path, progress: bool = True) -> Path:
    """Train mini-LLaVA per `recipe` on the mini-CLIP saved in `vision_dir` and save it into
    `folder` (`retain.zoo.build` makes that folder atomic and marks it built); returns `folder`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from retain.data.instructions import caption_items, question_items, self_distilled_text_items
    from retain.models import load_retain_folder
    from retain.models.mllm import LM_TARGETS, MLLM
    from retain.zoo.llava_parts import compose_llava, smollm2_dir

    torch.manual_seed(recipe["seed"])
    lm_dir = smollm2_dir()
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    encoder = load_retain_folder(vision_dir)
    model, processor = compose_llava(encoder.vision, lm, tokenizer, encoder.image_mean.flatten().tolist(),
                                     encoder.image_std.flatten().tolist(),
                                     vision_feature_layer=recipe["vision_feature_layer"], seed=recipe["seed"])
    mllm = MLLM(model, processor)
    text_items = self_distilled_text_items(mllm)

    a, s = recipe["align"], recipe["instruct"]
    captions = caption_items(a["steps"] * a["batch_size"], recipe["seed"])
    questions = question_items(s["steps"] * s["batch_size"], recipe["seed"] + 1)
    wings = None
    if recipe.get("learners") == "wings":
        from retain.wings.inject import inject_wings

        wings = inject_wings(model, rank=recipe["wings"]["rank"])
        # WINGS stage 1: visual learners + projector; stage 2: all learners, routers, projector and the LLM.
        for name, p in model.named_parameters():
            p.requires_grad_("multi_modal_projector" in name or ".visual." in name and name.startswith("wings."))
        _train(mllm, captions, [], a, "mini-LLaVA-WINGS stage 1 (align)", progress, recipe["seed"])
        for name, p in model.named_parameters():
            p.requires_grad_("vision_tower" not in name)
        lm_scale = {id(p): recipe["wings"]["lm_lr_scale"] for p in model.model.language_model.parameters()}
        _train(mllm, questions, text_items, s, "mini-LLaVA-WINGS stage 2 (instruct)", progress, recipe["seed"] + 1,
               lr_scale=lm_scale)
        model.eval()
    else:
        # Stage 1: the projector alone.
        for name, p in model.named_parameters():
            p.requires_grad_("multi_modal_projector" in name)
        _train(mllm, captions, [], a, "mini-LLaVA stage 1 (align)", progress, recipe["seed"])

        # Stage 2: projector + LoRA on the LM, then merged.
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(model, LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=0.0,
                                                      target_modules=LM_TARGETS))
        for name, p in peft_model.named_parameters():
            p.requires_grad_("lora_" in name or "multi_modal_projector" in name)
        mllm.model = peft_model
        _train(mllm, questions, text_items, s, "mini-LLaVA stage 2 (instruct)", progress, recipe["seed"] + 1)
        model = peft_model.merge_and_unload()
        model.eval()

    if wings is not None:  # the learners go beside the plain LLaVA weights; loading re-injects them
        from retain.wings.inject import save_wings_model

        save_wings_model(model, processor, folder)
    else:
        model.save_pretrained(folder, safe_serialization=True)
        processor.save_pretrained(folder)
    return folder


def _train(mllm, items, text_items, stage: dict, desc: str, progress: bool, seed: int,
           lr_scale: dict | None = None) -> None:
    """AdamW over the parameters that require grad (`lr_scale`: id -> multiple of the stage's
    rate); a `text_fraction` of batches are text-only."""
    rng = np.random.default_rng(seed)
    model = mllm.model
    params = [p for p in model.parameters() if p.requires_grad]
    scales = sorted({(lr_scale or {}).get(id(p), 1.0) for p in params})
    groups = [{"params": [p for p in params if (lr_scale or {}).get(id(p), 1.0) == k], "scale": k} for k in scales]
    opt = torch.optim.AdamW(groups, lr=stage["lr"], weight_decay=0.0)
    model.train()
    bs, steps = stage["batch_size"], stage["steps"]
    for step in bar(range(steps), desc=desc, disable=not progress):
        for g in opt.param_groups:
            g["lr"] = stage["lr"] * g["scale"] * warmup_cosine(step, stage["warmup_steps"], steps)
        if text_items and rng.random() < stage.get("text_fraction", 0.0):
            batch = [text_items[i] for i in rng.integers(0, len(text_items), bs)]
            loss = mllm.training_loss(None, [b.question for b in batch], [b.answer for b in batch])
        else:
            batch = items[step * bs:(step + 1) * bs]
            loss = mllm.training_loss([b.image for b in batch], [b.question for b in batch], [b.answer for b in batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    model.eval()

