"""Text-only retention: the offline question set, option scoring, KL drift, MMLU/ARC/HellaSwag loaders."""

import copy

import numpy as np
import pytest
import torch

from retain.errors import RetainError
from retain.eval.text_retention import load_text_benchmark, next_token_kl, text_accuracy, text_qa_items


def test_offline_questions_are_fixed_and_right():
    items = text_qa_items()
    assert items == text_qa_items() and len(items) >= 300
    for it in items:
        assert len(it.options) == 4 and len(set(it.options)) == 4
        right = it.options[it.answer]
        if it.kind == "addition":
            a, b = (int(w.strip("?")) for w in it.question.split() if w.strip("?").isdigit())
            assert right == str(a + b)
        if it.kind == "comparison":
            nums = [int(w.strip("?,")) for w in it.question.split() if w.strip("?,").isdigit()]
            assert right == str(max(nums))
    assert {it.kind for it in items} == {"addition", "multiplication", "comparison", "opposites", "days", "facts"}
    assert len({it.answer for it in items}) == 4  # the right option is not always in one place


class FirstOption:
    """Scores the first option highest, whatever the question."""

    def loglik(self, image, question, options):
        assert image is None
        return [0.0] + [-1.0] * (len(options) - 1)


def test_text_accuracy_by_hand():
    items = text_qa_items()[:40]
    res = text_accuracy(FirstOption(), items)
    expected = np.mean([it.answer == 0 for it in items])
    assert res.accuracy == pytest.approx(expected) and len(res.records) == 40
    kinds = {it.kind for it in items}
    assert set(res.by_kind) == kinds


@pytest.fixture
def lm(tiny_llava_dir):
    from retain.registry import load_mllm

    return load_mllm(str(tiny_llava_dir))


def test_kl_is_zero_for_the_same_model_and_positive_after_a_change(lm):
    prompts = ["What is 2 plus 3?", "Name three colours and say why they matter."]
    reference = copy.deepcopy(lm.model)
    assert next_token_kl(lm.model, reference, lm.tokenizer, prompts) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for n, p in lm.model.named_parameters():
            if "language_model.layers.0.mlp" in n:
                p.add_(0.5 * torch.randn_like(p))
    drift = next_token_kl(lm.model, reference, lm.tokenizer, prompts)
    assert drift > 1e-4
    with pytest.raises(RetainError):
        next_token_kl(lm.model, reference, lm.tokenizer, [])


def test_mmlu_arc_hellaswag_loaders(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}]
                      ).save_to_disk(str(tmp_path / "mmlu"))
    Dataset.from_list([{"question": "Sky?", "choices": {"text": ["red", "blue"], "label": ["A", "B"]},
                        "answerKey": "B"}]).save_to_disk(str(tmp_path / "arc"))
    Dataset.from_list([{"ctx": "He opened the door and", "endings": ["walked in.", "ate it.", "x", "y"],
                        "label": "0"}]).save_to_disk(str(tmp_path / "hs"))
    (m,) = load_text_benchmark("mmlu", str(tmp_path / "mmlu"))
    assert m.options[m.answer] == "4" and m.kind == "math"
    (a,) = load_text_benchmark("arc", str(tmp_path / "arc"))
    assert a.options[a.answer] == "blue"
    (h,) = load_text_benchmark("hellaswag", str(tmp_path / "hs"))
    assert h.options[h.answer] == "walked in." and h.question.endswith("He opened the door and")
    with pytest.raises(RetainError, match="does not look like arc"):
        load_text_benchmark("arc", str(tmp_path / "mmlu"))
