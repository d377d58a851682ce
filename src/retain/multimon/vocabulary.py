"""MultiMon's vocabulary: the word classes of captions and the sentence form dedup compares.

Shared by the generated corpus (`retain.multimon.corpus`, which writes sentences from these
words) and the offline "language model" (`retain.multimon.lexical`, which reads pairs by
them), so that neither needs the other (MultiMon: Tong, Jones, Steinhardt, 2023, arXiv
2306.12105).
"""

from __future__ import annotations

from retain.data.offline import ANIMAL_CLASSES, COLORS, FASHION_CLASSES, SHAPES


def normalize(sentence: str) -> str:
    """Lower case, single spaces, no trailing punctuation: the form deduplication compares."""
    return " ".join(sentence.lower().split()).rstrip(" .,;:!?")


# ---- word classes ---------------------------------------------------------------------
ARTICLES = {"a", "an", "the"}
COLOUR_WORDS = set(COLORS) | {"grey", "white", "orange", "pink", "purple", "violet", "gold", "golden", "silver",
                              "beige", "tan", "cyan", "magenta", "maroon", "navy", "turquoise"}
SIZE_SWAPS = {"small": ["large", "big", "huge"], "large": ["small", "tiny"], "tiny": ["huge", "large"],
              "big": ["small", "tiny"], "huge": ["tiny", "small"], "little": ["big", "large"],
              "giant": ["tiny", "small"], "enormous": ["tiny", "small"], "medium": ["tiny", "huge"],
              "tall": ["short"], "short": ["tall", "long"], "long": ["short"], "wide": ["narrow"],
              "narrow": ["wide"], "thick": ["thin"], "thin": ["thick"]}
SIZE_WORDS = set(SIZE_SWAPS) | {"massive", "miniature", "mini"}
SIZES = ["small", "large", "tiny", "big", "huge"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
NUMBER_LIKE = set(NUMBER_WORDS) | {"dozen", "single", "pair", "couple", "hundred", "thousand", "twice", "once"}
COUNT_WORDS = ["one", "two", "three", "four", "five"]
QUANTIFIERS = {"all", "some", "no", "none", "every", "each", "many", "few", "several", "both", "most", "any"}
NEGATIONS = {"not", "n't", "never", "without", "nothing", "nobody", "neither", "nor", "cannot", "nowhere"}
"""negation words that are never quantifiers; "no" and "none" are either (see categorise_pair)"""
SPATIAL_WORDS = {"left", "right", "top", "bottom", "above", "below", "under", "underneath", "beneath", "behind",
                 "front", "next", "beside", "near", "far", "centre", "center", "middle", "corner", "over", "inside",
                 "outside", "between", "across", "atop", "side", "upside"}
TIME_WORDS = {"morning", "afternoon", "evening", "night", "noon", "midnight", "dawn", "dusk", "sunset", "sunrise",
              "daytime", "nighttime", "midday", "tonight", "day", "daylight", "twilight"}
TIME_PHRASES = ["in the morning", "in the afternoon", "in the evening", "at night", "at noon", "at sunset",
                "at dawn", "at dusk"]
POSITIONS = ["on the left", "on the right", "at the top", "at the bottom", "in the centre", "in the top left corner",
             "in the bottom right corner"]
RELATIONS = ["to the left of", "to the right of", "above", "below", "next to", "on top of", "under", "behind",
             "in front of"]
ACTION_GROUPS = {  # an action is swapped only within its group, so the sentence stays grammatical
    "intransitive": ["running", "sleeping", "eating", "standing", "jumping", "lying down", "walking", "sitting",
                     "drinking", "resting", "grazing", "swimming", "playing"],
    "transitive": ["chasing", "following", "watching", "sniffing", "licking", "biting", "attacking", "pushing"],
    "handling": ["wearing", "holding", "carrying"],
}
_VERBS = ("run sleep eat stand jump lie walk sit drink rest graze swim play chase follow watch sniff lick bite attack "
          "push wear hold carry ride fly climb bark hunt fight kick throw catch feed smile sing dance fall cook read "
          "write drive look roll hide wait talk laugh cry stare hug dig jog sail surf skate ski lean crawl").split()
_DOUBLED = {"run", "sit", "swim", "dig", "hug", "jog"}


def _ing(v: str) -> str:
    if v.endswith("ie"):
        return v[:-2] + "ying"
    if v.endswith("e") and not v.endswith("ee"):
        return v[:-1] + "ing"
    return v + v[-1] + "ing" if v in _DOUBLED else v + "ing"


def _third_person(v: str) -> str:
    if v.endswith(("s", "sh", "ch", "x")):
        return v + "es"
    return v[:-1] + "ies" if v.endswith("y") and v[-2] not in "aeiou" else v + "s"


ACTION_WORDS = {f for v in _VERBS for f in (v, _ing(v), _third_person(v))} | {"lay", "ran", "ate", "slept"}

NOUN_GROUPS = {  # the offline classes come first: rewrites draw replacements from them
    "clothing": (FASHION_CLASSES, ["hat", "jacket", "skirt", "sock", "scarf", "glove", "shoe", "boot", "jeans",
                                   "sweater", "hoodie", "suit", "tie", "belt", "backpack", "trousers"]),
    "animal": (ANIMAL_CLASSES, ["lion", "tiger", "mouse", "rabbit", "fox", "wolf", "deer", "goat", "pig", "duck",
                                "chicken", "monkey", "fish", "snake", "frog", "puppy", "kitten", "pony", "bull"]),
    "shape": (SHAPES, ["square", "star", "oval", "hexagon", "diamond", "heart", "cross", "shape", "polygon"]),
    "person": ([], ["person", "man", "woman", "child", "boy", "girl", "baby", "player", "kid"]),
    "scene": ([], ["field", "grass", "snow", "zoo", "beach", "forest", "street", "room", "park", "road", "river",
                   "water", "garden", "kitchen", "farm", "desert"]),
    "thing": ([], ["car", "bus", "ball", "tree", "table", "chair", "house", "book", "cup", "bottle", "bicycle", "boat",
                   "plane", "train", "phone", "clock", "kite", "umbrella", "box", "apple", "banana", "pizza",
                   "flower", "bench", "bed", "door", "window", "hanger", "floor"]),
}
_IRREGULAR = {"man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
              "sheep": "sheep", "deer": "deer", "fish": "fish", "jeans": "jeans", "trousers": "trousers",
              "wolf": "wolves", "scarf": "scarves", "shelf": "shelves", "foot": "feet", "goose": "geese"}


def plural(noun: str) -> str:
    """The plural of a (possibly multi-word) noun: 'ankle boot' -> 'ankle boots', 'dress' -> 'dresses'."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        p = _IRREGULAR[last]
    elif last.endswith(("s", "sh", "ch", "x", "z")):
        p = last + "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


def article(word: str) -> str:
    """'a' or 'an' for the word that follows it."""
    w = word.lower()
    if w[:1].isdigit():
        return "an" if w.startswith(("8", "11", "18")) else "a"
    if w.startswith(("uni", "use", "one", "eu", "ewe")):
        return "a"
    return "an" if w[:1] in ("a", "e", "i", "o", "u") or w.startswith(("hour", "honest")) else "a"


# noun form (a single token) -> (group, singular noun (maybe multi-word), is plural)
NOUN_FORMS: dict[str, tuple[str, str, bool]] = {}
for _group, (_offline, _extra) in NOUN_GROUPS.items():
    for _noun in list(_offline) + _extra:
        if " " not in _noun:  # two-word nouns are units of MULTIWORD_NOUNS
            NOUN_FORMS.setdefault(_noun, (_group, _noun, False))
            NOUN_FORMS.setdefault(plural(_noun), (_group, _noun, plural(_noun) != _noun))
NOUN_FORMS["people"] = ("person", "person", True)
MULTIWORD_NOUNS = {("ankle", "boot"): "ankle boot"}  # (first token, head noun) -> the two-word noun
OBJECT_WORDS = set(NOUN_FORMS) | {first for first, _ in MULTIWORD_NOUNS}
ATTRIBUTES = COLOUR_WORDS | SIZE_WORDS
NUMBERS = set(NUMBER_WORDS)
