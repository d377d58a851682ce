"""evaluate_instruction with a scripted MLLM: scores by hand, order kept across image and text items."""

import numpy as np
import pytest

from retain.data.instruct import InstructionSplit, InstructionTask
from retain.eval.instruct import evaluate_instruction
from retain.eval.text_scores import bleu, cider_d


class Scripted:
    """Answers each question from a table; records whether it saw an image."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def generate(self, images, questions, max_new_tokens=32, batch_size=8):
        self.calls.append((images is not None, list(questions)))
        return [self.table[q] for q in questions]


def task(scorer, questions, answers, images, refs=None):
    return InstructionTask("t", {"test": InstructionSplit(images, questions, answers, None, refs)}, scorer)


def test_exact_scores_and_mixed_batches_keep_order():
    img = np.zeros((4, 4, 3), np.uint8)
    qs = ["q1", "q2", "q3", "q4", "q5"]
    answers = {"q1": "Two.", "q2": "cat", "q3": "The red one", "q4": "no", "q5": "3"}
    mllm = Scripted(answers)
    t = task("exact", qs, ["2", "dog", "red one", "yes", "three"], [img, None, img, None, img])
    r = evaluate_instruction(mllm, t, batch_size=8)
    # right: q1 ("two" -> 2), q3 (article dropped), q5 ("three" -> 3); wrong: q2, q4
    assert [rec["score"] for rec in r.records] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert r.score == pytest.approx(3 / 5)
    assert [rec["answer"] for rec in r.records] == [answers[q] for q in qs]
    assert sorted(mllm.calls) == [(False, ["q2", "q4"]), (True, ["q1", "q3", "q5"])]


def test_vqa_and_caption_scorers():
    mllm = Scripted({"a": "yes", "b": "a dog on grass", "c": "a cat"})
    r = evaluate_instruction(mllm, task("vqa", ["a"], ["yes"], [None], [["yes", "yes", "no"]]))
    assert r.score == pytest.approx(2 / 3)
    refs = [["a dog on the grass", "dog lying on grass"], ["a cat sleeping"]]
    r = evaluate_instruction(mllm, task("caption", ["b", "c"], [x[0] for x in refs], [None, None], refs))
    assert r.extra["bleu4"] == pytest.approx(bleu(["a dog on grass", "a cat"], refs))
    assert r.extra["cider_d"] == pytest.approx(cider_d(["a dog on grass", "a cat"], refs))
    assert r.score == pytest.approx(r.extra["rouge_l"]) and 0 < r.score < 1
