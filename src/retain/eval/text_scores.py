"""Scores of generated answers against references: exact match, VQA accuracy, and the
caption metrics BLEU-4, ROUGE-L and CIDEr-D as the COCO caption evaluation computes them.

- `normalize_answer`: the VQA evaluation's normalisation (lower case, punctuation and
  articles dropped, number words to digits, common contractions).
- `vqa_accuracy`: min(#references equal to the answer / 3, 1), averaged over the ten
  leave-one-out subsets when there are ten references (Antol et al., 2015); with one
  reference it is exact match after normalisation.
- `bleu`, `rouge_l`, `cider_d`: the scorers of pycocoevalcap (the COCO caption evaluation,
  Chen et al., 2015, which MCITlib reports), called on text tokenised by `ptb_tokenize`.
  `bleu` is corpus BLEU-N (Papineni et al., 2002) with the reference length closest to each
  candidate; `rouge_l` is one item's ROUGE-L (Lin, 2004) with beta 1.2, from the best
  precision and the best recall over the references taken separately (not the best F of
  any one reference); `cider_d` is the mean over items of CIDEr-D (Vedantam et al., 2015):
  TF-IDF n-gram (1..4) cosine with clipping and a Gaussian length penalty (sigma 6), times
  10, the IDF taken from the references of the items scored together.

What the library gives on edge cases, kept as it is: candidates with no n-gram of some
order in their references get a small positive BLEU (about 1e-4 for BLEU-4 on one short
caption, not 0), since the library adds 1e-15 to every match count; an answer with no
words scores 0 on its own on all three (ROUGE-L 1 against an empty reference: the library
compares the two empty strings). On a
single item every n-gram's IDF is log(1/1) = 0, so CIDEr-D is 0 whatever the answer; it
only means something over a split. An item with no references, or an empty corpus, is a
`RetainError` (the library would stop on an assertion). When no reference has any word,
CIDEr-D is 0 (every cosine is 0; the library itself fails on its empty IDF table).

`ptb_tokenize` stands in for pycocoevalcap's PTBTokenizer, which runs Stanford CoreNLP
under Java, which retain does not require. Like it, it lower-cases, splits the clitics
n't 's 're 've 'll 'm 'd from their word, keeps hyphenated words and numbers such as 1,000
or 3.5 whole, and drops the tokens in the library's `PUNCTUATIONS` list (with the quote
and bracket characters that PTB rewrites to entries of that list). It may differ from the
Java tokeniser on abbreviations ("a.m.", "U.S." keep their dots there, and come out here
as "a m", "u s"), on runs of marks such as "?!" or "!!" (one token there, surviving the
filter; dropped here), on square brackets (-lsb- there, "[" here), on symbols inside a word
("m/s", "at&t", which PTB may keep whole), and on PTB's special splits ("cannot" -> "can
not", "gonna" -> "gon na"). Captions rarely have these, and a difference counts only
where the candidate or a reference has one.
"""

from __future__ import annotations

import functools
import re

from retain.errors import RetainError

NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
                "wont": "won't", "im": "i'm", "ive": "i've", "youre": "you're", "thats": "that's"}


def normalize_answer(text: str) -> str:
    text = text.lower().replace("\n", " ").strip()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 1,000 -> 1000
    text = re.sub(r"[^\w\s':-]", " ", text)
    words = []
    for w in text.replace(":", " ").split():
        w = w.strip("'-")
        w = CONTRACTIONS.get(w, w)
        w = NUMBERS.get(w, w)
        if w and w not in ARTICLES:
            words.append(w)
    return " ".join(words)


def exact_match(answer: str, references: list[str]) -> float:
    a = normalize_answer(answer)
    return float(any(a == normalize_answer(r) for r in references))


def vqa_accuracy(answer: str, references: list[str]) -> float:
    a = normalize_answer(answer)
    refs = [normalize_answer(r) for r in references]
    if len(refs) < 10:
        return min(sum(r == a for r in refs) / 3.0, 1.0) if len(refs) >= 3 else float(a in refs)
    scores = [min(sum(r == a for j, r in enumerate(refs) if j != i) / 3.0, 1.0) for i in range(len(refs))]
    return sum(scores) / len(scores)


PTB_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|m|d)\b|\w+(?:-\w+)*|\.\.\.|--|\S")


@functools.cache
def ptb_dropped() -> frozenset:
    """The library's `PUNCTUATIONS`, and the marks PTB writes as entries of it (``/'', -LRB-, ...).
    pycocoevalcap is imported where captions are scored, not with this module: everything
    else runs on a machine without it."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    return frozenset(PUNCTUATIONS) | {'"', "(", ")", "{", "}"}


def ptb_tokenize(text: str) -> str:
    """Lower-case `text`, split it as the PTB tokeniser would, drop punctuation; words joined by spaces."""
    dropped = ptb_dropped()
    return " ".join(t for t in PTB_TOKEN.findall(text.lower()) if t not in dropped)


def coco_inputs(candidates: list[str], references: list[list[str]]) -> tuple[dict, dict]:
    """The (references, candidates) dicts pycocoevalcap's scorers take, keyed by item index, tokenised."""
    if len(candidates) != len(references):
        raise RetainError(f"{len(candidates)} candidates but {len(references)} reference lists: give one list per "
                          "candidate.")
    if not candidates:
        raise RetainError("No items to score: caption metrics need at least one candidate with references.")
    for i, refs in enumerate(references):
        if not refs:
            raise RetainError(f"Item {i} has no reference, so it cannot be scored: give it at least one.")
    gts = {i: [ptb_tokenize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [ptb_tokenize(c)] for i, c in enumerate(candidates)}
    return gts, res


def bleu(candidates: list[str], references: list[list[str]], n: int = 4) -> float:
    """Corpus BLEU-n of `candidates`, each with its list of references (pycocoevalcap's `Bleu`)."""
    from pycocoevalcap.bleu.bleu import Bleu

    score, _ = Bleu(n).compute_score(*coco_inputs(candidates, references), verbose=0)
    return float(score[n - 1])


def rouge_l(candidate: str, references: list[str], beta: float = 1.2) -> float:
    """ROUGE-L of one candidate: F_beta of the best LCS precision and best LCS recall over references."""
    from pycocoevalcap.rouge.rouge import Rouge

    (gts, res), scorer = coco_inputs([candidate], [references]), Rouge()
    scorer.beta = beta
    return float(scorer.calc_score(res[0], gts[0]))


def cider_d(candidates: list[str], references: list[list[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean over items of the per-item score (pycocoevalcap's `Cider`)."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = coco_inputs(candidates, references)
    if not any(r for refs in gts.values() for r in refs):
        return 0.0  # every cosine is 0; the library would fail on its empty IDF table
    score, _ = Cider(n=n, sigma=sigma).compute_score(gts, res)
    return float(score)
