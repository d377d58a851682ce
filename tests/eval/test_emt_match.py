"""The EMT rule matcher on a table of tricky answers."""

import pytest

from retain.eval.emt_match import RuleMatcher, singular

FASHION = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGITS = [str(i) for i in range(10)]

CASES = [  # classes, answer, label, outcome, predicted
    (ANIMALS, "cat", 2, "correct", 2),
    (ANIMALS, "A Cat.", 2, "correct", 2),
    (ANIMALS, "The image shows two cats.", 2, "correct", 2),
    (ANIMALS, "dog", 2, "wrong_class", 4),
    (ANIMALS, "It is a horse, not a zebra.", 7, "correct", 7),
    (ANIMALS, "cat or dog", 2, "several_classes", None),
    (ANIMALS, "a tiger", 2, "outside_label_set", None),
    (ANIMALS, "", 2, "outside_label_set", None),
    (ANIMALS, "wolves", 2, "outside_label_set", None),
    (ANIMALS, "Sheep", 8, "correct", 8),
    (ANIMALS, "giraffes!", 6, "correct", 6),
    (ANIMALS, "catalog", 2, "outside_label_set", None),  # a class inside another word is not a mention
    (FASHION, "ankle boot", 9, "correct", 9),
    (FASHION, "ankle-boots", 9, "correct", 9),
    (FASHION, "boot", 9, "correct", 9),  # synonym
    (FASHION, "T-shirt", 0, "correct", 0),
    (FASHION, "tshirt", 0, "correct", 0),
    (FASHION, "shirt", 0, "wrong_class", 6),  # "shirt" is its own class, not part of t-shirt
    (FASHION, "a pair of trousers", 1, "correct", 1),
    (FASHION, "sweater", 2, "correct", 2),
    (FASHION, "dresses", 3, "correct", 3),
    (FASHION, "a shirt and a coat", 6, "several_classes", None),
    (DIGITS, "7", 7, "correct", 7),
    (DIGITS, "The number is seven.", 7, "correct", 7),
    (DIGITS, "17", 7, "outside_label_set", None),
    (DIGITS, "3 or 8", 3, "several_classes", None),
]


@pytest.mark.parametrize("classes, answer, label, outcome, predicted", CASES)
def test_tricky_answers(classes, answer, label, outcome, predicted):
    m = RuleMatcher(classes).match(answer, label)
    assert (m.outcome, m.predicted) == (outcome, predicted)


def test_user_synonyms_and_singulars():
    m = RuleMatcher(["nominal textile", "defect"], synonyms={"defect": ["flaw"]})
    assert m.match("there is a flaw", 1).outcome == "correct"
    assert [singular(w) for w in ("ponies", "boxes", "wolves", "dress", "bus", "classes", "shoes")] == [
        "pony", "box", "wolf", "dress", "bus", "class", "shoe"]
