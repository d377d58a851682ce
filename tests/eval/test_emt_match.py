"""The EMT rule matcher: each property on answers a careful judge would score, and its agreement with a
table of hand-judged answers (emt_judged.yaml)."""

from pathlib import Path

import pytest
import yaml

from retain.config import load_config
from retain.errors import RetainError
from retain.eval.emt_match import RuleMatcher, agreement, check_synonyms, disagreements_markdown, singular

TABLE = yaml.safe_load((Path(__file__).parent / "emt_judged.yaml").read_text())
SETS = TABLE["label_sets"]
FASHION = SETS["fashion-offline"]
ANIMALS = SETS["animal-mnist"]
DIGITS = SETS["digits"]

# One group of answers per property; breaking the property fails its group.
PROPERTIES = {  # property: [(label set, answer, the class it names or an outcome)]
    "slashes and alternatives": [("fashion-hf", "T-shirt", "T - shirt / top"), ("fashion-hf", "top", "T - shirt / top"),
                                 ("fashion-torchvision", "t-shirt", "T-shirt/top"),
                                 ("fashion-hf", "A shirt", "Shirt")],
    "hyphens, spaces, underscores": [("fashion-hf", "ankle-boots", "Ankle boot"), ("cifar100", "aquarium fish",
                                     "aquarium_fish"), ("cifar100", "a pick-up truck", "pickup_truck")],
    "numerals and number words": [("digit-words", "7", "seven"), ("digits", "seven", "7"),
                                  ("digits", "17", "outside_label_set")],
    "plurals": [("cifar100", "mice", "mouse"), ("cifar100", "wolves", "wolf"), ("cifar100", "women", "woman"),
                ("cifar100", "buses", "bus"), ("cifar100", "butterflies", "butterfly"), ("cifar10", "boxes",
                "outside_label_set")],
    "negation": [("fashion-hf", "It doesn't look like a coat; it's a dress", "Dress"),
                 ("cifar10", "It isn't a bird, it's a plane.", "airplane"),
                 ("cifar10", "a car rather than a truck", "automobile"),
                 ("cifar10", "a boat instead of a car", "ship"),
                 ("cifar10", "Neither a car nor a truck, it's a ship", "ship"),
                 ("cifar10", "I don't think it's a dog; it looks like a cat", "cat"),
                 ("cifar10", "No cat here", "outside_label_set")],
    "a retracted answer": [("cifar10", "A cat? No, a dog.", "dog")],
    "a hedge is not a negation": [("cifar10", "Not sure, maybe a dog.", "dog"),
                                  ("cifar10", "I am not sure whether a cat or a dog", "several_classes")],
    "hedges name several classes": [("cifar10", "a cat or a dog", "several_classes"),
                                    ("digits", "3 or 8", "several_classes"),
                                    ("cifar10", "cat/dog", "several_classes")],
    "counts and modifiers": [("digits", "There is one digit in the image: 4", "4"),
                             ("digit-words", "This one is a 4", "four"),
                             ("cifar100", "an orange fish", "outside_label_set"),
                             ("cifar100", "a baby elephant", "elephant"),
                             ("cifar100", "I can see a bottle", "bottle")],
    "the scene after the object": [("cifar100", "a lion on a plain", "lion"),
                                   ("cifar10", "a truck with a car on it", "truck")],
    "compounds that name something else": [("cifar10", "a hot dog", "outside_label_set")],
    "built-in synonyms": [("cifar10", "car", "automobile"), ("cifar10", "plane", "airplane"),
                          ("cifar10", "boat", "ship"), ("cifar10", "puppy", "dog"), ("fashion-hf", "tee shirt",
                          "T - shirt / top"), ("cifar100", "sofa", "couch"), ("textile", "no defect",
                          "nominal textile"), ("easyvqa-color", "grey", "gray")],
}


@pytest.mark.parametrize("prop", PROPERTIES)
def test_each_property(prop):
    for label_set, answer, expected in PROPERTIES[prop]:
        matcher = RuleMatcher(SETS[label_set])
        m = matcher.match(answer, 0)
        got = m.outcome if m.predicted is None else matcher.class_names[m.predicted]
        assert got == expected, f"{prop}: {answer!r} in {label_set} -> {got}"


HELD_OUT = [  # issue 17's answers the old matcher scored wrongly: label set, label, answer, outcome, class named
    ("fashion-hf", "T - shirt / top", "T-shirt", "correct", "T - shirt / top"),
    ("fashion-hf", "T - shirt / top", "tee shirt", "correct", "T - shirt / top"),
    ("cifar10", "automobile", "car", "correct", "automobile"),
    ("cifar10", "airplane", "plane", "correct", "airplane"),
    ("cifar10", "ship", "boat", "correct", "ship"),
    ("cifar10", "dog", "puppy", "correct", "dog"),
    ("digit-words", "seven", "7", "correct", "seven"),
    ("fashion-hf", "Dress", "It doesn't look like a coat; it's a dress", "correct", "Dress"),
    ("digits", "4", "There is one digit in the image: 4", "correct", "4"),
]


@pytest.mark.parametrize("label_set, label, answer, outcome, named", HELD_OUT)
def test_issue_17_answers(label_set, label, answer, outcome, named):
    classes = SETS[label_set]
    m = RuleMatcher(classes).match(answer, classes.index(label))
    assert (m.outcome, classes[m.predicted]) == (outcome, named)


CASES = [  # classes, answer, label, outcome, predicted
    (ANIMALS, "The image shows two cats.", 2, "correct", 2),
    (ANIMALS, "It is a horse, not a zebra.", 7, "correct", 7),
    (ANIMALS, "", 2, "outside_label_set", None),
    (ANIMALS, "catalog", 2, "outside_label_set", None),  # a class inside another word is not a mention
    (FASHION, "shirt", 0, "wrong_class", 6),  # "shirt" is its own class, not part of t-shirt
    (FASHION, "a shirt and a coat", 6, "several_classes", None),
    (DIGITS, "The number is seven.", 7, "correct", 7),
]


@pytest.mark.parametrize("classes, answer, label, outcome, predicted", CASES)
def test_tricky_answers(classes, answer, label, outcome, predicted):
    m = RuleMatcher(classes).match(answer, label)
    assert (m.outcome, m.predicted) == (outcome, predicted)


def test_singulars():
    words = ("ponies", "boxes", "wolves", "dress", "bus", "buses", "classes", "shoes", "mice", "women", "children",
             "people", "leaves", "butterflies", "fish", "gloves", "horses")
    assert [singular(w) for w in words] == ["pony", "box", "wolf", "dress", "bus", "bus", "class", "shoe", "mouse",
                                            "woman", "child", "person", "leaf", "butterfly", "fish", "glove", "horse"]


def test_the_judged_table_agrees_at_95_percent():
    cases = TABLE["cases"]
    assert len(cases) >= 150 and len({c[0] for c in cases}) >= 5
    rate, disagreements = agreement(TABLE)
    assert rate == pytest.approx(1 - len(disagreements) / len(cases))
    assert rate >= 0.95, f"agreement {rate:.3f}; disagreements:\n{disagreements_markdown(disagreements)}"


def test_agreement_counts_a_disagreement_and_lists_it():
    table = {"label_sets": {"pets": ["cat", "dog"]},
             "cases": [["pets", "cat", "a kitten", "cat", "correct"],
                       ["pets", "dog", "a wolf", "dog", "correct"]]}  # judged generously: the matcher disagrees
    rate, rows = agreement(table)
    assert rate == 0.5 and rows == [{"label_set": "pets", "label": "dog", "answer": "a wolf", "expected_class": "dog",
                                     "expected_outcome": "correct", "matcher_class": None,
                                     "matcher_outcome": "outside_label_set"}]
    assert disagreements_markdown(rows).splitlines()[2] == "| pets | dog | a wolf | correct (dog) | outside_label_set |"


def test_user_synonyms():
    m = RuleMatcher(SETS["textile"], synonyms={"textile with a local defect": ["hole", "stain"]})
    assert m.match("there is a small hole", 1).outcome == "correct"
    assert RuleMatcher(ANIMALS, {"Cat": "moggy"}).match("a moggy", 2).outcome == "correct"
    assert RuleMatcher(SETS["digit-words"], {"7": ["lucky"]}).match("lucky", 7).outcome == "correct"
    with pytest.raises(RetainError, match="class 'kitty', which is not in the label set"):
        RuleMatcher(ANIMALS, {"kitty": ["moggy"]})
    with pytest.raises(RetainError, match="Synonym 'dog' of class 'cat' already names class 'dog'"):
        RuleMatcher(ANIMALS, {"cat": ["dog"]})


def test_synonyms_from_the_config_are_checked_against_every_label_set(tmp_path):
    path = tmp_path / "synonyms.yaml"
    path.write_text("cat: [moggy]\nairplane: [flying machine]\n")
    table = load_config(None, [f"eval.synonyms={path}"]).eval.synonym_table()
    assert table == {"cat": ["moggy"], "airplane": ["flying machine"]}
    check_synonyms(table, {"cifar10": SETS["cifar10"], "animal-mnist": ANIMALS})  # each class is in some set
    with pytest.raises(RetainError, match="class 'airplane', which is in no EMT dataset's label set"):
        check_synonyms(table, {"animal-mnist": ANIMALS})
    assert load_config(None, ["eval.synonyms={cat: moggy}"]).eval.synonym_table() == {"cat": ["moggy"]}
    with pytest.raises(RetainError, match="does not exist"):
        load_config(None, [f"eval.synonyms={tmp_path / 'missing.yaml'}"])
    (tmp_path / "bad.yaml").write_text("- cat\n")
    with pytest.raises(RetainError, match="must map each class to its synonyms"):
        load_config(None, [f"eval.synonyms={tmp_path / 'bad.yaml'}"])
