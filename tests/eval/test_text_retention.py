"""Text-only retention: the offline question set, option scoring, KL drift, MMLU/ARC/HellaSwag loaders."""

import collections
import copy
import re

import numpy as np
import pytest
import torch

from retain.errors import RetainError
from retain.eval.text_retention import TextItem, load_text_benchmark, next_token_kl, text_accuracy, text_qa_items


KINDS = {"addition", "subtraction", "multiplication", "division", "comparison", "sequences", "units", "calendar",
         "opposites", "plurals", "past_tense", "categories", "animal_classes", "capitals", "alphabetical", "facts"}


def _numbers(text):
    return [int(w) for w in re.findall(r"\d+", text)]


def test_offline_set_is_large_balanced_and_asks_nothing_twice():
    items = text_qa_items()
    assert items == text_qa_items() and items != text_qa_items(seed=1)  # fixed by the seed
    assert len(items) >= 1000
    per_kind = collections.Counter(it.kind for it in items)
    assert set(per_kind) == KINDS and len(set(per_kind.values())) == 1  # every kind equally often
    assert {it.kind for it in items[:len(KINDS)]} == KINDS  # a prefix (text_limit) covers every kind
    # no question asked twice: the question (before a list of its options) with its right answer
    asked = [(it.question.split(":")[0], it.options[it.answer]) for it in items]
    assert len(set(asked)) == len(asked)
    assert len({(it.question, tuple(it.options)) for it in items}) == len(items)
    with pytest.raises(RetainError, match="more than there are"):
        text_qa_items(per_kind=10_000)


def test_right_answer_position_is_uniform_within_every_kind():
    items = text_qa_items()
    n = len(items) // len(KINDS)
    for kind in KINDS:
        where = collections.Counter(it.answer for it in items if it.kind == kind)
        assert sorted(where) == [0, 1, 2, 3] and set(where.values()) == {n // 4}, (kind, where)
    # the first option scores chance, not more, on every kind
    first = collections.Counter(it.kind for it in items if it.answer == 0)
    assert set(first.values()) == {n // 4}


def test_answers_are_right():
    import calendar

    days, months = list(calendar.day_name), list(calendar.month_name)[1:]
    per_unit = {"centimetres in metres": 100, "metres in kilometres": 1000, "millimetres in centimetres": 10,
                "grams in kilograms": 1000, "millilitres in litres": 1000, "minutes in hours": 60,
                "seconds in minutes": 60, "hours in days": 24, "days in weeks": 7, "months in years": 12,
                "years in decades": 10, "years in centuries": 100, "inches in feet": 12}
    known = {"What is the capital of France?": "Paris", "What is the capital of Australia?": "Canberra",
             "What is the capital of Canada?": "Ottawa", "What is the capital of Brazil?": "Brasília",
             "What is the capital of Nigeria?": "Abuja", "Ankara is the capital of which country?": "Turkey",
             "What kind of animal is a whale?": "mammal", "What kind of animal is a bat?": "mammal",
             "What kind of animal is a penguin?": "bird", "What kind of animal is a frog?": "amphibian",
             "What kind of animal is a shark?": "fish", "What is the plural of mouse?": "mice",
             "What is the plural of sheep?": "sheep", "What is the plural of knife?": "knives",
             "What is the past tense of go?": "went", "What is the past tense of put?": "put",
             "What is the past tense of stop?": "stopped", "What is the opposite of hot?": "cold"}
    seen = 0
    for seed in (0, 1, 2):
        for it in text_qa_items(seed):
            q, right = it.question, it.options[it.answer]
            nums = _numbers(q)
            if it.kind == "addition":
                assert int(right) == nums[0] + nums[1]
            elif it.kind == "subtraction":
                assert int(right) == nums[0] - nums[1]
            elif it.kind == "multiplication":
                assert int(right) == nums[0] * nums[1]
            elif it.kind == "division":
                assert int(right) * nums[1] == nums[0]
            elif it.kind == "comparison":
                assert int(right) == (max if "largest" in q else min)(nums)
            elif it.kind == "sequences":
                a, b, c, d = nums
                assert int(right) == (d + (d - c) if b - a == c - b else d * d // c)
            elif it.kind == "units":
                small, big = re.match(r"How many (\w+) are in \d+ (\w+)\?", q).groups()
                assert int(right) == nums[0] * per_unit[f"{small} in {big}"]
            elif it.kind == "calendar":
                names = days if ("day" in q.split()[1]) else months
                name = q.rstrip("?").split()[-1]
                k = 1 if "comes" in q else {"two": 2, "three": 3}[q.split()[3]]
                step = k if "after" in q else -k
                assert right == names[(names.index(name) + step) % len(names)]
            elif it.kind == "alphabetical":
                assert right == min(it.options)
            if q in known:
                assert right == known[q], q
                seen += 1
    assert seen >= 5  # the hand-checked facts were asked


def test_wrong_answers_are_plausible_and_never_right():
    from retain.eval.text_questions import ANIMAL_CLASSES, CAPITALS, CATEGORIES, DAYS, MONTHS, OPPOSITE_GROUPS

    group_of = {w: g for g, group in enumerate(OPPOSITE_GROUPS) for pair in group for w in pair}
    region_of = {name: r for r, rows in CAPITALS.items() for country, capital, _ in rows for name in (country, capital)}
    tempting = {t for rows in CAPITALS.values() for *_, t in rows if t}
    for it in text_qa_items():
        q, right = it.question, it.options[it.answer]
        wrong = [o for k, o in enumerate(it.options) if k != it.answer]
        assert len(it.options) == 4 and len(set(it.options)) == 4 and right not in wrong
        assert all(o.strip() for o in it.options)
        if it.kind in ("addition", "subtraction", "multiplication", "division", "sequences"):
            assert all(0 <= int(w) <= 2 * int(right) + 10 for w in wrong), q  # near misses, not random numbers
        elif it.kind == "units":
            assert all(int(w) > 0 and int(w) % _numbers(q)[0] == 0 for w in wrong), q  # n times some unit's factor
        elif it.kind == "comparison":
            assert _numbers(q) == [int(o) for o in it.options]  # the options are the numbers asked about
        elif it.kind in ("categories", "alphabetical"):
            assert q.endswith(", ".join(it.options[:-1]) + " or " + it.options[-1] + "?")
        if it.kind == "categories":
            members = CATEGORIES[re.match(r"Which of these is (.+?):", q).group(1)]
            assert [o in members for o in it.options].count(True) == 1
        elif it.kind == "calendar":
            names = DAYS if right in DAYS else MONTHS
            assert all(w in names for w in wrong)
        elif it.kind == "opposites":
            cue = q.rstrip("?").split()[-1]
            assert all(w in group_of and group_of[w] != group_of[cue] for w in wrong), q  # no near-antonym offered
        elif it.kind in ("plurals", "past_tense"):
            cue = q.rstrip("?").split()[-1]
            assert all(w[0] == cue[0] for w in wrong), q  # forms of the same word
        elif it.kind == "animal_classes":
            assert set(it.options) <= set(ANIMAL_CLASSES)
        elif it.kind == "capitals":
            assert all(region_of.get(w) == region_of[right] or w in tempting for w in wrong), q


class FirstOption:
    """Scores the first option highest, whatever the question."""

    def loglik(self, image, question, options):
        assert image is None
        return [0.0] + [-1.0] * (len(options) - 1)

    def option_ids(self, options):  # one token per word
        return [o.split() for o in options]


class Scripted(FirstOption):
    """Summed option scores from a list, one item after another."""

    def __init__(self, scores):
        self.scores = list(scores)

    def loglik(self, image, question, options):
        return self.scores.pop(0)


def test_text_accuracy_by_hand():
    items = text_qa_items()[:40]
    res = text_accuracy(FirstOption(), items)
    expected = np.mean([it.answer == 0 for it in items])
    assert res.accuracy == pytest.approx(expected) and len(res.records) == 40
    kinds = {it.kind for it in items}
    assert set(res.by_kind) == kinds


def test_text_accuracy_reports_length_normalised_picks_beside_the_summed_one():
    options = ["cat", "grey heron", "golden retriever dog"]  # 1, 2, 3 tokens; 3, 10, 20 characters
    items = [TextItem("Which animal?", options, answer) for answer in (0, 1, 1)]
    # the sum picks cat (-2), the mean per token grey heron (-1.3), per character golden retriever dog (-0.225)
    res = text_accuracy(Scripted([[-2, -2.6, -4.5]] * 3), items)
    assert [(r["predicted"], r["predicted_norm_token"], r["predicted_norm_char"]) for r in res.records] == \
        [tuple(options)] * 3
    assert [(r["correct"], r["correct_norm_token"], r["correct_norm_char"]) for r in res.records] == \
        [(True, False, False), (False, True, False), (False, True, False)]
    assert (res.accuracy, res.accuracy_norm_token, res.accuracy_norm_char) == pytest.approx((1 / 3, 2 / 3, 0))


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
