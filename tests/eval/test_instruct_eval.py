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


def test_judge_scorer_scores_what_it_can_and_reports_the_rest(tmp_path, monkeypatch, server):
    from test_judge import SECRET, client

    from retain.errors import RetainError
    from retain.eval.judge import LLMJudge

    monkeypatch.setenv("RETAIN_TEST_API_KEY", SECRET)
    server.script = [("ok", "yes"), ("ok", "No."), ("status", 400), ("ok", "maybe"), ("ok", "perhaps")]
    mllm = Scripted({"q1": "a cat", "q2": "two", "q3": "red", "q4": "blue"})
    t = task("judge", ["q1", "q2", "q3", "q4"], ["cat", "3", "red", "blue"], [None] * 4)
    r = evaluate_instruction(mllm, t, judge=LLMJudge(client(server, tmp_path, max_retries=0)))
    scores = [rec["score"] for rec in r.records]
    assert scores == [1.0, 0.0, None, None]  # q3: HTTP 400 reported; q4: neither yes nor no, twice
    assert "judge_error" in r.records[2] and "neither yes nor no" in r.records[3]["judge_error"]
    assert r.score == 0.5 and r.extra == {"judged": 2, "judge_errors": 2}
    sent = [q["body"]["messages"][1]["content"] for q in server.requests]
    assert "Question: q1" in sent[0] and "Reference answer(s): cat" in sent[0] and 'Model answer: "a cat"' in sent[0]
    assert all(SECRET not in str(rec) for rec in r.records)
    with pytest.raises(RetainError, match="scored by an LLM judge"):
        evaluate_instruction(mllm, t)


def test_a_task_with_no_item_judged_is_unscored_not_zero(tmp_path, server):
    from test_judge import client

    from retain.eval.judge import LLMJudge

    server.script = [("status", 400)] * 2
    mllm = Scripted({"q1": "a cat", "q2": "two"})
    t = task("judge", ["q1", "q2"], ["cat", "3"], [None] * 2)
    r = evaluate_instruction(mllm, t, judge=LLMJudge(client(server, tmp_path, max_retries=0)))
    assert r.score is None and r.extra == {"judged": 0, "judge_errors": 2} and r.halted is None
