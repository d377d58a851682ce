"""MultiMon's offline "language model": failure types, rewrites and images from the words of a pair.

MultiMon (Tong, Jones, Steinhardt, 2023, arXiv 2306.12105) asks a language model to name
the systematic failures behind mined pairs, to write new pairs of each failure, and
grounds pairs in images to test downstream systems. Without a language model, retain
does the same from word classes:

- `categorise_pair`: the failure type is the class of the words that differ between the
  two sentences (or, for a reordering, what moved: attributes, nouns, spatial words).
- `rewrite`: a controlled edit of one such slot, which yields a sentence that should look
  different as an image and that `categorise_pair` puts in the same category.
- `ground`: the offline image dataset and labels that depict a single-object sentence.

The word lists cover the generated corpus (`retain.multimon.corpus`) and common caption
words; anything else is "other".
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from retain.data.offline import ANIMAL_CLASSES, COLORS, FASHION_CLASSES, SHAPES
from retain.errors import RetainError, suggest
from retain.multimon.vocabulary import (ACTION_GROUPS, ACTION_WORDS, ARTICLES, ATTRIBUTES, COLOUR_WORDS,
                                        COUNT_WORDS, MULTIWORD_NOUNS, NEGATIONS, NOUN_FORMS, NOUN_GROUPS,
                                        NUMBER_LIKE, NUMBER_WORDS, NUMBERS, OBJECT_WORDS, QUANTIFIERS, SIZE_SWAPS,
                                        SIZE_WORDS, SPATIAL_WORDS, TIME_PHRASES, TIME_WORDS, article, normalize,
                                        plural)

CATEGORIES: dict[str, str] = {
    "quantifier": "The embedding ignores quantifiers such as all, some, none of, every or few, so scenes where "
                  "every object has a property and scenes where only some or none do are encoded alike.",
    "negation": "The embedding ignores negation (not, no, without, there is no), so a caption and its negation, "
                "which describe opposite images, are encoded alike.",
    "spatial relation": "The embedding ignores spatial words such as left and right, above and below, or in "
                        "front of and behind, so images with the objects in different places are encoded alike.",
    "attribute binding": "The embedding does not bind attributes to the objects they describe, so swapping the "
                         "colours or sizes of two objects, which changes the image, leaves the encoding unchanged.",
    "role reversal": "The embedding ignores which object plays which role around a verb or relation, so 'a dog "
                     "chasing a cat' and 'a cat chasing a dog' describe different images but are encoded alike.",
    "colour": "The embedding confuses colour words, so objects of different colours, which look plainly "
              "different, are encoded alike.",
    "size": "The embedding ignores size words such as small, large, tiny or huge, so images of objects of very "
            "different sizes are encoded alike.",
    "number": "The embedding ignores counts and digits, so images with different numbers of objects, or different "
              "written digits, are encoded alike.",
    "action": "The embedding ignores what a subject is doing (running, sleeping, chasing), so images of different "
              "actions or poses are encoded alike.",
    "time of day": "The embedding ignores the time of day (morning, noon, night), so scenes with very different "
                   "light are encoded alike.",
    "object": "The embedding confuses different objects of the same kind, so images of different animals, "
              "garments or shapes are encoded alike.",
    "other": "The two sentences differ in words outside the known word classes, or only in their order; the "
             "difference may still matter visually but has no controlled rewrite.",
}


# ---- tokens ---------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+(?=n't\b)|n't\b|[a-z0-9]+(?:['-][a-z0-9]+)*")


@dataclass(frozen=True)
class _Tok:
    word: str
    start: int
    end: int


def _toks(sentence: str) -> list[_Tok]:
    text = sentence.lower().replace("\u2019", "'")
    return [_Tok(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def tokens(sentence: str) -> list[str]:
    """Lower-cased word tokens, punctuation stripped; "isn't" -> ["is", "n't"]."""
    return [t.word for t in _toks(sentence)]


def word_diff(a: str, b: str) -> tuple[list[str], list[str]]:
    """The words only in a and the words only in b, in order (difflib on word tokens)."""
    return _diff(tokens(a), tokens(b))


def _diff(ta: list[str], tb: list[str]) -> tuple[list[str], list[str]]:
    only_a, only_b = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if tag != "equal":
            only_a += ta[i1:i2]
            only_b += tb[j1:j2]
    return only_a, only_b


# ---- categorise -----------------------------------------------------------------------
def _is_number(w: str) -> bool:
    return w in NUMBER_LIKE or w.isdigit()


def _phrases(words: list[str]) -> tuple[list[str], list[tuple[str, tuple[str, ...], str]]]:
    """The skeleton of a sentence and its noun phrases (determiner, attributes, noun).

    Each noun phrase is replaced by "<np>" in the skeleton; "an" is read as "a".
    """
    words = ["a" if w == "an" else w for w in words]
    skeleton, phrases, i = [], [], 0
    while i < len(words):
        j = i + 1 if words[i] in ARTICLES or _is_number(words[i]) else i
        k = j
        while k < len(words) and words[k] in ATTRIBUTES:
            k += 1
        end = None
        if k < len(words) and words[k] in NOUN_FORMS:
            end = k + 1
        elif k + 1 < len(words) and words[k + 1] in NOUN_FORMS and (words[k], NOUN_FORMS[words[k + 1]][1]) in MULTIWORD_NOUNS:
            end = k + 2
        elif j > i and k < len(words) and words[k] not in _NOT_NOUNS and not _is_number(words[k]):
            end = k + 1  # an unknown word after a determiner: read as a noun ("an astronaut")
        if end is None:
            skeleton.append(words[i])
            i += 1
        else:
            phrases.append((words[i] if j > i else "", tuple(words[j:k]), " ".join(words[k:end])))
            skeleton.append("<np>")
            i = end
    return skeleton, phrases


_NOT_NOUNS = (ARTICLES | QUANTIFIERS | NEGATIONS | SPATIAL_WORDS | TIME_WORDS
              | {w for w in ACTION_WORDS if w.endswith("ing")}
              | {"and", "or", "of", "to", "in", "on", "at", "with", "is", "are", "that", "which", "who"})


_SYMMETRIC = {"next", "beside", "near", "with", "between", "by", "together", "and", "or", "nor", "side"}
"""words of relations that read the same both ways ("a dog next to a cat"), and conjunctions"""


def _related(skeleton: list[str], p: int, q: int) -> bool:
    """Whether noun phrases p < q are linked by a verb or an asymmetric relation ("chasing", "above")."""
    at = [k for k, w in enumerate(skeleton) if w == "<np>"]
    between = skeleton[at[p] + 1:at[q]]
    return (not {"and", "or", "nor"} & set(between)
            and any(w not in ARTICLES | NUMBERS | _SYMMETRIC | {"of", "to", "<np>"} for w in between))


def _reordering(ta: list[str], tb: list[str]) -> str:
    """The category of two sentences with the same words in a different order."""
    ska, npa = _phrases(ta)
    skb, npb = _phrases(tb)
    if ska == skb and len(npa) == len(npb):
        moved = [k for k in range(len(npa)) if npa[k] != npb[k]]
        related = len(moved) >= 2 and _related(ska, moved[0], moved[-1])
        bindings = [Counter((attr, noun) for _, attrs, noun in nps for attr in attrs) for nps in (npa, npb)]
        if [p[2] for p in npa] != [p[2] for p in npb] and Counter(npa) == Counter(npb):
            return "role reversal" if related else "other"  # whole phrases swapped
        if bindings[0] != bindings[1]:
            return "attribute binding"
        return "role reversal" if related else "other"  # e.g. two triangles swapped their colours around "above"
    if len(ska) == len(skb):
        moved_words = {w for w, v in zip(ska, skb) if w != v}
    else:
        da, db = _diff(ska, skb)
        moved_words = set(da) | set(db)
    if moved_words & SPATIAL_WORDS:
        return "spatial relation"
    if moved_words & ACTION_WORDS:  # actions that moved to other subjects
        return "attribute binding"
    return "other"


_A = {"an": "a"}


def categorise_pair(a: str, b: str) -> str:
    """The failure type (a key of CATEGORIES) that tells sentence a from sentence b.

    Same words in a different order (a/an aside): "role reversal" when noun phrases swap
    places around a verb or an asymmetric relation ("a dog chasing a cat" / "a cat chasing
    a dog"; not "next to"),
    "attribute binding" when colours or sizes (or actions) end up on other nouns,
    "spatial relation" when spatial words moved, else "other" (e.g. "a dog and a cat" /
    "a cat and a dog", where only the order of the conjuncts changed).

    Otherwise the words that differ decide, in this order: negation, quantifier (these
    change what is true of the scene rather than its content), number, spatial relation,
    colour, size, time of day, action, object, other. "no" and "none" are a quantifier
    when the other side's differing words hold a quantifier too ("all" -> "none of"), and
    a negation when inserted or removed ("a dog" -> "there is no dog"). A noun that turns
    from singular to plural counts as a change of number.
    """
    ta, tb = tokens(a), tokens(b)
    if ta == tb:
        return "other"
    if Counter(_A.get(w, w) for w in ta) == Counter(_A.get(w, w) for w in tb):
        return _reordering(ta, tb)
    da, db = word_diff(a, b)
    diff = set(da) | set(db)
    if diff & NEGATIONS:
        return "negation"
    qa, qb = set(da) & QUANTIFIERS, set(db) & QUANTIFIERS
    if qa and qb:
        return "quantifier"
    if diff & {"no", "none"}:
        return "negation"
    if qa or qb:
        return "quantifier"
    if any(_is_number(w) for w in diff) or _number_agreement(da, db):
        return "number"
    for name, words in (("spatial relation", SPATIAL_WORDS), ("colour", COLOUR_WORDS), ("size", SIZE_WORDS),
                        ("time of day", TIME_WORDS), ("action", ACTION_WORDS), ("object", OBJECT_WORDS)):
        if diff & words:
            return name
    return "other"


def _number_agreement(da: list[str], db: list[str]) -> bool:
    """Whether a noun is singular on one side and plural on the other ('a circle' / 'circles')."""
    forms_a = {NOUN_FORMS[w][1:] for w in da if w in NOUN_FORMS}
    forms_b = {NOUN_FORMS[w][1:] for w in db if w in NOUN_FORMS}
    return any((noun, not pl) in forms_b for noun, pl in forms_a)


# ---- rewrite --------------------------------------------------------------------------
Edit = tuple[int, int, str]  # replace sentence[start:end] by text


def _apply(sentence: str, edits: list[Edit]) -> str:
    out = sentence
    for start, end, text in sorted(edits, reverse=True):
        if text and out[start:end][:1].isupper():
            text = text[0].upper() + text[1:]
        out = out[:start] + text + out[end:]
    out = re.sub(r" {2,}", " ", out).strip()
    # a/an agreement after the edit
    toks = _toks(out)
    fixes = [(t.start, t.end, article(n.word)) for t, n in zip(toks, toks[1:])
             if t.word in ("a", "an") and article(n.word) != t.word]
    for start, end, text in reversed(fixes):
        text = text.capitalize() if out[start].isupper() else text
        out = out[:start] + text + out[end:]
    return out


@dataclass(frozen=True)
class _Noun:
    first: int  # token index of the unit's first token ('ankle' of 'ankle boot')
    last: int  # token index of the head noun
    group: str
    singular: str
    is_plural: bool


def _nouns(toks: list[_Tok]) -> list[_Noun]:
    out = []
    for i, t in enumerate(toks):
        if t.word not in NOUN_FORMS:
            continue
        group, singular, pl = NOUN_FORMS[t.word]
        first = i
        if i > 0 and (toks[i - 1].word, singular) in MULTIWORD_NOUNS:
            first, singular = i - 1, MULTIWORD_NOUNS[(toks[i - 1].word, singular)]
        if plural(singular) == singular:  # "sheep": plural after a count or quantifier, or before "are"
            k = first - 1
            while k >= 0 and toks[k].word in ATTRIBUTES:
                k -= 1
            det = toks[k].word if k >= 0 else ""
            after = toks[i + 1].word if i + 1 < len(toks) else ""
            pl = (det in _PLURAL_DETERMINERS or (det.isdigit() and det != "1") or (det in NUMBERS and det != "one")
                  or after in ("are", "were"))
        out.append(_Noun(first, i, group, singular, pl))
    return out


_PLURAL_DETERMINERS = {"many", "several", "few", "both", "all", "most", "some", "these", "those"}
_BINDABLE = ("clothing", "animal", "shape", "person")  # nouns whose attributes and roles are rewritten


def _noun_after(toks: list[_Tok], i: int) -> _Noun | None:
    """The noun whose phrase starts after token i (skipping colours and sizes)."""
    j = i + 1
    while j < len(toks) and toks[j].word in ATTRIBUTES:
        j += 1
    return next((n for n in _nouns(toks) if n.first == j), None)


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _with_form(noun: str, is_plural: bool) -> str:
    return plural(noun) if is_plural else noun


def _colour(s, toks, rng):
    slots = [t for t in toks if t.word in COLOUR_WORDS]
    if not slots:
        return None
    t = _pick(rng, slots)
    old = "gray" if t.word == "grey" else t.word
    return [(t.start, t.end, _pick(rng, [c for c in COLORS if c != old]))]


def _size(s, toks, rng):
    slots = [t for t in toks if t.word in SIZE_SWAPS]
    if not slots:
        return None
    t = _pick(rng, slots)
    return [(t.start, t.end, _pick(rng, SIZE_SWAPS[t.word]))]


def _agree_verb(toks: list[_Tok], noun: _Noun, is_plural: bool) -> list[Edit]:
    """Make the first 'is'/'are' after the sentence's first noun (its subject) agree with its new number."""
    if _nouns(toks)[0] != noun:
        return []
    verbs = {"is": "are", "was": "were"} if is_plural else {"are": "is", "were": "was"}
    k = next((k for k in range(noun.last + 1, len(toks)) if toks[k].word in ("is", "are", "was", "were")), None)
    if k is not None and toks[k].word in verbs:
        return [(toks[k].start, toks[k].end, verbs[toks[k].word])]
    return []


def _number(s, toks, rng):
    counts = [i for i, t in enumerate(toks) if t.word in NUMBERS or (t.word.isdigit() and len(t.word) <= 2)]
    articles = [i for i, t in enumerate(toks) if t.word in ("a", "an") and _noun_after(toks, i) is not None
                and _noun_after(toks, i).group in _BINDABLE and (i == 0 or toks[i - 1].word not in ("is", "are"))]
    if not counts and not articles:
        return None
    i = _pick(rng, counts) if counts else _pick(rng, articles)
    t, noun = toks[i], _noun_after(toks, i)
    if noun is None:  # a digit or number on its own ("the number 7")
        pool = [str(d) for d in range(10)] if t.word.isdigit() else NUMBER_WORDS[:10]
        return [(t.start, t.end, _pick(rng, [w for w in pool if w != t.word]))]
    digits = t.word.isdigit()
    pool = [str(k) for k in range(1, 6)] if digits else COUNT_WORDS
    old = "one" if t.word in ("a", "an") else t.word
    new = _pick(rng, [w for w in pool if w != old])
    many = new not in ("one", "1")
    head = toks[noun.first]
    edits = [(t.start, t.end, new), (head.start, toks[noun.last].end, _with_form(noun.singular, many))]
    return edits + _agree_verb(toks, noun, many)


_SPATIAL_PHRASES = {("on", "top", "of"): ["under", "below"], ("in", "front", "of"): ["behind"],
                    ("next", "to"): ["far from"], ("far", "from"): ["next to"]}
_SPATIAL_SWAPS = {"left": ["right"], "right": ["left"], "top": ["bottom"], "bottom": ["top"], "above": ["below"],
                  "below": ["above"], "under": ["on top of", "above"], "over": ["under"], "beneath": ["above"],
                  "underneath": ["above"], "behind": ["in front of"], "beside": ["far from"], "near": ["far from"],
                  "inside": ["outside"], "outside": ["inside"], "centre": ["corner"], "center": ["corner"],
                  "middle": ["corner"]}


def _spatial(s, toks, rng):
    words = [t.word for t in toks]
    slots, i = [], 0
    while i < len(toks):
        phrase = next((p for p in _SPATIAL_PHRASES if tuple(words[i:i + len(p)]) == p), None)
        if phrase:
            slots.append((toks[i].start, toks[i + len(phrase) - 1].end, _SPATIAL_PHRASES[phrase]))
            i += len(phrase)
            continue
        if words[i] in _SPATIAL_SWAPS:
            slots.append((toks[i].start, toks[i].end, _SPATIAL_SWAPS[words[i]]))
        i += 1
    if not slots:
        return None
    start, end, options = _pick(rng, slots)
    return [(start, end, _pick(rng, options))]


def _delete_word(toks: list[_Tok], i: int) -> Edit:
    """Delete token i and the space before it (or after it, at the start)."""
    if i > 0:
        return (toks[i - 1].end, toks[i].end, "")
    return (toks[0].start, toks[1].start if len(toks) > 1 else toks[0].end, "")


def _negation(s, toks, rng):
    words = [t.word for t in toks]
    if set(words) & (NEGATIONS | {"no", "none"}):
        return _remove_negation(toks, words, rng)
    options = []
    cop = next((i for i, w in enumerate(words) if w in ("is", "are", "was", "were")), None)
    if cop is not None:
        options.append([(toks[cop].end, toks[cop].end, " not")])
    nouns = _nouns(toks)
    for n in nouns:  # "a dog chasing a cat" -> "a dog that is not chasing a cat"
        k = n.last + 1
        if k < len(toks) and words[k] in ACTION_WORDS and words[k].endswith("ing"):
            many = n.is_plural or "and" in words[max(0, n.first - 4):n.first]  # "a zebra and a bear standing"
            options.append([(toks[k].start, toks[k].start, f"that {'are' if many else 'is'} not ")])
            break
    for n in nouns:  # "a red circle" -> "a circle that is not red"
        k = n.first - 1
        if k >= 0 and words[k] in ATTRIBUTES:
            verb = "are" if n.is_plural else "is"
            options.append([(toks[k].start, toks[k + 1].start, ""),
                            (toks[n.last].end, toks[n.last].end, f" that {verb} not {words[k]}")])
            break
    first = _noun_after(toks, 0) if toks else None
    if first is not None and cop is None and (words[0] in ("a", "an") or words[0] in NUMBERS or words[0].isdigit()):
        lead = "there are no" if first.is_plural else "there is no"  # "a red circle" -> "there is no red circle"
        options.append([(toks[0].start, toks[0].end, lead)])
    for i, w in enumerate(words):
        if w == "with" and (i == 0 or words[i - 1] != "playing"):
            options.append([(toks[i].start, toks[i].end, "without")])
            break
    return _pick(rng, options) if options else None


def _remove_negation(toks, words, rng):
    options = []
    for i, w in enumerate(words):
        if w == "n't":
            stem = {"ca": "can", "wo": "will", "sha": "shall"}.get(words[i - 1], None) if i else None
            edit = [(toks[i].start, toks[i].end, "")]
            options.append(edit + ([(toks[i - 1].start, toks[i - 1].end, stem)] if stem else []))
        elif w in ("not", "never"):
            options.append([_delete_word(toks, i)])
        elif w == "without":
            options.append([(toks[i].start, toks[i].end, "with")])
        elif w in ("nothing", "nobody"):
            options.append([(toks[i].start, toks[i].end, "some" + w[2:])])
        elif w == "none" and i + 1 < len(words) and words[i + 1] == "of":  # "none of the circles" -> "the circles"
            options.append([(toks[i].start, toks[i + 2].start if i + 2 < len(toks) else toks[i + 1].end, "")])
        elif w == "no":
            noun = _noun_after(toks, i)
            if i > 0 and words[i - 1] == "is" or (noun is not None and not noun.is_plural):
                options.append([(toks[i].start, toks[i].end, "a")])  # "there is no dog" -> "there is a dog"
            else:
                options.append([_delete_word(toks, i)])  # "no dogs are running" -> "dogs are running"
    return _pick(rng, options) if options else None


_QUANT_OF = {"all": ["some", "none", "few"], "some": ["all", "none"], "none": ["all", "some"], "many": ["few", "none"],
             "few": ["many", "all"], "several": ["none", "all"], "both": ["none"], "most": ["few", "none"],
             "each": ["none"]}
_QUANT_PLURAL = {"all": ["some", "no", "few"], "some": ["all", "no"], "no": ["all", "some"], "many": ["few", "no"],
                 "few": ["many", "all"], "several": ["no", "all"], "both": ["no"], "most": ["few", "no"]}
_QUANT_SINGULAR = {"every": ["no"], "each": ["no"], "no": ["every"]}


def _quantifier(s, toks, rng):
    words = [t.word for t in toks]
    slots = []
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w not in QUANTIFIERS or nxt == "other" or (w == "no" and i > 0 and words[i - 1] in ("is", "are")):
            continue
        if nxt == "of":
            table = _QUANT_OF
        else:
            noun = _noun_after(toks, i)
            singular = w in ("every", "each") or (w == "no" and noun is not None and not noun.is_plural)
            table = _QUANT_SINGULAR if singular else _QUANT_PLURAL
        if w in table:
            slots.append((toks[i], table[w]))
    if not slots:
        return None
    t, options = _pick(rng, slots)
    return [(t.start, t.end, _pick(rng, options))]


def _attribute_region(toks: list[_Tok], noun: _Noun) -> tuple[int, int, list[str]]:
    """(start, end, words) of the colours and sizes right before a noun (an empty span when none)."""
    k = noun.first
    while k > 0 and toks[k - 1].word in ATTRIBUTES:
        k -= 1
    if k == noun.first:
        return toks[noun.first].start, toks[noun.first].start, []
    return toks[k].start, toks[noun.first].start, [t.word for t in toks[k:noun.first]]


def _binding(s, toks, rng):
    nouns = [n for n in _nouns(toks) if n.group in _BINDABLE]
    regions = [_attribute_region(toks, n) for n in nouns]
    pairs = [(p, q) for p in range(len(nouns)) for q in range(p + 1, len(nouns))
             if Counter(regions[p][2]) != Counter(regions[q][2]) and nouns[p].singular != nouns[q].singular
             and nouns[p].group == nouns[q].group]
    if not pairs:
        return None
    p, q = _pick(rng, pairs)
    (s1, e1, w1), (s2, e2, w2) = regions[p], regions[q]
    return [(s1, e1, " ".join(w2) + " " if w2 else ""), (s2, e2, " ".join(w1) + " " if w1 else "")]


_DETERMINERS = ARTICLES | NUMBERS


def _role(s, toks, rng):
    nouns = [n for n in _nouns(toks) if n.group in _BINDABLE]
    spans = []
    for n in nouns:
        k = n.first
        while k > 0 and toks[k - 1].word in ATTRIBUTES:
            k -= 1
        if k > 0 and (toks[k - 1].word in _DETERMINERS or toks[k - 1].word.isdigit()):
            k -= 1
        spans.append((k, n))
    options = []
    for (k1, n1), (k2, n2) in zip(spans, spans[1:]):
        between = [t.word for t in toks[n1.last + 1:k2]]
        text = s[toks[n1.last].end:toks[k2].start]
        if (not between or set(between) & _SYMMETRIC or "," in text or n1.singular == n2.singular or n1.group != n2.group
                or not any(w in SPATIAL_WORDS or w in ACTION_WORDS for w in between)):
            continue
        a, b = (toks[k1].start, toks[n1.last].end), (toks[k2].start, toks[n2.last].end)
        options.append([(a[0], a[1], s[b[0]:b[1]].lower()), (b[0], b[1], s[a[0]:a[1]].lower())])
    return _pick(rng, options) if options else None


def _action(s, toks, rng):
    words = [t.word for t in toks]
    slots = []
    for group, actions in ACTION_GROUPS.items():
        for action in actions:
            parts = action.split()
            for i in range(len(words) - len(parts) + 1):
                if words[i:i + len(parts)] == parts:
                    slots.append((toks[i].start, toks[i + len(parts) - 1].end, [x for x in actions if x != action]))
    if not slots:
        return None
    start, end, options = _pick(rng, slots)
    return [(start, end, _pick(rng, options))]


_TIME_PHRASE = re.compile(r"\b(?:in|at|during) (?:the )?(" + "|".join(sorted(TIME_WORDS)) + r")\b")


def _time(s, toks, rng):
    matches = list(_TIME_PHRASE.finditer(s.lower()))
    if matches:
        m = _pick(rng, matches)
        options = [p for p in TIME_PHRASES if p.split()[-1] != m.group(1)]
        return [(m.start(), m.end(), _pick(rng, options))]
    slots = [t for t in toks if t.word in TIME_WORDS]
    if not slots:
        return None
    t = _pick(rng, slots)
    return [(t.start, t.end, _pick(rng, [p.split()[-1] for p in TIME_PHRASES if p.split()[-1] != t.word]))]


def _object(s, toks, rng):
    nouns = _nouns(toks)
    if not nouns:
        return None
    n = _pick(rng, nouns)
    offline, extra = NOUN_GROUPS[n.group]
    pool = [w for w in (offline or extra) if w != n.singular]
    return [(toks[n.first].start, toks[n.last].end, _with_form(_pick(rng, pool), n.is_plural))]


_REWRITERS = {"colour": _colour, "size": _size, "number": _number, "spatial relation": _spatial,
              "negation": _negation, "quantifier": _quantifier, "attribute binding": _binding,
              "role reversal": _role, "action": _action, "time of day": _time, "object": _object}


def rewrite(sentence: str, category: str, rng: np.random.Generator) -> str | None:
    """A controlled rewrite of one slot of the category's kind, or None when the sentence has none.

    colour, size, action, time of day, object: swap the word (or phrase) for another of its
    kind; number: change a count or digit (with the noun's plural); spatial relation: swap
    for a different place (left <-> right, on top of -> under); negation: remove one, or add
    one ("a red circle" -> "a circle that is not red" / "there is no red circle");
    quantifier: all <-> some <-> none of, every <-> no; attribute binding: swap the colours
    and sizes of two noun phrases; role reversal: swap two noun phrases around a verb or an
    asymmetric relation. "other" has no rewrite. The result differs from the sentence.
    """
    if category not in CATEGORIES:
        raise RetainError(f"No rewrite for the category {category!r}: known {', '.join(CATEGORIES)}."
                          + suggest(category, CATEGORIES))
    if category == "other":
        return None
    toks = _toks(sentence)
    edits = _REWRITERS[category](sentence, toks, rng)
    if not edits:
        return None
    out = _apply(sentence, edits)
    return out if normalize(out) != normalize(sentence) else None


# ---- ground ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Grounding:
    """Images that depict a sentence: a dataset of `evaluate.ImageBank` and the labels to match."""

    dataset: str
    attributes: tuple[tuple[str, str], ...]


_WRAPPERS = ("a photo of ", "a picture of ", "an image of ", "a drawing of ", "a photograph of ")
_DIGIT = re.compile(r"(?:(?:the|a) )?(?:handwritten (?:digit |number )?|(?:digit|number) )(\w+)")
_DIGIT_NAMES = {**{str(d): str(d) for d in range(10)}, **{w: str(d) for d, w in enumerate(NUMBER_WORDS[:10])}}


def ground(sentence: str) -> Grounding | None:
    """The offline images showing a sentence that names exactly one labelled object, else None.

    "a red circle" -> easyvqa colour and shape; "a red shape" -> colour only; "a dress" ->
    fashion-mnist; "a dog" -> animal-mnist; "the number 7" / "a handwritten 7" -> digits.
    Articles a/an/the/one and the wrappers "a photo of", "a picture of", "an image of",
    "a drawing of" are allowed; any other word (counts, positions, sizes, negation, a
    second object, actions, a colour on a grayscale dataset) gives None.
    """
    s = " ".join(sentence.lower().replace("\u2019", "'").split()).rstrip(" .")
    for w in _WRAPPERS:
        if s.startswith(w):
            s = s[len(w):]
            break
    m = _DIGIT.fullmatch(s)
    if m:
        d = _DIGIT_NAMES.get(m.group(1))
        return Grounding("digits", (("class", d),)) if d is not None else None
    words = s.split()
    if words and words[0] in ("a", "an", "the", "one"):
        words = words[1:]
    rest = " ".join(words)
    if rest in ("trousers", "pair of trousers"):
        rest = "trouser"
    if rest in FASHION_CLASSES:
        return Grounding("fashion-mnist", (("class", rest),))
    if rest in ANIMAL_CLASSES:
        return Grounding("animal-mnist", (("class", rest),))
    attributes = []
    if words and {"grey": "gray"}.get(words[0], words[0]) in COLORS:
        attributes.append(("color", {"grey": "gray"}.get(words[0], words[0])))
        words = words[1:]
    if len(words) == 1 and words[0] in SHAPES:
        attributes.append(("shape", words[0]))
    elif not (words == ["shape"] and attributes):
        return None
    return Grounding("easyvqa", tuple(attributes))
