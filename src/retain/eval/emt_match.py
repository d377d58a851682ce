"""EMT's deterministic answer matcher (Zhai et al., 2023, arXiv 2309.10313).

An MLLM asked "What is the object in the image? Please only answer a single object in
[c1, c2, ...]." answers in free text. The matcher decides which class the answer names:
after normalisation (case, punctuation, articles, hyphens), plural forms and synonyms, an
answer is scored by the class names it mentions. Exactly one class: that class (correct
or `wrong_class`); several: `several_classes`; none: `outside_label_set` (the paper's
hallucinated class). Longer class names win over names inside them ("ankle boot" over
"boot"), and a negated mention ("not a cat") does not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ARTICLES = {"a", "an", "the"}
NEGATIONS = {"not", "no", "isn't", "isnt", "never", "neither", "nor"}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Built-in synonyms for the offline datasets' classes; users add their own.
SYNONYMS = {
    "t-shirt": ["tshirt", "t shirt", "tee", "top", "t-shirt/top"],
    "trouser": ["pants", "trousers", "jeans"],
    "pullover": ["sweater", "jumper"],
    "sandal": ["flip flop"],
    "sneaker": ["trainer", "running shoe"],
    "ankle boot": ["boot"],
    "bag": ["handbag", "purse"],
    "gray": ["grey"],
    "rectangle": ["square"],
    "teal": ["turquoise", "cyan"],
    **{str(i): [w] for i, w in enumerate(NUMBER_WORDS)},
}

OUTCOMES = ("correct", "wrong_class", "several_classes", "outside_label_set")


def normalise(text: str) -> list[str]:
    """Lower-case word tokens without punctuation, articles or hyphens."""
    text = text.lower().replace("-", " ").replace("/", " ").replace("_", " ")
    words = re.findall(r"[a-z0-9']+", text)
    return [w.strip("'") for w in words if w not in ARTICLES]


def singular(word: str) -> str:
    """A plain English singular: cats -> cat, boxes -> box, ponies -> pony, wolves -> wolf."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    for suffix, repl in (("ies", "y"), ("ves", "f"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(suffix):
            return word[: -len(suffix)] + repl
    return word[:-1] if word.endswith("s") else word


def _key(words: list[str]) -> tuple[str, ...]:
    return tuple(singular(w) for w in words)


@dataclass
class Match:
    outcome: str
    """one of OUTCOMES"""
    predicted: int | None
    """the class the answer names, when it names exactly one"""
    mentioned: list[int] = field(default_factory=list)


class RuleMatcher:
    """Match free-text answers to one of `class_names` (see the module docstring)."""

    def __init__(self, class_names: list[str], synonyms: dict[str, list[str]] | None = None):
        table = {**SYNONYMS, **(synonyms or {})}
        self.class_names = list(class_names)
        self.phrases: list[tuple[tuple[str, ...], int]] = []
        for i, name in enumerate(class_names):
            for form in [name, *table.get(name.lower(), [])]:
                words = normalise(form)
                if words:
                    self.phrases.append((_key(words), i))
        # A synonym that is another class's own name belongs to that class only.
        own = {_key(normalise(n)) for n in class_names}
        self.phrases = [(p, i) for p, i in self.phrases if p not in own or p == _key(normalise(class_names[i]))]
        self.phrases.sort(key=lambda p: -len(p[0]))  # longest phrase first

    def mentioned(self, answer: str) -> list[int]:
        """Class indices named in `answer`, in order of first mention, negated mentions left out."""
        words = _key(normalise(answer))
        taken = [False] * len(words)
        found: list[tuple[int, int]] = []
        for phrase, cls in self.phrases:
            n = len(phrase)
            for start in range(len(words) - n + 1):
                if words[start:start + n] == phrase and not any(taken[start:start + n]):
                    for k in range(start, start + n):
                        taken[k] = True
                    if not NEGATIONS & set(words[max(0, start - 2):start]):
                        found.append((start, cls))
        ordered = [cls for _, cls in sorted(found)]
        return list(dict.fromkeys(ordered))

    def match(self, answer: str, label: int) -> Match:
        named = self.mentioned(answer)
        if not named:
            return Match("outside_label_set", None, named)
        if len(named) > 1:
            return Match("several_classes", None, named)
        return Match("correct" if named[0] == label else "wrong_class", named[0], named)
