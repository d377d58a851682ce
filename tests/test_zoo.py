"""mini-CLIP: built from the offline assets (opt-in: RETAIN_SLOW=1), deterministic, cached by recipe."""

import hashlib

import pytest

from retain import zoo
from retain.errors import RetainError


def test_recipe_hash_keys_the_cache():
    r = dict(zoo.MINI_CLIP_RECIPE)
    assert zoo.model_dir("mini-clip", r) == zoo.model_dir("mini-clip")
    r["steps"] += 1
    assert zoo.model_dir("mini-clip", r) != zoo.model_dir("mini-clip")
    with pytest.raises(RetainError, match="Did you mean 'mini-clip'"):
        zoo.ensure("mini-clp")


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_short_build_is_deterministic(tmp_path, monkeypatch):
    recipe = {**zoo.MINI_CLIP_RECIPE, "steps": 8, "warmup_steps": 2}
    monkeypatch.setattr(zoo, "ZERO_SHOT_TASKS", ["digits"])
    a = zoo.build("mini-clip", progress=False, recipe=recipe)
    first = _digest(a)
    zoo.build("mini-clip", progress=False, recipe=recipe, force=True)
    assert _digest(a) == first


@pytest.mark.slow
def test_mini_clip_knows_its_pretraining_concepts_only():
    import json

    path = zoo.ensure("mini-clip", progress=False)
    scores = json.loads((path / "zero_shot.json").read_text())
    assert scores["fashion-mnist"] > 0.6 and scores["easyvqa-color"] > 0.6 and scores["easyvqa-shape"] > 0.5
    assert scores["animal-mnist"] < 0.25 and scores["digits"] < 0.25  # held out: near chance (0.1)
    from retain.models import load_dual_encoder

    enc = load_dual_encoder("mini-clip")
    assert enc.num_blocks == 6 and enc.image_size == 32
