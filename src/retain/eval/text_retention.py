"""Text-only retention: does the MLLM still do what its LLM could?

- `text_accuracy`: multiple-choice text questions with known answers, scored by the
  log-likelihood of each option after the question (no generation, no judge): summed over
  the option's tokens (`accuracy`) and, beside it, per token and per character as
  lm-evaluation-harness's acc_norm (`accuracy_norm_token`, `accuracy_norm_char`). Sources:
  `text_qa_items()`, an offline set of 1,280 MMLU/ARC-style questions generated from the
  tables of `text_questions` (arithmetic, units, calendar, word forms, categories,
  capitals, school-science facts and more; 16 kinds), and `load_text_benchmark` for
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
from retain.models.mllm import NORMALISED, best_options
from retain.progress import bar


@dataclass
class TextItem:
    question: str
    options: list[str]
    answer: int  # index into options
    kind: str = ""


PER_KIND = 80  # questions of each kind: 16 kinds, 1,280 questions


def text_qa_items(seed: int = 0, per_kind: int = PER_KIND) -> list[TextItem]:
    """The offline text-only question set: `per_kind` questions of each kind of
    `text_questions.QUESTION_KINDS`, four options each, fixed by `seed`.

    Questions are drawn from each kind's pool without replacement (no question asked twice),
    three wrong answers from the entry's candidates, and the right answer's position is
    balanced within each kind (each of the four positions `per_kind / 4` times). The kinds
    take turns, so any prefix of the list covers every kind. (Until issue 17 the set was
    315 questions of six kinds, with repeats; it is a new set, not an extension.)
    """
    from retain.eval.text_questions import QUESTION_KINDS

    rng = np.random.default_rng(seed)
    by_kind = []
    for kind, pool_of in QUESTION_KINDS.items():
        pool = pool_of()
        if per_kind > len(pool):
            raise RetainError(f"The {kind} questions number {len(pool)}: per_kind={per_kind} is more than there are.")
        where = rng.permutation(np.arange(per_kind) % 4)  # the right answer's position, balanced
        items = []
        for k, w in zip(rng.choice(len(pool), per_kind, replace=False), where):
            e = pool[int(k)]
            rest = [d for d in e.distractors if d not in e.always]
            wrong = [*e.always, *(rest[int(i)] for i in rng.choice(len(rest), 3 - len(e.always), replace=False))]
            wrong = [wrong[int(i)] for i in rng.permutation(3)]
            options = wrong[:w] + [e.right] + wrong[w:]
            listed = ", ".join(options[:-1]) + " or " + options[-1]
            items.append(TextItem(e.question.replace("{options}", listed), options, int(w), kind))
        by_kind.append(items)
    return [items[i] for i in range(per_kind) for items in by_kind]


@dataclass
class TextAccuracy:
    accuracy: float
    """the option of highest summed log-probability picked"""
    by_kind: dict[str, float]
    records: list[dict] = field(repr=False, default_factory=list)
    accuracy_norm_token: float = 0.0
    """the option of highest mean log-probability per token picked"""
    accuracy_norm_char: float = 0.0
    """the option of highest log-probability per character picked (lm-eval's acc_norm)"""


def text_accuracy(mllm, items: list[TextItem], limit: int | None = None) -> TextAccuracy:
    """Accuracy of picking the right option by log-likelihood, text only (no image). Each record
    carries the pick by the summed score (`predicted`, `correct`) and by the length-normalised
    ones (`predicted_norm_token`, `correct_norm_token`, `predicted_norm_char`, `correct_norm_char`)."""
    items = items[:limit] if limit else items
    records = []
    for k, item in enumerate(bar(items, desc="text-only questions")):
        scores = mllm.loglik(None, item.question, item.options)
        picks = best_options(scores, item.options, [len(ids) for ids in mllm.option_ids(item.options)])
        pred = int(picks["sum"])
        rec = {"index": k, "kind": item.kind, "question": item.question, "predicted": item.options[pred],
               "answer": item.options[item.answer], "correct": pred == item.answer}
        for how in NORMALISED:
            rec[f"predicted_norm_{how}"] = item.options[int(picks[how])]
            rec[f"correct_norm_{how}"] = int(picks[how]) == item.answer
        records.append(rec)
    kinds = sorted({r["kind"] for r in records})
    by_kind = {kd: float(np.mean([r["correct"] for r in records if r["kind"] == kd])) for kd in kinds}

    def rate(key: str) -> float:
        return float(np.mean([r[key] for r in records])) if records else 0.0

    return TextAccuracy(rate("correct"), by_kind, records, rate("correct_norm_token"), rate("correct_norm_char"))


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
