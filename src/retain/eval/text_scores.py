"""Scores of generated answers against references: exact match, VQA accuracy, and the
caption metrics BLEU-4, ROUGE-L and CIDEr-D as the COCO caption evaluation defines them.

- `normalize_answer`: the VQA evaluation's normalisation (lower case, punctuation and
  articles dropped, number words to digits, common contractions).
- `vqa_accuracy`: min(#references equal to the answer / 3, 1), averaged over the ten
  leave-one-out subsets when there are ten references (Antol et al., 2015); with one
  reference it is exact match after normalisation.
- `bleu`: corpus BLEU-N (Papineni et al., 2002): clipped n-gram precisions, geometric mean,
  brevity penalty from the reference length closest to each candidate.
- `rouge_l`: longest-common-subsequence F-measure with beta = 1.2, the best over references.
- `cider_d`: TF-IDF-weighted n-gram (1..4) cosine with clipping and a Gaussian length
  penalty (sigma 6), times 10, IDF from the evaluated references (Vedantam et al., 2015).
"""

from __future__ import annotations

import math
import re
from collections import Counter

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


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu(candidates: list[str], references: list[list[str]], n: int = 4) -> float:
    """Corpus BLEU-n of `candidates`, each with its list of references."""
    matched, total = [0] * n, [0] * n
    cand_len = ref_len = 0
    for cand, refs in zip(candidates, references):
        c, rs = tokens(cand), [tokens(r) for r in refs]
        cand_len += len(c)
        ref_len += min((abs(len(r) - len(c)), len(r)) for r in rs)[1]
        for k in range(1, n + 1):
            counts = ngrams(c, k)
            best: Counter = Counter()
            for r in rs:
                best |= ngrams(r, k)
            matched[k - 1] += sum(min(v, best[g]) for g, v in counts.items())
            total[k - 1] += max(len(c) - k + 1, 0)
    if cand_len == 0 or min(matched) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matched, total)) / n
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return brevity * math.exp(log_p)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidate: str, references: list[str], beta: float = 1.2) -> float:
    c = tokens(candidate)
    best = 0.0
    for r in map(tokens, references):
        lcs = _lcs(c, r)
        if lcs == 0:
            continue
        p, rec = lcs / len(c), lcs / len(r)
        best = max(best, (1 + beta**2) * p * rec / (rec + beta**2 * p))
    return best


def cider_d(candidates: list[str], references: list[list[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean over items of the per-item score."""
    refs_tok = [[tokens(r) for r in refs] for refs in references]
    doc_freq: list[Counter] = [Counter() for _ in range(n)]
    for refs in refs_tok:
        for k in range(n):
            doc_freq[k].update(set(g for r in refs for g in ngrams(r, k + 1)))
    log_items = math.log(float(len(candidates)))

    def vector(words, k):
        counts = ngrams(words, k + 1)
        vec = {g: c * (log_items - math.log(max(1.0, doc_freq[k][g]))) for g, c in counts.items()}
        return vec, math.sqrt(sum(v * v for v in vec.values()))

    scores = []
    for cand, refs in zip(candidates, refs_tok):
        c = tokens(cand)
        score = 0.0
        for k in range(n):
            vc, nc = vector(c, k)
            for r in refs:
                vr, nr = vector(r, k)
                dot = sum(min(v, vr[g]) * vr[g] for g, v in vc.items() if g in vr)
                if nc and nr:
                    score += dot / (nc * nr) * math.exp(-((len(c) - len(r)) ** 2) / (2 * sigma**2))
        scores.append(10.0 * score / n / len(refs))
    return sum(scores) / len(scores) if scores else 0.0
