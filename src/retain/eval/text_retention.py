"""Text-only retention: does the MLLM still do what its LLM could?

- `text_accuracy`: multiple-choice text questions with known answers, scored by the
  log-likelihood of each option after the question (no generation, no judge). Sources:
  `text_qa_items()`, an offline set generated here from templates (arithmetic, number
  comparison, opposites, sequences, everyday facts), and `load_text_benchmark` for
  MMLU, ARC and HellaSwag through `datasets` (a hub id or a saved folder).
- `next_token_kl`: the mean KL divergence KL(p_reference || p_model) of next-token
  distributions over every position of text-only prompts, against the original LM: zero
  for an unchanged model, larger the more the MLLM's language drifted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from retain.errors import RetainError
from retain.progress import bar


@dataclass
class TextItem:
    question: str
    options: list[str]
    answer: int  # index into options
    kind: str = ""


OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"),
             ("happy", "sad"), ("open", "closed"), ("wet", "dry"), ("early", "late"), ("light", "dark"),
             ("full", "empty"), ("old", "new"), ("high", "low"), ("hard", "soft"), ("strong", "weak")]
FACTS = [("What colour is the sky on a clear day?", "blue", ["green", "red", "black"]),
         ("What colour is fresh grass?", "green", ["blue", "purple", "white"]),
         ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
         ("How many legs does a dog have?", "four", ["two", "six", "eight"]),
         ("What do bees make?", "honey", ["milk", "silk", "wool"]),
         ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
         ("Which animal barks?", "dog", ["cat", "cow", "fish"]),
         ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
         ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
         ("What is the capital of France?", "Paris", ["Rome", "Berlin", "Madrid"]),
         ("What is the capital of Italy?", "Rome", ["Paris", "Vienna", "Lisbon"]),
         ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
         ("Which season is the coldest?", "winter", ["summer", "spring", "autumn"]),
         ("What do cows drink?", "water", ["milk", "oil", "juice"]),
         ("Which is a fruit?", "apple", ["carrot", "potato", "onion"])]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def text_qa_items(seed: int = 0, per_kind: int = 60) -> list[TextItem]:
    """The offline text-only question set (generated, fixed by `seed`), four options each."""
    rng = np.random.default_rng(seed)
    items: list[TextItem] = []

    def add(question, right, wrong, kind):
        options = [str(right)] + [str(w) for w in wrong]
        order = rng.permutation(len(options))
        items.append(TextItem(question, [options[i] for i in order], int(np.argwhere(order == 0)[0][0]), kind))

    def distinct(right, candidates):
        out = []
        for c in candidates:
            if c != right and c not in out:
                out.append(c)
        return out[:3]

    for _ in range(per_kind):
        a, b = (int(x) for x in rng.integers(2, 50, 2))
        add(f"What is {a} plus {b}?", a + b, distinct(a + b, [a + b + 1, a + b - 2, a + b + 10, a + b + 3]), "addition")
        a, b = (int(x) for x in rng.integers(2, 12, 2))
        add(f"What is {a} times {b}?", a * b, distinct(a * b, [a * b + a, a * b - b, a + b, a * b + 1]), "multiplication")
        a, b = (int(x) for x in rng.choice(np.arange(1, 500), 2, replace=False))
        add(f"Which number is larger, {a} or {b}?", max(a, b), distinct(max(a, b), [min(a, b), a + b, abs(a - b)]),
            "comparison")
        w, o = OPPOSITES[rng.integers(len(OPPOSITES))]
        others = [x for pair in OPPOSITES for x in pair if x not in (w, o)]
        add(f"What is the opposite of {w}?", o, list(rng.choice(others, 3, replace=False)), "opposites")
        d = int(rng.integers(7))
        add(f"Which day comes after {DAYS[d]}?", DAYS[(d + 1) % 7], [DAYS[(d + k) % 7] for k in (2, 3, 6)], "days")
    for q, right, wrong in FACTS:
        add(q, right, wrong, "facts")
    return items


@dataclass
class TextAccuracy:
    accuracy: float
    by_kind: dict[str, float]
    records: list[dict] = field(repr=False, default_factory=list)


def text_accuracy(mllm, items: list[TextItem], limit: int | None = None) -> TextAccuracy:
    """Accuracy of picking the right option by log-likelihood, text only (no image)."""
    items = items[:limit] if limit else items
    records = []
    for k, item in enumerate(bar(items, desc="text-only questions")):
        scores = mllm.loglik(None, item.question, item.options)
        pred = int(np.argmax(scores))
        records.append({"index": k, "kind": item.kind, "question": item.question, "predicted": item.options[pred],
                        "answer": item.options[item.answer], "correct": pred == item.answer})
    kinds = sorted({r["kind"] for r in records})
    by_kind = {kd: float(np.mean([r["correct"] for r in records if r["kind"] == kd])) for kd in kinds}
    acc = float(np.mean([r["correct"] for r in records])) if records else 0.0
    return TextAccuracy(acc, by_kind, records)


@torch.no_grad()
def next_token_kl(model, reference, tokenizer, prompts: list[str], batch_size: int = 8) -> float:
    """Mean over prompt positions of KL(reference || model) of the next-token distributions.

    `model` and `reference` take (input_ids, attention_mask) and return `.logits`; they must
    share `tokenizer` (an MLLM and the LLM it was built from do). Positions are weighted
    equally across prompts; padding is excluded.
    """
    if not prompts:
        raise RetainError("next_token_kl needs at least one prompt.")
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    total, count = 0.0, 0
    for s in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[s:s + batch_size], return_tensors="pt", padding=True)
        device = next(model.parameters()).device
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        ref = reference(input_ids=ids.to(next(reference.parameters()).device),
                        attention_mask=mask.to(next(reference.parameters()).device)).logits.float().log_softmax(-1)
        vocab = min(logp.shape[-1], ref.shape[-1])  # an MLLM may have added tokens (e.g. <image>)
        logp, ref = logp[..., :vocab].log_softmax(-1), ref[..., :vocab].to(device).log_softmax(-1)
        kl = (ref.exp() * (ref - logp)).sum(-1)  # (B, T)
        total += float((kl * mask).sum())
        count += int(mask.sum())
    return total / count


# ---- MMLU, ARC and HellaSwag through `datasets` -----------------------------------------
def load_text_benchmark(kind: str, source: str, split: str = "test", config: str | None = None,
                        limit: int | None = None) -> list[TextItem]:
    """MMLU (`cais/mmlu`, config `all`), ARC (`allenai/ai2_arc`, config `ARC-Challenge`) or
    HellaSwag (`Rowan/hellaswag`, split `validation`) as TextItems, from a hub id or a saved folder."""
    from retain.data.sources import dataset_rows

    rows = dataset_rows(source, split, config, "text benchmark")
    items = []
    for k, r in enumerate(rows):
        if limit and len(items) >= limit:
            break
        try:
            if kind == "mmlu":
                items.append(TextItem(r["question"], list(r["choices"]), int(r["answer"]), r.get("subject", "mmlu")))
            elif kind == "arc":
                labels = list(r["choices"]["label"])
                items.append(TextItem(r["question"], list(r["choices"]["text"]), labels.index(r["answerKey"]), "arc"))
            elif kind == "hellaswag":
                items.append(TextItem(f"Complete the sentence: {r['ctx']}", list(r["endings"]), int(r["label"]),
                                      "hellaswag"))
            else:
                raise RetainError(f"Unknown text benchmark {kind!r}: use mmlu, arc or hellaswag.")
        except (KeyError, ValueError, TypeError) as e:
            raise RetainError(f"Row {k} of {source!r} does not look like {kind} ({e!r}).") from e
    return items
