"""Answer and caption scores: hand-worked values, and the caption metrics against pycocoevalcap called directly."""

import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from retain.errors import RetainError
from retain.eval.text_scores import (bleu, cider_d, exact_match, normalize_answer, ptb_tokenize, rouge_l,
                                     vqa_accuracy)


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


# four items with several references each; TOKENISED is what PTB tokenisation gives, written by hand
CANDIDATES = ["A man's dog runs on the beach.", "Two kids can't reach the black-and-white ball",
              "a cat sleeping (on a sofa)", "Empty street, at night..."]
REFERENCES = [["A dog runs along the beach.", "The man's dog is running on sand!", "a brown dog on a beach"],
              ["Two children reach for a black-and-white ball.", "kids playing with a ball", "two kids and a ball"],
              ["A cat is sleeping on the sofa.", "a grey cat asleep on a couch", "cat on a sofa"],
              ["an empty street at night", "A dark road with no cars"]]
TOKENISED_CANDIDATES = ["a man 's dog runs on the beach", "two kids ca n't reach the black-and-white ball",
                        "a cat sleeping on a sofa", "empty street at night"]
TOKENISED_REFERENCES = [["a dog runs along the beach", "the man 's dog is running on sand", "a brown dog on a beach"],
                        ["two children reach for a black-and-white ball", "kids playing with a ball",
                         "two kids and a ball"],
                        ["a cat is sleeping on the sofa", "a grey cat asleep on a couch", "cat on a sofa"],
                        ["an empty street at night", "a dark road with no cars"]]


def test_ptb_tokenize_drops_ptb_punctuation_and_splits_clitics():
    for raw, tok in zip(CANDIDATES + sum(REFERENCES, []), TOKENISED_CANDIDATES + sum(TOKENISED_REFERENCES, [])):
        assert ptb_tokenize(raw) == tok
    assert ptb_tokenize('"Quoted" -- 1,000 {cats}; 3.5 kg?') == "quoted 1,000 cats 3.5 kg"


def test_caption_scores_equal_pycocoevalcap():
    gts = dict(enumerate(TOKENISED_REFERENCES))
    res = {i: [c] for i, c in enumerate(TOKENISED_CANDIDATES)}
    lib_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    _, lib_rouge = Rouge().compute_score(gts, res)
    lib_cider, _ = Cider().compute_score(gts, res)
    assert bleu(CANDIDATES, REFERENCES) == lib_bleu[3]
    assert bleu(CANDIDATES, REFERENCES, n=2) == lib_bleu[1]
    assert [rouge_l(c, r) for c, r in zip(CANDIDATES, REFERENCES)] == list(lib_rouge)
    assert cider_d(CANDIDATES, REFERENCES) == lib_cider
    assert 0 < lib_bleu[3] < 1 and 0 < lib_cider < 10  # a real example, not a degenerate one


def test_rouge_l_takes_best_precision_and_best_recall_apart():
    # "a b" has LCS 2: P = 2/4, R = 2/2; "a b c d e f g h" has LCS 4: P = 4/4, R = 4/8.
    # COCO: best P = 1 and best R = 1 over the references, so F = 1.
    # The best F of one reference would be F(P=1/2, R=1) = (1 + b^2) (1/2) / (1 + b^2 / 2) = 0.709...
    b2 = 1.2**2
    per_reference_best = (1 + b2) * 0.5 / (1 + b2 * 0.5)
    assert rouge_l("a b c d", ["a b", "a b c d e f g h"]) == pytest.approx(1.0)
    assert per_reference_best == pytest.approx(0.7093, abs=1e-4)
    # with one reference the two definitions agree: P = 1/2, R = 1
    assert rouge_l("a b c d", ["a b"]) == pytest.approx(per_reference_best)


def test_bleu_by_hand():
    c, r = "the cat sat on the mat", "the cat is on the mat"
    # unigrams 5/6, bigrams 3/5, equal lengths (no brevity penalty)
    assert bleu([c], [[r]], n=2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    # trigrams 1/4, 4-grams 0/3: the library adds 1e-15 to the match count, so BLEU-4 is small, not 0
    assert bleu([c], [[r]], n=4) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1e-15 / 3) ** (1 / 4))
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


def test_caption_edge_cases():
    for score in (lambda: bleu(["a cat"], [[]]), lambda: cider_d(["a", "b"], [["a"], []]), lambda: rouge_l("a", []),
                  lambda: bleu([], []), lambda: cider_d(["a"], [["a"], ["b"]])):
        with pytest.raises(RetainError):
            score()
    assert rouge_l("", ["a cat"]) == 0.0 and rouge_l("...", ["a cat"]) == 0.0
    assert cider_d(["", "c d"], [["a b"], ["c d"]]) == pytest.approx(5 / 2)
    # one item: every n-gram's IDF is log(1/1) = 0, so CIDEr-D is 0 even for a perfect answer
    assert cider_d(["a cat"], [["a cat"]]) == 0.0
    assert cider_d(["a", "b"], [["..."], [""]]) == 0.0  # no reference has a word


def test_only_caption_scoring_needs_pycocoevalcap():
    # a machine without the library (a lent GPU machine with its own Python) runs everything else
    import subprocess
    import sys

    code = ("import sys; sys.modules['pycocoevalcap'] = None\n"
            "import retain.cli, retain.families.mllm, retain.eval.instruct\n"
            "from retain.eval.text_scores import exact_match, bleu\n"
            "assert exact_match('Two', ['2']) == 1.0\n"
            "try:\n    bleu(['a cat'], [['a cat']])\nexcept ImportError:\n    print('caption scoring needs it')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "caption scoring needs it"
