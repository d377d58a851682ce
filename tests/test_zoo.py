"""mini-CLIP: built from the offline assets (opt-in: RETAIN_SLOW=1), deterministic, cached by recipe."""

import hashlib

import pytest
import torch

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
    from retain.zoo import mini_clip

    monkeypatch.setattr(mini_clip, "ZERO_SHOT_TASKS", ["digits"])
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
    from retain.registry import load_dual_encoder

    enc = load_dual_encoder("mini-clip")
    assert enc.num_blocks == 6 and enc.image_size == 32


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["mini-llava", "mini-llava-wings"])
def test_mini_llava_smoke_build_loads_and_answers(tmp_path, variant):
    from retain.registry import load_mllm
    from retain.zoo.mini_llava import build_mini_llava

    recipe = {**zoo.RECIPES[variant],
              "align": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1},
              "instruct": {"steps": 2, "batch_size": 2, "lr": 2e-4, "warmup_steps": 1, "lora_r": 4,
                           "lora_alpha": 8, "text_fraction": 0.5}}
    path = build_mini_llava(recipe, tmp_path, zoo.ensure("mini-clip", progress=False), progress=False)
    mllm = load_mllm(str(path))
    from retain.data import load_task

    image = load_task("fashion-mnist").split("test").images[0]
    assert len(mllm.generate([image], ["What type of clothing is this?"], max_new_tokens=4)) == 1
    answer = mllm.generate(None, ["What is 2 plus 3?"], max_new_tokens=10)[0]
    if variant == "mini-llava":  # LoRA on a frozen LLM: its text skill is kept (WINGS trains the LLM itself)
        assert "5" in answer
    assert answer
    assert not any(n.startswith("base_model") or "lora_" in n for n, _ in mllm.model.named_parameters())
    learners = [n for n, _ in mllm.model.named_parameters() if n.startswith("wings.")]
    assert bool(learners) == (variant == "mini-llava-wings")  # the learners come back on load
    if learners:
        from safetensors.torch import load_file

        saved = load_file(str(path / "wings.safetensors"))
        assert torch.equal(saved["layers.0.visual.o.B"], mllm.model.wings.layers[0].visual.o.B.detach())
        assert saved["layers.0.visual.o.B"].abs().sum() > 0  # stage 1 trained the visual learners


def test_a_build_records_its_versions_and_weight_hashes(tmp_path, monkeypatch, capsys):
    import json
    import time

    from safetensors.torch import save_file

    save_file({"w": torch.arange(6.0)}, str(tmp_path / "model.safetensors"))
    zoo.mark_built(tmp_path, time.time() - 3)
    info = json.loads((tmp_path / "build.json").read_text())
    assert info["sha256"] == {"model.safetensors": _digest(tmp_path)}
    assert info["versions"]["torch"] == torch.__version__ and info["seconds"] >= 3
    assert (tmp_path / "DONE").exists()
    # `retain zoo list` says which build a cached model is
    from retain.cli import main

    monkeypatch.setattr(zoo, "model_dir", lambda name, recipe=None: tmp_path)
    assert main(["zoo", "list"]) == 0
    assert f"weights model.safetensors {_digest(tmp_path)[:12]}" in capsys.readouterr().out


def test_runs_record_which_build_they_used(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("RETAIN_CACHE", str(tmp_path))
    assert zoo.build_info("hf:openai/clip-vit-base-patch32") is None
    assert zoo.build_info("mini-clip") is None  # not built
    folder = zoo.model_dir("mini-clip")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "build.json").write_text(json.dumps({"sha256": {"model.safetensors": "ab" * 32},
                                                   "versions": {"torch": "2.13.0"}, "built": "today"}))
    info = zoo.build_info("mini-clip")
    assert info["sha256"]["model.safetensors"] == "ab" * 32
    assert info["recipe_hash"] == zoo.recipe_hash(zoo.MINI_CLIP_RECIPE) and info["torch"] == "2.13.0"


def test_build_runs_on_a_fixed_thread_count_with_deterministic_kernels():
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    with zoo.deterministic(1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert zoo.MINI_CLIP_RECIPE["build_threads"] == 2  # part of the recipe: it changes the weights' last bits


def test_the_wings_recipe_has_its_own_stage_budgets():
    import copy

    from retain import zoo

    before = copy.deepcopy(zoo.MINI_LLAVA_RECIPE)
    assert zoo.MINI_LLAVA_WINGS_RECIPE["instruct"] is not zoo.MINI_LLAVA_RECIPE["instruct"]
    assert zoo.MINI_LLAVA_WINGS_RECIPE["align"] is not zoo.MINI_LLAVA_RECIPE["align"]
    assert zoo.MINI_LLAVA_RECIPE == before
