"""Interleaved conversations: mixes from text-rich to image-rich, multi-image turn scoring."""

import numpy as np
import pytest

from direct import option_logprob
from retain.eval.interleaved import Turn, build_conversations, evaluate_interleaved


def pool():
    return [Turn("What shape is in the image?", ["circle", "rectangle", "triangle"], k % 3,
                 np.full((8, 8, 3), 20 * k, np.uint8)) for k in range(6)]


def test_mixes_run_from_text_rich_to_image_rich():
    convs = build_conversations(per_mix=3, turns=4, image_pool=pool())
    assert len(convs) == 15
    assert sorted({c.image_turns for c in convs}) == [0, 1, 2, 3, 4]
    assert all(len(c.turns) == 4 for c in convs)
    assert build_conversations(per_mix=3, turns=4, image_pool=pool())[7].turns[0].question == convs[7].turns[0].question


def test_turn_scores_equal_a_direct_forward_on_the_whole_conversation(tiny_llava_dir):
    from retain.registry import load_mllm

    mllm = load_mllm(str(tiny_llava_dir))
    p = pool()
    turns = [("What shape is in the image?", True, "circle"), ("What is 2 plus 3?", False, "5"),
             ("What shape is in the image?", True, None)]
    images = [p[0].image, p[1].image]
    options = ["circle", "rectangle"]
    scores = mllm.loglik_conversation(turns, images, options)
    enc = mllm.processor(text=[mllm.conversation_prompt(turns)], images=[np.asarray(i) for i in images],
                         return_tensors="pt")
    assert int((enc["input_ids"] == mllm.tokenizer.convert_tokens_to_ids("<image>")).sum()) > 2  # both images in
    for opt, score in zip(options, scores):
        assert score == pytest.approx(option_logprob(mllm, enc, opt), abs=1e-4)
    res = evaluate_interleaved(mllm, build_conversations(per_mix=1, turns=2, image_pool=p))
    assert set(res.by_mix) == {0, 1, 2} and res.by_mix[0]["image"] is None and res.by_mix[2]["text"] is None
    assert len(res.records) == 6
