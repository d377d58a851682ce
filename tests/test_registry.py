"""The model registry: one table of zoo names, zoo models loaded through the zoo, the rest from
folders and hub ids, and architectures the dual-encoder family cannot load refused by name."""

import pytest

from retain import zoo
from retain.errors import RetainError
from retain import registry
from retain.models import DualEncoder
from retain.models.mllm import MLLM


def test_the_table_and_the_zoo_name_the_same_models():
    assert registry.list_models() == sorted(zoo.RECIPES)
    assert registry.list_models("mllm") == ["mini-llava", "mini-llava-wings"]
    for name in registry.list_models("mllm"):  # an MLLM's zero-shot column is scored by its own image tower
        assert registry.default_encoder(name) == zoo.RECIPES[name]["vision"] == "mini-clip"
        assert registry.model_family(registry.default_encoder(name)) == "dual_encoder"
    assert registry.default_encoder("mini-clip") is None and registry.default_encoder("hf:org/llava") is None


@pytest.fixture(scope="module")
def tiny_mini_clip_dir(tmp_path_factory, tiny_clip_dir):
    """A tiny random model saved the way the zoo saves mini-CLIP (retain's own folder)."""
    from transformers import BertConfig

    from retain.models.dual_encoder import build_from_spec

    text = BertConfig(vocab_size=30522, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=64)
    spec = {"vision": dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2), "embed_dim": 8, "text_pooling": "mean",
            "text_config": text.to_dict()}
    path = tmp_path_factory.mktemp("tiny-mini-clip")
    build_from_spec({**spec, "tokenizer_dir": str(tiny_clip_dir)}).save(path, spec)
    return path


@pytest.fixture
def zoo_of_tiny_models(monkeypatch, tiny_mini_clip_dir, tiny_llava_dir):
    """zoo.ensure answering with the tiny models instead of building: what the registry asked for."""
    asked = []
    folders = {"mini-clip": tiny_mini_clip_dir, "mini-llava": tiny_llava_dir}
    monkeypatch.setattr(zoo, "ensure", lambda name, progress=True, recipe=None: asked.append(name) or folders[name])
    return asked


def test_zoo_names_are_built_by_the_zoo_and_loaded_by_family(zoo_of_tiny_models):
    assert isinstance(registry.load_dual_encoder("mini-clip", progress=False), DualEncoder)
    assert isinstance(registry.load_mllm("mini-llava"), MLLM)
    assert zoo_of_tiny_models == ["mini-clip", "mini-llava"]
    with pytest.raises(RetainError, match="'mini-llava' is a zoo MLLM, not a dual encoder"):
        registry.load_dual_encoder("mini-llava")
    with pytest.raises(RetainError, match="'mini-clip' is a zoo dual encoder, not a MLLM"):
        registry.load_mllm("mini-clip")
    assert zoo_of_tiny_models == ["mini-clip", "mini-llava"]  # refused before anything is built


def test_folders_load_without_the_zoo(zoo_of_tiny_models, tiny_clip_dir, tiny_llava_dir):
    assert isinstance(registry.load_dual_encoder(str(tiny_clip_dir)), DualEncoder)
    assert isinstance(registry.load_mllm(str(tiny_llava_dir)), MLLM)
    assert registry.model_family(str(tiny_clip_dir)) == "dual_encoder"
    assert registry.model_family(str(tiny_llava_dir)) == "mllm"
    assert registry.build_info(str(tiny_clip_dir)) is None and registry.build_info("hf:openai/clip") is None
    assert zoo_of_tiny_models == []


def test_unknown_names_are_refused_with_the_known_ones(tmp_path):
    with pytest.raises(RetainError, match="Did you mean 'mini-clip'"):
        registry.load_dual_encoder("mini-clp")
    with pytest.raises(RetainError, match="mini-llava-wings"):
        registry.load_mllm(str(tmp_path / "missing"))
    with pytest.raises(RetainError, match="Unknown model family 'clip'"):
        registry.model_family("mini-clip", declared="clip")
    with pytest.raises(RetainError, match="is not a zoo model"):
        registry.zoo_folder("hf:org/model")


@pytest.fixture(scope="module")
def tiny_siglip2_dir(tmp_path_factory):
    import torch
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = Siglip2Config(text_config={**small, "vocab_size": 64, "max_position_embeddings": 16},
                           vision_config={**small, "num_patches": 4, "patch_size": 8})
    path = tmp_path_factory.mktemp("tiny-siglip2")
    Siglip2Model(config).save_pretrained(path, safe_serialization=True)
    return path


def test_siglip2_is_a_dual_encoder_the_family_refuses_by_name(tiny_siglip2_dir):
    # CLIPModel would load these weights into fresh CLIP towers with a warning only (SigLIP itself
    # loads: tests/models/test_siglip.py).
    assert registry.model_family(str(tiny_siglip2_dir)) == "dual_encoder"
    with pytest.raises(RetainError, match=r"is a 'siglip2' model; the dual-encoder family loads clip, siglip checkpoints"):
        registry.load_dual_encoder(str(tiny_siglip2_dir))
