"""EMT's deterministic answer matcher (Zhai et al., 2023, arXiv 2309.10313).

An MLLM asked "What is the object in the image? Please only answer a single object in
[c1, c2, ...]." answers in free text. The matcher decides which class the answer names,
as a careful human judge would: exactly one class, that class (`correct` or
`wrong_class`); several, `several_classes` (a hedge, "a cat or a dog"); none,
`outside_label_set` (the paper's hallucinated class).

Class names are read the way datasets ship them: case, hyphens (spaced or not),
underscores and articles do not matter, a slash or comma separates alternatives that each
name the class ("T - shirt / top"), numerals and number words are one ("7" names
`seven`), plurals are singular (regular and irregular: mice, wolves, women), and
synonyms count (built in for Fashion-MNIST, CIFAR-10/100, digits and retain's offline
sets; users add their own). Longer phrases win over names inside them ("T-shirt" over
"shirt"). A mention does not count when it is

- negated: "not a cat", "it doesn't look like a coat; it's a dress", "a dress rather than
  a coat", "neither a cat nor a dog", or retracted: "A cat? No, a dog.";
- a count or a modifier, not the object: "one digit", "two cats" (for the class one),
  "an orange fish", "a baby elephant", "I can see" (for the class can);
- the scene or a comparison after the object is named: "a lion on a plain", "a dress that
  looks like a coat", "a bowl of apples";
- part of a compound that names something else: "hot dog", "teddy bear".

The LLM judge (`retain.eval.judge`) stays the reference where rules cannot decide;
`agreement` scores the matcher against a table of hand-judged answers
(tests/eval/emt_judged.yaml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from retain.errors import RetainError

OUTCOMES = ("correct", "wrong_class", "several_classes", "outside_label_set")
ARTICLES = {"a", "an", "the"}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]
NUMERALS = {w: str(i) for i, w in enumerate(NUMBER_WORDS)} | {"nought": "0", "naught": "0"}

# Synonyms per class, keyed by the class's name (any spelling: keys are normalised).
SYNONYMS: dict[str, list[str]] = {
    # Fashion-MNIST (retain's, torchvision's and Hugging Face's names)
    "t-shirt": ["tshirt", "tee shirt", "tee", "tank top", "top"],
    "trouser": ["pants", "jeans", "slacks"],
    "pullover": ["sweater", "jumper", "hoodie", "sweatshirt"],
    "dress": ["gown", "sundress"],
    "coat": ["jacket", "parka", "overcoat", "blazer"],
    "sandal": ["flip flop"],
    "shirt": ["blouse", "dress shirt", "button down"],
    "sneaker": ["trainer", "running shoe", "tennis shoe", "athletic shoe", "sports shoe"],
    "bag": ["handbag", "purse", "backpack", "tote", "satchel"],
    "ankle boot": ["boot", "bootie"],
    # CIFAR-10
    "airplane": ["plane", "aeroplane", "airliner", "jet", "jetliner", "aircraft", "warplane"],
    "automobile": ["car", "auto", "sedan", "coupe", "suv", "hatchback", "convertible", "taxi", "racecar", "motorcar"],
    "bird": ["sparrow", "robin", "finch", "eagle", "hawk", "falcon", "owl", "parrot", "pigeon", "dove", "crow",
             "raven", "ostrich", "emu", "peacock", "hummingbird", "seagull", "gull", "duck", "goose", "swan",
             "chicken", "hen", "rooster", "penguin", "flamingo", "heron", "stork", "pelican", "woodpecker",
             "blue jay", "songbird", "kingfisher"],
    "cat": ["kitten", "kitty", "tabby", "tomcat", "housecat"],
    "deer": ["doe", "fawn", "stag", "reindeer", "elk", "caribou"],
    "dog": ["puppy", "pup", "doggy", "doggie", "hound", "canine", "terrier", "retriever", "labrador", "poodle",
            "beagle", "bulldog", "chihuahua", "dachshund", "corgi", "husky", "spaniel", "german shepherd",
            "sheepdog", "collie", "pug", "rottweiler", "greyhound", "dalmatian", "schnauzer"],
    "frog": ["toad", "bullfrog"],
    "horse": ["pony", "stallion", "mare", "foal", "colt", "steed"],
    "ship": ["boat", "sailboat", "sailing boat", "vessel", "yacht", "steamship", "freighter", "warship",
             "battleship", "ferry", "ocean liner", "tugboat", "speedboat", "motorboat", "steamer"],
    "truck": ["lorry", "pickup", "firetruck", "semi", "tractor trailer", "big rig"],
    # CIFAR-100 (the fine labels; those without an obvious synonym are left out)
    "aquarium fish": ["goldfish", "guppy", "tropical fish", "clownfish", "betta", "angelfish"],
    "baby": ["infant", "newborn", "toddler"],
    "bear": ["grizzly", "polar bear"],
    "bee": ["honeybee", "bumblebee", "honey bee", "bumble bee"],
    "beetle": ["ladybug", "ladybird", "scarab"],
    "bicycle": ["bike"],
    "camel": ["dromedary"],
    "castle": ["palace", "fortress"],
    "cattle": ["cow", "bull", "ox", "calf"],
    "chair": ["armchair"],
    "chimpanzee": ["chimp"],
    "cockroach": ["roach"],
    "couch": ["sofa", "settee", "loveseat"],
    "crocodile": ["croc"],
    "cup": ["mug", "teacup"],
    "dinosaur": ["dino", "t rex", "tyrannosaurus"],
    "flatfish": ["flounder", "halibut", "plaice", "turbot"],
    "forest": ["woods", "woodland", "jungle"],
    "house": ["home", "cottage"],
    "lamp": ["desk lamp"],
    "lawn mower": ["lawnmower", "mower"],
    "lion": ["lioness"],
    "lizard": ["gecko", "iguana", "chameleon"],
    "man": ["gentleman"],
    "maple tree": ["maple"],
    "motorcycle": ["motorbike"],
    "mushroom": ["toadstool"],
    "oak tree": ["oak"],
    "orange": ["tangerine", "mandarin"],
    "otter": ["sea otter"],
    "palm tree": ["palm"],
    "pickup truck": ["pickup", "pick up truck", "pick up"],
    "pine tree": ["pine"],
    "plain": ["grassland", "prairie", "meadow"],
    "possum": ["opossum"],
    "rabbit": ["bunny", "hare"],
    "raccoon": ["racoon"],
    "ray": ["stingray", "manta"],
    "road": ["street", "highway"],
    "sea": ["ocean"],
    "skyscraper": ["highrise", "high rise"],
    "snake": ["serpent", "cobra", "viper"],
    "spider": ["tarantula"],
    "streetcar": ["tram", "trolley", "tramcar"],
    "sweet pepper": ["bell pepper", "pepper", "capsicum"],
    "telephone": ["phone"],
    "television": ["tv", "telly", "television set"],
    "tiger": ["tigress"],
    "train": ["locomotive"],
    "turtle": ["tortoise", "sea turtle", "terrapin"],
    "wardrobe": ["closet", "armoire"],
    "whale": ["orca", "humpback"],
    "willow tree": ["willow"],
    "woman": ["lady"],
    "worm": ["earthworm"],
    # retain's offline sets (animal-mnist, easy-VQA, textile; digits need none: numerals and words are one)
    "cow": ["cattle", "bull", "ox", "calf", "heifer"],
    "sheep": ["lamb", "ram", "ewe"],
    "gray": ["grey"],
    "teal": ["turquoise", "cyan"],
    "circle": ["circular", "round", "disc", "disk"],
    "rectangle": ["rectangular", "square", "oblong"],
    "triangle": ["triangular"],
    "nominal textile": ["nominal", "normal textile", "no defect", "without defect", "defect free", "flawless"],
    "textile with a local defect": ["local defect"],
    "textile with a global defect": ["global defect"],
}
# Compounds that contain a class's name but name something else ("a hot dog" is no dog).
OTHER_THINGS = ["hot dog", "corn dog", "prairie dog", "teddy bear", "gummy bear", "sea lion", "sea urchin",
                "sea cucumber", "fish tank", "guinea pig", "bed bug", "tank top"]

IRREGULAR = {"mice": "mouse", "geese": "goose", "teeth": "tooth", "feet": "foot", "men": "man", "women": "woman",
             "children": "child", "people": "person", "oxen": "ox", "lice": "louse", "cacti": "cactus",
             "fungi": "fungus", "buses": "bus", "busses": "bus", "wolves": "wolf", "leaves": "leaf",
             "calves": "calf", "halves": "half", "knives": "knife", "wives": "wife", "lives": "life",
             "shelves": "shelf", "loaves": "loaf", "thieves": "thief", "scarves": "scarf", "hooves": "hoof",
             "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero", "mangoes": "mango",
             "volcanoes": "volcano", "mosquitoes": "mosquito", "octopi": "octopus", "ties": "tie", "pies": "pie",
             "movies": "movie", "cookies": "cookie", "zombies": "zombie", "species": "species", "series": "series"}

PUNCTUATION = set(",;:.!?()[]\"")
SENTENCE_END = set(";:.!?")
COORDINATORS = {"or", "and", "nor", "/", "but"}
NEGATIONS = {"not", "no", "never", "neither", "nor", "cannot", "without"}
HEDGED = {"sure", "certain", "clear", "entirely", "quite", "completely", "totally", "100"}  # "not sure": a hedge
BELIEFS = {"think", "believe", "suppose", "guess", "expect", "feel"}  # "I don't think it's a cat": all negated
# A negation's scope ends at punctuation or where a new statement starts.
SCOPE_ENDS = {"but", "however", "instead", "actually", "though", "although", "yet", "rather", "it", "this", "that"}
INTERJECTION_NEXT = {"wait", "sorry", "actually", "it", "this", "that", "i"}  # "No, it's a dog": no negation
SUBORDINATE = {"on", "in", "at", "near", "under", "over", "beside", "behind", "above", "below", "inside",
               "against", "across", "along", "atop", "with", "of", "like", "resembling", "resembles", "resemble",
               "from", "into", "onto", "beneath", "among", "next", "through", "around", "between"}
# Class words that are often a colour, an age or a place in front of the noun they describe.
MODIFIERS = {"orange", "plain", "baby", "sea", "table", "house", "apple", "tank", "bus", "train", "road",
             "television", "rocket", "keyboard", "mountain", "forest", "cloud"}
PRONOUNS = {"i", "you", "we", "they", "he", "she", "it", "which", "who", "that", "one"}
ONE_AS_PRONOUN = {"this", "that", "which", "each", "every", "any", "the", "another", "other"}
# Words that follow a number or a modifier without making it a determiner ("7 is", "one or two").
NOT_NOUNS = {"or", "and", "nor", "but", "is", "am", "are", "was", "were", "be", "been", "being", "it", "its", "this",
             "that", "these", "those", "which", "who", "i", "you", "we", "they", "he", "she", "me", "maybe",
             "perhaps", "probably", "possibly", "likely", "definitely", "clearly", "certainly", "too", "also", "then",
             "here", "there", "in", "on", "at", "to", "from", "with", "by", "for", "as", "into", "onto", "over",
             "under", "near", "not", "no", "so", "yes", "again", "only", "just", "please", "though", "however",
             "instead", "rather", "than", "like", "seems", "looks", "appears", "would", "could", "might", "may",
             "should", "can", "will", "does", "do", "did", "has", "have", "had", "if", "because", "since", "while",
             "when", "where", "shown", "drawn", "written", "seen", "visible", "inside", "above", "below", "behind",
             "beside", "against", "/", *ARTICLES}
NOUNS_IN_ING_ED = {"thing", "something", "nothing", "drawing", "painting", "building", "ring", "king", "wing",
                   "string", "clothing", "ceiling", "bed", "seed", "shed", "sled", "sibling", "duckling", "earring"}
CONTRACTIONS = {"isnt": "is not", "doesnt": "does not", "dont": "do not", "didnt": "did not", "wasnt": "was not",
                "arent": "are not", "werent": "were not", "cant": "cannot", "can't": "cannot", "won't": "will not",
                "wont": "will not", "let's": "let us"}
IS_CONTRACTED = {"it", "that", "what", "there", "here", "he", "she", "who", "where", "this"}


def tokens(text: str) -> list[str]:
    """Lower-case word and punctuation tokens: hyphens and underscores split words, contractions are expanded
    ("isn't" -> is not, "it's" -> it is) and possessives dropped ("dog's" -> dog)."""
    text = re.sub(r"[-_\u2010-\u2015]", " ", text.lower().replace("\u2019", "'").replace("\u2018", "'"))
    out: list[str] = []
    for t in re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[,;:.!?()\[\]\"/]", text):
        if t in CONTRACTIONS:
            out += CONTRACTIONS[t].split()
        elif t.endswith("n't"):
            out += [t[:-3], "not"]
        elif t.endswith("'s"):
            out += [t[:-2], "is"] if t[:-2] in IS_CONTRACTED else [t[:-2]]
        else:
            out.append(t.split("'")[0])
    return out


def singular(word: str) -> str:
    """A plain English singular: cats -> cat, boxes -> box, ponies -> pony, wolves -> wolf, mice -> mouse."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) <= 3 or word.endswith(("ss", "us", "is")) or not word.endswith("s"):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    return word[:-1]


def key(word: str) -> str:
    """The form two words share when they name the same thing: singular, numerals for number words."""
    return NUMERALS.get(word) or singular(word)


def phrase_key(text: str) -> tuple[str, ...]:
    return tuple(key(t) for t in tokens(text) if t not in ARTICLES and t not in PUNCTUATION and t != "/")


def alternatives(class_name: str) -> list[str]:
    """The names inside one class name: "T - shirt / top" -> ["T - shirt", "top"]."""
    return [a for a in re.split(r"[/,]", class_name) if phrase_key(a)]


BUILTIN = {" ".join(phrase_key(k)): v for k, v in SYNONYMS.items()}


@dataclass
class Match:
    outcome: str
    """one of OUTCOMES"""
    predicted: int | None
    """the class the answer names, when it names exactly one"""
    mentioned: list[int] = field(default_factory=list)


@dataclass
class _Mention:
    start: int
    end: int
    cls: int | None
    """None for a compound that names something else"""


class RuleMatcher:
    """Match free-text answers to one of `class_names` (see the module docstring).

    `synonyms` maps a class (any spelling of its name or of one of its alternatives) to more names for it;
    a class not in `class_names`, or a synonym that is another class's own name, is an error.
    """

    def __init__(self, class_names: list[str], synonyms: dict[str, list[str]] | None = None):
        self.class_names = list(class_names)
        own: dict[tuple[str, ...], int] = {}
        for i, name in enumerate(self.class_names):
            for alt in alternatives(name):
                own.setdefault(phrase_key(alt), i)
        user: dict[tuple[str, ...], int] = {}
        for cls_name, extra in (synonyms or {}).items():
            i = self.class_index(str(cls_name))
            if i is None:
                raise RetainError(f"Synonyms are given for class {cls_name!r}, which is not in the label set "
                                  f"[{', '.join(self.class_names)}].")
            for s in [extra] if isinstance(extra, str) else extra:
                p = phrase_key(s)
                if own.get(p, i) != i or user.get(p, i) != i:
                    other = self.class_names[own.get(p, user.get(p))]
                    raise RetainError(f"Synonym {s!r} of class {cls_name!r} already names class {other!r}.")
                if p:
                    user[p] = i
        builtin: dict[tuple[str, ...], set[int]] = {}
        for i, name in enumerate(self.class_names):
            for alt in alternatives(name):
                for s in BUILTIN.get(" ".join(phrase_key(alt)), []):
                    builtin.setdefault(phrase_key(s), set()).add(i)
        self.phrases: dict[tuple[str, ...], int | None] = {p: None for p in map(phrase_key, OTHER_THINGS)}
        # a built-in synonym two classes share names neither; own names win over users', users' over built-in
        self.phrases |= {p: next(iter(c)) for p, c in builtin.items() if len(c) == 1}
        self.phrases |= user | own
        self.longest = max(map(len, self.phrases))

    def class_index(self, name: str) -> int | None:
        """The class a name (or one of its alternatives) spells, in any case, hyphenation or number."""
        whole = phrase_key(name)
        for i, c in enumerate(self.class_names):
            if whole == phrase_key(c) or whole in map(phrase_key, alternatives(c)):
                return i
        return None

    def mentioned(self, answer: str) -> list[int]:
        """Class indices the answer names, in order of first mention (see the module docstring)."""
        toks = tokens(answer)
        mentions = self._phrases_in(toks)
        inside = {k for m in mentions for k in range(m.start, m.end)}
        negated = _negated(toks, inside)
        named: list[_Mention] = []
        for m in mentions:
            if m.cls is None or negated[m.start] or _modifier(toks, m):
                continue
            if _subordinate(toks, m, named):
                continue
            named.append(m)
        return list(dict.fromkeys(m.cls for m in named))

    def match(self, answer: str, label: int) -> Match:
        named = self.mentioned(answer)
        if not named:
            return Match("outside_label_set", None, named)
        if len(named) > 1:
            return Match("several_classes", None, named)
        return Match("correct" if named[0] == label else "wrong_class", named[0], named)

    def _phrases_in(self, toks: list[str]) -> list[_Mention]:
        """Known phrases, left to right, the longest at each place; articles inside a phrase are skipped."""
        words = [i for i, t in enumerate(toks) if t not in ARTICLES]
        keys = [key(toks[i]) for i in words]
        found, j = [], 0
        while j < len(words):
            for n in range(min(self.longest, len(words) - j), 0, -1):
                p = tuple(keys[j:j + n])
                if p in self.phrases:
                    found.append(_Mention(words[j], words[j + n - 1] + 1, self.phrases[p]))
                    j += n
                    break
            else:
                j += 1
        return found


def _next_word(toks: list[str], k: int) -> str | None:
    """The token after position k, skipping articles."""
    for t in toks[k:]:
        if t not in ARTICLES:
            return t
    return None


def _negated(toks: list[str], inside: set[int]) -> list[bool]:
    """Which tokens a negation covers: from "not"/"no"/"rather than"/... to the end of the statement.
    An interjected "No," retracts the statement before it ("A cat? No, a dog.")."""
    neg = [False] * len(toks)
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if i in inside:
            continue
        if t == "no" and (nxt is None or nxt in PUNCTUATION or nxt in INTERJECTION_NEXT):
            k = i - 1
            while k >= 0 and toks[k] in PUNCTUATION:
                k -= 1
            while k >= 0 and toks[k] not in PUNCTUATION:
                neg[k] = True
                k -= 1
            continue
        starts = (t in NEGATIONS and not (t == "not" and nxt in HEDGED)) or (t, nxt) in {
            ("rather", "than"), ("instead", "of"), ("other", "than")}
        if not starts:
            continue
        belief = any(w in BELIEFS for w in toks[i + 1:i + 3])
        k = i + 1 + (t in ("rather", "instead", "other"))
        while k < len(toks) and toks[k] not in PUNCTUATION and (belief or toks[k] not in SCOPE_ENDS):
            neg[k] = True
            k += 1
    return neg


def _is_noun(word: str | None, of_counts: bool) -> bool:
    """Whether `word`, after a number or an adjective-like class word, is the noun that word describes."""
    if word is None or word in PUNCTUATION or word in NOT_NOUNS or word in NUMERALS or word.isdigit():
        return False
    if word == "of":
        return of_counts
    participle = len(word) > 4 and word.endswith(("ed", "ing")) and word not in NOUNS_IN_ING_ED
    return word not in SUBORDINATE and not participle


def _modifier(toks: list[str], m: _Mention) -> bool:
    """A count ("one digit", "two cats"), a pronoun ("this one"), a modal ("I can see") or an adjective
    ("an orange fish", "a baby elephant"): the class word does not name the object."""
    if m.end - m.start != 1:
        return False
    word, before, after = toks[m.start], toks[m.start - 1] if m.start else None, _next_word(toks, m.end)
    if key(word).isdigit():
        return _is_noun(after, of_counts=True) or (word == "one" and before in ONE_AS_PRONOUN)
    if word == "can":
        return before in PRONOUNS or _is_noun(after, of_counts=False)
    return key(word) in MODIFIERS and _is_noun(after, of_counts=False)


def _subordinate(toks: list[str], m: _Mention, named: list[_Mention]) -> bool:
    """A mention after a preposition or comparison, once the statement has named its object: the scene
    ("a lion on a plain"), a part ("a truck with a car on it") or a likeness ("a dress that looks like a coat")."""
    sentence_start = max([k + 1 for k in range(m.start) if toks[k] in SENTENCE_END], default=0)
    if not any(n.start >= sentence_start for n in named):
        return False
    k, seen = m.start - 1, 0
    while k >= sentence_start and seen < 3 and toks[k] not in PUNCTUATION and toks[k] not in COORDINATORS:
        if any(n.start <= k < n.end for n in named):
            return False
        if toks[k] in SUBORDINATE:
            return True
        seen += toks[k] not in ARTICLES
        k -= 1
    return False


def synonyms_for(synonyms: dict[str, list[str]] | None, class_names: list[str]) -> dict[str, list[str]]:
    """The user's synonyms of the classes in `class_names` (`check_synonyms` has checked the rest belong elsewhere)."""
    matcher = RuleMatcher(class_names)
    return {c: v for c, v in (synonyms or {}).items() if matcher.class_index(str(c)) is not None}


def check_synonyms(synonyms: dict[str, list[str]] | None, label_sets: dict[str, list[str]]) -> None:
    """Fail, naming the class, when a synonym's class is in none of the label sets or a synonym names another
    class; run before any model loads."""
    for cls in synonyms or {}:
        if not any(RuleMatcher(names).class_index(str(cls)) is not None for names in label_sets.values()):
            sets = "; ".join(f"{task}: {', '.join(names)}" for task, names in label_sets.items())
            raise RetainError(f"Synonyms are given for class {str(cls)!r}, which is in no EMT dataset's label set "
                              f"({sets}).")
    for names in label_sets.values():
        RuleMatcher(names, synonyms_for(synonyms, names))


def agreement(table: dict, synonyms: dict[str, list[str]] | None = None) -> tuple[float, list[dict]]:
    """The fraction of hand-judged answers the matcher scores as the judge did, and the rows where it does not.

    `table` is the mapping of tests/eval/emt_judged.yaml: `label_sets` (name -> class names) and `cases`, rows
    [label_set, label, answer, expected_class, expected_outcome] (expected_class None unless one class is named).
    """
    matchers = {name: RuleMatcher(classes, synonyms) for name, classes in table["label_sets"].items()}
    disagreements = []
    for label_set, label, answer, expected_class, expected_outcome in table["cases"]:
        matcher = matchers[label_set]
        m = matcher.match(answer, matcher.class_names.index(label))
        got = None if m.predicted is None else matcher.class_names[m.predicted]
        if (got, m.outcome) != (expected_class, expected_outcome):
            disagreements.append({"label_set": label_set, "label": label, "answer": answer,
                                  "expected_class": expected_class, "expected_outcome": expected_outcome,
                                  "matcher_class": got, "matcher_outcome": m.outcome})
    return 1 - len(disagreements) / len(table["cases"]), disagreements


def disagreements_markdown(disagreements: list[dict]) -> str:
    """The disagreements of `agreement` as a markdown table."""
    rows = ["| label set | label | answer | careful judge | matcher |", "|---|---|---|---|---|"]
    for d in disagreements:
        judged = d["expected_outcome"] + (f" ({d['expected_class']})" if d["expected_class"] else "")
        got = d["matcher_outcome"] + (f" ({d['matcher_class']})" if d["matcher_class"] else "")
        rows.append(f"| {d['label_set']} | {d['label']} | {d['answer'] or '(empty)'} | {judged} | {got} |")
    return "\n".join(rows) + "\n"
