"""The attention-shift measurement on a tiny LLaVA: masses per layer add up, the reference profile."""

import numpy as np
import pytest

from retain.errors import RetainError
from retain.eval.attention_shift import attention_shift


def test_masses_cover_every_key_and_the_reference_profile(tiny_llava_dir):
    from retain.registry import load_mllm

    mllm = load_mllm(str(tiny_llava_dir))
    items = [("Here is some context about a red ball.", np.full((8, 8, 3), 40, np.uint8), "What colour is it?"),
             ("A short note.", np.full((8, 8, 3), 200, np.uint8), "Describe the picture in detail.")]
    layers = mllm.model.config.text_config.num_hidden_layers
    mllm.model.set_attn_implementation("sdpa")
    res = attention_shift(mllm, items, reference=mllm.model)
    assert mllm.model.config._attn_implementation == "sdpa"  # eager only while measuring
    assert len(res.before_text) == len(res.image) == len(res.after_text) == layers
    for b, i, a in zip(res.before_text, res.image, res.after_text):
        assert b + i + a == pytest.approx(1.0, abs=1e-5)  # causal: every key is before, image or after
        assert min(b, i, a) > 0
    assert len(res.reference_before_text) == layers and all(0 < x < 1 for x in res.reference_before_text)
    assert res.correlation is None or -1 <= res.correlation <= 1
    with pytest.raises(RetainError):
        attention_shift(mllm, [])
