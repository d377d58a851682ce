"""The generated caption corpus, deduplication and plain-text corpora."""

import re
import time

import pytest

from retain.data.offline import ANIMAL_CLASSES, COLORS, FASHION_CLASSES, SHAPES
from retain.errors import RetainError
from retain.multimon.corpus import (CORPUS_NOTE, dedupe, generated_capacity, generated_captions, normalize,
                                    read_text_corpus)


def words(sentence: str) -> set[str]:
    """Word tokens, written independently of retain.multimon.lexical."""
    return set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*|n't", sentence.lower().replace("n't", " n't")))


def test_normalize_and_dedupe():
    assert normalize("  A Red   circle on the LEFT. ") == "a red circle on the left"
    assert normalize("a dog!?") == "a dog" and normalize("a dog") == "a dog"
    assert dedupe(["a dog.", "A dog", "", "  ", "a cat", "a  dog!", "a cat."]) == ["a dog.", "a cat"]


def test_generated_captions_are_n_distinct_and_seeded():
    a = generated_captions(5000, seed=0)
    assert len(a) == 5000 and len({normalize(s) for s in a}) == 5000
    assert a == generated_captions(5000, seed=0)
    b = generated_captions(5000, seed=1)
    assert b != a and len(set(a) & set(b)) < 1000  # another sample, not a reordering
    assert all(s.endswith(".") and s == s.strip() and "  " not in s for s in a)
    assert "templates" in CORPUS_NOTE and "COCO" in CORPUS_NOTE


def test_large_corpus_and_impossible_sizes():
    start = time.perf_counter()
    big = generated_captions(200_000, seed=3)
    assert time.perf_counter() - start < 20
    assert len(big) == 200_000 and len({normalize(s) for s in big}) == 200_000
    assert generated_capacity() > 1_000_000
    with pytest.raises(RetainError, match="holds 1 to"):
        generated_captions(generated_capacity() + 1)
    with pytest.raises(RetainError):
        generated_captions(0)


PHENOMENA = {  # name -> (test on words and sentence, floor in 10,000 sentences)
    "negation": (lambda w, s: bool(w & {"not", "n't", "no", "none", "without"}), 700),
    "quantifier": (lambda w, s: bool(w & {"all", "some", "none", "every", "each", "many", "few", "several", "both"})
                   and "each other" not in s, 400),
    "position or relation": (lambda w, s: bool(w & {"left", "right", "top", "bottom", "above", "below", "under",
                                                    "behind", "front", "next", "centre"}), 2500),
    "relation between two objects": (lambda w, s: any(f" {r} " in s for r in ("to the left of", "above", "below",
                                                                               "on top of", "behind", "under")), 500),
    "count": (lambda w, s: bool(w & {"one", "two", "three", "four", "five", "2", "3", "4", "5"}), 600),
    "action": (lambda w, s: any(x.endswith("ing") for x in w), 2000),
    "time of day": (lambda w, s: bool(w & {"morning", "afternoon", "evening", "night", "noon", "sunset", "dawn",
                                           "dusk"}), 1500),
    "colour": (lambda w, s: bool(w & set(COLORS)), 3000),
    "size": (lambda w, s: bool(w & {"small", "large", "tiny", "big", "huge"}), 3000),
    "there is no": (lambda w, s: s.startswith(("there is no", "there are no")), 200),
    "digit": (lambda w, s: re.search(r"(number|digit|handwritten) \d", s) is not None, 200),
}


def test_every_phenomenon_is_well_represented_and_spread():
    corpus = generated_captions(10_000, seed=0)
    for name, (has, floor) in PHENOMENA.items():
        first = sum(has(words(s), s) for s in corpus[:5000])
        second = sum(has(words(s), s) for s in corpus[5000:])
        assert first + second >= floor, name
        assert abs(first - second) < 0.2 * (first + second), name  # frames are mixed, not exhausted in turn
    vocabulary = set().union(*(words(s) for s in corpus))
    for name in FASHION_CLASSES + ANIMAL_CLASSES + SHAPES + COLORS + [str(d) for d in range(10)]:
        assert set(name.split()) <= vocabulary, name


def test_read_text_corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufeffa red circle.\n\n  A red circle  \na blue triangle\n\u00e9t\u00e9 au parc\n".encode())
    assert read_text_corpus(path) == ["a red circle.", "a blue triangle", "\u00e9t\u00e9 au parc"]
    missing = tmp_path / "nope.txt"
    with pytest.raises(RetainError, match="nope.txt"):
        read_text_corpus(missing)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("a caf\u00e9\n".encode("latin-1"))
    with pytest.raises(RetainError, match="latin1.txt.*not UTF-8"):
        read_text_corpus(bad)
