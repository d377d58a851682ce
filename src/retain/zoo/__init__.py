"""retain's small foundation models: their recipes, the cache folders they are built into, the builds.

A model is cached under `$RETAIN_CACHE/zoo/<name>-<hash of its recipe>/`; the same
recipe always gives the same folder, and a finished folder (one with `DONE`) is never
rebuilt. `mini_clip` trains mini-CLIP, `mini_llava` builds mini-LLaVA on top of it (the
LLaVA-1.5 way, or the WINGS way), `llava_parts` holds the offline SmolLM2 and the LLaVA
assembly. The zoo builds from the model classes of `retain.models`; users load zoo
models by name through `retain.registry`, the one module that calls the zoo.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from pathlib import Path

import torch

from retain.errors import RetainError, suggest
from retain.io import folder_in_place
from retain.paths import cache_dir
from retain.progress import say

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
# (a deep copy: a stage budget changed for one build never changes the other's)
MINI_LLAVA_WINGS_RECIPE: dict = {**copy.deepcopy(MINI_LLAVA_RECIPE), "learners": "wings",
                                  "wings": {"rank": 16, "lm_lr_scale": 0.1}}

RECIPES = {"mini-clip": MINI_CLIP_RECIPE, "mini-llava": MINI_LLAVA_RECIPE, "mini-llava-wings": MINI_LLAVA_WINGS_RECIPE}


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
    """Build zoo model `name` into its cache folder (atomically); mini-CLIP prints its zero-shot accuracy."""
    recipe = recipe or RECIPES[name]
    target = model_dir(name, recipe)
    if (target / "DONE").exists() and not force:
        say(f"{name} is already built at {target}")
        return target
    start = time.time()
    if name.startswith("mini-llava"):
        from retain.zoo.mini_llava import build_mini_llava

        vision = ensure(recipe["vision"], progress=progress)  # built first when missing, counted in this build
        _publish(target, recipe, start, lambda folder: build_mini_llava(recipe, folder, vision, progress))
        say(f"{name} built in {time.time() - start:.0f} s -> {target}")
        return target
    from retain.zoo.mini_clip import train_mini_clip, zero_shot_table

    def write(folder: Path) -> dict[str, float]:
        with deterministic(recipe.get("build_threads", 2)):
            model, spec = train_mini_clip(recipe, progress)
        model.save(folder, {**spec, "recipe_hash": recipe_hash(recipe)})
        scores = zero_shot_table(model)
        (folder / "zero_shot.json").write_text(json.dumps(scores, indent=2, sort_keys=True))
        return scores

    scores = _publish(target, recipe, start, write)
    say(f"{name} built in {time.time() - start:.0f} s -> {target}")
    say("zero-shot accuracy (test split): " + ", ".join(
        f"{k} {v:.3f}{' (held out)' if k in recipe['held_out'] else ''}" for k, v in scores.items()))
    return target


def _publish(target: Path, recipe: dict, start: float, write):
    """Run `write(folder)` on a fresh folder beside `target`, add recipe.json, build.json and
    DONE, then put it in `target`'s place in one rename; returns what `write` returned."""
    with folder_in_place(target) as tmp:
        out = write(tmp)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
        mark_built(tmp, start)
    return out


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
