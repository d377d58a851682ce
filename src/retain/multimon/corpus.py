"""Sentence corpora for MultiMon's search (Tong, Jones, Steinhardt, 2023, arXiv 2306.12105).

The paper mines pairs from human-written caption corpora (SNLI, MS-COCO). Offline, retain
generates caption-like sentences from templates ("frames") over the vocabulary of its
offline image datasets: Fashion-MNIST garments, Animal-MNIST animals, easy-VQA shapes and
colours, handwritten digits, with sizes, counts, positions, spatial relations, actions,
times of day, quantifiers and negation. Each frame is a product of slots, so its
sentences are numbered by a mixed-radix index; `generated_captions` draws frames by
weight and, within a frame, indices without replacement, until it has n distinct
sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from retain.data.offline import ANIMAL_CLASSES, COLORS, FASHION_CLASSES, SHAPES
from retain.errors import RetainError
from retain.multimon.vocabulary import (ACTION_GROUPS, COUNT_WORDS, POSITIONS, RELATIONS, SIZES, TIME_PHRASES,
                                        article, normalize, plural)

CORPUS_NOTE = ("caption-like sentences generated from templates over the offline datasets' vocabulary "
               "(shapes, colours, garments, animals, digits), not a human-written corpus like COCO")


def dedupe(sentences: Iterable[str]) -> list[str]:
    """The first sentence of each normalised form, in order; empty ones dropped."""
    seen, out = set(), []
    for s in sentences:
        key = normalize(s)
        if key and key not in seen:
            seen.add(key)
            out.append(s)
    return out


def read_text_corpus(path) -> list[str]:
    """One sentence per line of a UTF-8 file, blank lines skipped, deduplicated."""
    p = Path(path)
    if not p.is_file():
        raise RetainError(f"The corpus file {p} does not exist (one sentence per line, UTF-8).")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RetainError(f"The corpus file {p} is not UTF-8 (byte {e.start}): re-save it as UTF-8.") from None
    return dedupe(line.strip() for line in text.splitlines())


# ---- frames ---------------------------------------------------------------------------
def _opt(items) -> tuple[str, ...]:
    return ("",) + tuple(items)


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p) + "."


def _a(*words: str) -> str:
    """'a small red circle' from ('small', 'red', 'circle'), with a/an as needed."""
    phrase = " ".join(w for w in words if w)
    return f"{article(phrase)} {phrase}"


def _count(n: str, *words: str) -> str:
    """'two red circles' / 'one red circle'."""
    *attrs, noun = words
    return " ".join(w for w in (n, *attrs, noun if n in ("one", "1") else plural(noun)) if w)


@dataclass(frozen=True)
class Frame:
    """Sentences from one template: render(*values) over every combination of the slots."""

    name: str
    weight: float
    slots: tuple[tuple[str, ...], ...]
    render: Callable[..., str]

    @property
    def size(self) -> int:
        return math.prod(len(s) for s in self.slots)

    def sentence(self, index: int) -> str:
        values = []
        for slot in self.slots:
            index, k = divmod(index, len(slot))
            values.append(slot[k])
        return self.render(*values)


WRAPPERS = ("", "a photo of", "a picture of", "a drawing of", "an image of")
INTRANSITIVE, TRANSITIVE, HANDLING = ACTION_GROUPS["intransitive"], ACTION_GROUPS["transitive"], ACTION_GROUPS["handling"]
ANIMAL_COLOURS = [c for c in COLORS if c in ("black", "brown", "gray")]
OBJECTS = SHAPES + FASHION_CLASSES + ANIMAL_CLASSES
COLOURABLE = SHAPES + FASHION_CLASSES
PLACES = ["in a field", "on the grass", "in the snow", "in a zoo", "on a beach", "in a park"]
PEOPLE = ["man", "woman", "child", "person"]
COUNTS = COUNT_WORDS + ["2", "3", "4", "5"]
DIGITS = [str(d) for d in range(10)]
QUANTIFIED = [f"{q} {{ps}}" for q in ("all", "all of the", "some", "some of the", "none of the", "no", "many",
                                       "many of the", "few", "few of the", "several", "several of the", "both",
                                       "both of the", "most", "most of the")] + ["every {s}", "each {s}", "no {s}"]
"""quantified noun phrases: {ps} a plural noun, {s} a singular one"""


def _quantified(q: str, noun: str) -> tuple[str, str]:
    """('every circle', 'is') / ('all of the circles', 'are')."""
    return (q.format(s=noun), "is") if "{s}" in q else (q.format(ps=plural(noun)), "are")


FRAMES = [
    Frame("shape at a position", 1.0, (WRAPPERS, _opt(SIZES), tuple(COLORS), tuple(SHAPES), tuple(POSITIONS)),
          lambda w, s, c, o, p: _join(w, _a(s, c, o), p)),
    Frame("counted objects", 1.2, (tuple(COUNTS), _opt(SIZES), _opt(COLORS), tuple(OBJECTS), _opt(POSITIONS)),
          lambda n, s, c, o, p: _join(_count(n, s, c, o), p)),
    Frame("shape relation", 1.0, (_opt(SIZES), _opt(COLORS), tuple(SHAPES), tuple(RELATIONS), _opt(SIZES),
                                  _opt(COLORS), tuple(SHAPES)),
          lambda s1, c1, o1, r, s2, c2, o2: _join(_a(s1, c1, o1), r, _a(s2, c2, o2))),
    Frame("garment relation", 0.5, (_opt(COLORS), tuple(FASHION_CLASSES), tuple(RELATIONS), _opt(COLORS),
                                    tuple(FASHION_CLASSES)),
          lambda c1, o1, r, c2, o2: _join(_a(c1, o1), r, _a(c2, o2))),
    Frame("animal relation", 0.6, (_opt(SIZES), tuple(ANIMAL_CLASSES), tuple(RELATIONS), _opt(SIZES),
                                   tuple(ANIMAL_CLASSES), _opt(TIME_PHRASES)),
          lambda s1, o1, r, s2, o2, t: _join(_a(s1, o1), r, _a(s2, o2), t)),
    Frame("animal action", 1.2, (_opt(SIZES), _opt(ANIMAL_COLOURS), tuple(ANIMAL_CLASSES), tuple(INTRANSITIVE),
                                 _opt(PLACES), _opt(TIME_PHRASES)),
          lambda s, c, o, v, p, t: _join(_a(s, c, o), v, p, t)),
    Frame("animal chasing animal", 0.8, (_opt(SIZES), tuple(ANIMAL_CLASSES), tuple(TRANSITIVE), tuple(ANIMAL_CLASSES),
                                         _opt(PLACES), _opt(TIME_PHRASES)),
          lambda s, o1, v, o2, p, t: _join(_a(s, o1), v, _a(o2), p, t)),
    Frame("two animals", 0.5, (tuple(ANIMAL_CLASSES), tuple(ANIMAL_CLASSES), tuple(INTRANSITIVE),
                               ("", "next to each other", "side by side", "together"), _opt(TIME_PHRASES)),
          lambda o1, o2, v, g, t: _join(f"two {plural(o1)}" if o1 == o2 else f"{_a(o1)} and {_a(o2)}", v, g, t)),
    Frame("there is no", 0.6, (_opt(SIZES), _opt(COLORS), tuple(OBJECTS), ("one", "many"),
                               ("in the picture", "in the image", *POSITIONS)),
          lambda s, c, o, k, p: _join("there is no" if k == "one" else "there are no",
                                      " ".join(w for w in (s, c, o if k == "one" else plural(o)) if w), p)),
    Frame("not a colour", 0.5, (WRAPPERS, _opt(SIZES), tuple(COLOURABLE), ("that is not", "which is not", "that isn't"),
                                tuple(COLORS)),
          lambda w, s, o, n, c: _join(w, _a(s, o), n, c)),
    Frame("animal not acting", 0.5, (("the", "a"), _opt(SIZES), tuple(ANIMAL_CLASSES), ("is not", "isn't", "that is not"),
                                     tuple(INTRANSITIVE), _opt(PLACES), _opt(TIME_PHRASES)),
          lambda d, s, o, n, v, p, t: _join(_a(s, o) if d == "a" else " ".join(w for w in ("the", s, o) if w),
                                            n, v, p, t)),
    Frame("without", 0.3, (tuple(ANIMAL_CLASSES), tuple(INTRANSITIVE), tuple(ANIMAL_CLASSES), _opt(TIME_PHRASES)),
          lambda o1, v, o2, t: _join(_a(o1), v, "without", _a(o2), t)),
    Frame("quantified colour", 0.6, (tuple(QUANTIFIED), _opt(SIZES), tuple(COLOURABLE), tuple(COLORS),
                                     ("", "in the picture", "in this image")),
          lambda q, s, o, c, p: _join(*_quantified(q, f"{s} {o}".strip()), c, p)),
    Frame("quantified action", 0.6, (tuple(QUANTIFIED), tuple(ANIMAL_CLASSES), tuple(INTRANSITIVE), _opt(PLACES),
                                     _opt(TIME_PHRASES)),
          lambda q, o, v, p, t: _join(*_quantified(q, o), v, p, t)),
    Frame("two coloured shapes", 0.8, (_opt(SIZES), tuple(COLORS), tuple(SHAPES), _opt(SIZES), tuple(COLORS),
                                       tuple(SHAPES), _opt(POSITIONS)),
          lambda s1, c1, o1, s2, c2, o2, p: _join(_a(s1, c1, o1), "and", _a(s2, c2, o2), p)),
    Frame("two coloured garments", 0.2, (tuple(COLORS), tuple(FASHION_CLASSES), tuple(COLORS), tuple(FASHION_CLASSES)),
          lambda c1, o1, c2, o2: _join(_a(c1, o1), "and", _a(c2, o2))),
    Frame("person with a garment", 0.5, (tuple(PEOPLE), tuple(HANDLING), _opt(COLORS), tuple(FASHION_CLASSES),
                                         _opt(PLACES), _opt(TIME_PHRASES)),
          lambda h, v, c, o, p, t: _join(_a(h), v, _a(c, o), p, t)),
    Frame("person with two garments", 0.4, (tuple(PEOPLE), tuple(HANDLING), tuple(COLORS), tuple(FASHION_CLASSES),
                                            tuple(COLORS), tuple(FASHION_CLASSES)),
          lambda h, v, c1, o1, c2, o2: _join(_a(h), v, _a(c1, o1), "and", _a(c2, o2))),
    Frame("digit", 0.4, (WRAPPERS, ("the number {}", "a handwritten {}", "a handwritten digit {}", "the digit {}"),
                         tuple(DIGITS), _opt(COLORS), _opt(POSITIONS)),
          lambda w, f, d, c, p: _join(w, f.format(d), f"written in {c} ink" if c else "", p)),
    Frame("two digits", 0.2, (("the number", "the digit", "a handwritten"), tuple(DIGITS), tuple(RELATIONS),
                              tuple(DIGITS)),
          lambda f, d1, r, d2: _join(f, d1, r, f, d2)),
    Frame("garment", 0.5, (WRAPPERS, _opt(SIZES), _opt(COLORS), tuple(FASHION_CLASSES),
                           _opt((*POSITIONS, "on a table", "on a hanger", "on the floor"))),
          lambda w, s, c, o, p: _join(w, _a(s, c, o), p)),
    Frame("animal", 0.3, (WRAPPERS, _opt(SIZES), _opt(ANIMAL_COLOURS), tuple(ANIMAL_CLASSES), _opt(POSITIONS)),
          lambda w, s, c, o, p: _join(w, _a(s, c, o), p)),
]


def generated_capacity() -> int:
    """How many sentences the frames can make (an upper bound on `generated_captions`' n)."""
    return sum(f.size for f in FRAMES)


def generated_captions(n: int = 60000, seed: int = 0) -> list[str]:
    """n distinct caption-like sentences over the offline domains, the same for the same seed.

    Each sentence comes from a frame drawn by weight (among frames not yet used up) and a
    fresh index of that frame, so every phenomenon is spread over the whole list.
    """
    capacity = generated_capacity()
    if not 1 <= n <= capacity:
        raise RetainError(f"The generated corpus holds 1 to {capacity:,} distinct sentences, not {n:,}; "
                          "use a text file or a `datasets` corpus for more.")
    rng = np.random.default_rng(seed)
    weights = np.array([f.weight for f in FRAMES])
    orders: list[np.ndarray | None] = [None] * len(FRAMES)  # each frame's index order, drawn on first use
    used = [0] * len(FRAMES)
    out, seen = [], set()
    while len(out) < n:
        live = np.array([used[k] < f.size for k, f in enumerate(FRAMES)])
        if not live.any():
            raise RetainError(f"The generated corpus ran out after {len(out):,} distinct sentences; ask for fewer.")
        p = np.where(live, weights, 0.0)
        for k in rng.choice(len(FRAMES), size=max(1024, n - len(out)), p=p / p.sum()):
            if used[k] == FRAMES[k].size:
                continue
            if orders[k] is None:
                orders[k] = rng.permutation(FRAMES[k].size)
            sentence = FRAMES[k].sentence(int(orders[k][used[k]]))
            used[k] += 1
            key = normalize(sentence)
            if key not in seen:
                seen.add(key)
                out.append(sentence)
                if len(out) == n:
                    break
    return out

