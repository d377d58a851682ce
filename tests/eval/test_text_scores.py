"""Answer and caption scores against hand-worked values."""

import math

import pytest

from retain.eval.text_scores import bleu, cider_d, exact_match, normalize_answer, rouge_l, vqa_accuracy


@pytest.mark.parametrize("raw, norm", [
    ("Two.", "2"), ("The RED circle!", "red circle"), ("dont know", "don't know"), ("1,000 apples", "1000 apples"),
    ("  a  Teal\nshape ", "teal shape"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_and_vqa_accuracy():
    assert exact_match("Two", ["2"]) == 1.0 and exact_match("three", ["2", "4"]) == 0.0
    assert vqa_accuracy("yes", ["yes"]) == 1.0 and vqa_accuracy("no", ["yes"]) == 0.0
    refs = ["yes"] * 2 + ["no"] * 8  # ten annotators: leave-one-out subsets of nine
    # dropping a "yes" (2 of 10 subsets) leaves 1 match -> 1/3; otherwise 2 matches -> 2/3
    assert vqa_accuracy("yes", refs) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("no", refs) == 1.0
    assert vqa_accuracy("yes", ["yes", "no", "no"]) == pytest.approx(1 / 3)


def test_bleu_by_hand():
    c, r = "the cat sat on the mat", "the cat is on the mat"
    # unigrams 5/6, bigrams 3/5, equal lengths (no brevity penalty)
    assert bleu([c], [[r]], n=2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert bleu([c], [[r]], n=4) == 0.0  # no 4-gram in common
    assert bleu([r], [[r]]) == pytest.approx(1.0)
    # brevity: "the cat" against a 6-word reference, precision 1 -> exp(1 - 6/2)
    assert bleu(["the cat"], [[r]], n=1) == pytest.approx(math.exp(1 - 3))


def test_rouge_l_by_hand():
    # LCS "the cat on the mat" = 5 words: P = R = 5/6, so F = 5/6 whatever beta
    assert rouge_l("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(5 / 6)
    # P = 2/2, R = 2/4: F = (1 + b^2) P R / (R + b^2 P)
    b2 = 1.2**2
    assert rouge_l("the cat", ["dogs and the cat", "zzz"]) == pytest.approx((1 + b2) * 0.5 / (0.5 + b2))
    assert rouge_l("x", ["y"]) == 0.0


def test_cider_d_by_hand():
    # two items; every n-gram occurs in one item's references: idf = log 2 throughout
    # item 1 matches exactly: cosine 1 for 1- and 2-grams, nothing longer -> 10 * 2 / 4 = 5
    # item 2 has one extra word: 1-gram cosine 2 / sqrt(6), 2-gram 1 / sqrt(2), penalty exp(-1/72)
    item2 = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert cider_d(["a b", "c d x"], [["a b"], ["c d"]]) == pytest.approx((5 + item2) / 2)
    # a candidate with none of the references' words scores 0
    assert cider_d(["q r", "c d"], [["a b"], ["c d"]]) == pytest.approx(5 / 2)
