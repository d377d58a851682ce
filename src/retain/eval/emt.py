"""EMT: evaluate an MLLM as an image classifier (Zhai et al., 2023, arXiv 2309.10313).

The MLLM sees the image and the prompt "What is the object in the image? Please only
answer a single object in [c1, c2, ...]." (`number` for digits) and its answer is scored
three ways:

- `rule`: the deterministic matcher of `emt_match` (normalisation, plurals, synonyms,
  exactly one class named);
- `judge`: an LLM judge on any OpenAI-compatible endpoint (`judge`), failures reported
  per item and the failure type of a wrong answer taken from the matcher; the judge is the
  reference, and the matcher's agreement with it is reported (`rule_judge_agreement`);
- `likelihood`: no generation; the class names are ranked by the MLLM's log-probability,
  summed over a name's tokens (`accuracy`, `predicted`) and, beside it, length-normalised
  per token and per character as lm-eval's acc_norm (`accuracy_norm_token`,
  `accuracy_norm_char`; per item `predicted_norm_token`, `predicted_norm_char`).

Per dataset: MLLM accuracy, the vision encoder's own zero-shot accuracy beside it, the
gap, and the paper's failure types (wrong class, several classes, a class outside the
label set) with counts and examples. An item the judge could not score is unscored (outcome
`judge_error`), never wrong; with no item scored the accuracy is None, not 0. An endpoint
that goes down (`retain.llm.EndpointDown`) leaves the remaining items unscored and is
reported in `halted`, for the caller to stop on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from retain.data.instruct import EMT_TEMPLATE, emt_prompt
from retain.data.task import Task
from retain.errors import RetainError
from retain.eval.emt_match import OUTCOMES, RuleMatcher, synonyms_for
from retain.llm import EndpointDown
from retain.models.mllm import NORMALISED, best_options
from retain.progress import bar

MODES = ("rule", "judge", "likelihood")
# Likelihood mode hands the model this many batches at a time (one progress step each).
LIKELIHOOD_BATCHES = 8


@dataclass
class EMTResult:
    task: str
    mode: str
    accuracy: float | None
    """None when no item could be scored"""
    encoder_zero_shot: float | None
    counts: dict[str, int]
    examples: dict[str, list[dict]]
    records: list[dict] = field(repr=False, default_factory=list)
    halted: str | None = None
    """why judging stopped part-way (the endpoint went down), None when every item was asked"""
    accuracy_norm_token: float | None = None
    """likelihood mode: the class picked by its mean log-probability per token"""
    accuracy_norm_char: float | None = None
    """likelihood mode: the class picked by its log-probability per character (lm-eval's acc_norm)"""
    rule_judge_agreement: float | None = None
    """judge mode: the fraction of judged items where the rule matcher's verdict (correct or not) is the judge's"""

    @property
    def gap(self) -> float | None:
        if self.encoder_zero_shot is None or self.accuracy is None:
            return None
        return self.accuracy - self.encoder_zero_shot

    def summary(self) -> dict:
        return {"task": self.task, "mode": self.mode, "mllm_accuracy": self.accuracy,
                "encoder_zero_shot": self.encoder_zero_shot, "gap": self.gap,
                **({f"mllm_accuracy_norm_{how}": getattr(self, f"accuracy_norm_{how}") for how in NORMALISED}
                   if self.mode == "likelihood" else {}),
                "counts": self.counts, "unscored": self.counts.get("judge_error", 0), "examples": self.examples,
                **({"halted": self.halted} if self.halted else {}),
                **({"rule_judge_agreement": self.rule_judge_agreement} if self.mode == "judge" else {})}


def evaluate_emt(mllm, task: Task, mode: str = "rule", limit: int | None = None, judge=None,
                 encoder=None, template: str = EMT_TEMPLATE, batch_size: int = 8,
                 max_new_tokens: int = 16, examples_per_type: int = 3,
                 synonyms: dict[str, list[str]] | None = None) -> EMTResult:
    """EMT on `task`'s test split. `encoder` (a DualEncoder) gives the zero-shot column; `synonyms` (class ->
    more names, `emt_match.check_synonyms` checked) are the user's, those of other label sets left aside."""
    if mode not in MODES:
        raise RetainError(f"Unknown EMT scoring mode {mode!r}: use one of {', '.join(MODES)}.")
    if mode == "judge" and judge is None:
        raise RetainError("EMT mode 'judge' needs a judge endpoint (--judge-url and --judge-model).")
    split = task.split("test").subset(limit)
    prompt = emt_prompt(task, template)
    matcher = RuleMatcher(task.class_names, synonyms_for(synonyms, task.class_names))
    records, halted = [], None
    if mode == "likelihood":
        token_counts = [len(ids) for ids in mllm.option_ids(task.class_names)]
        chunk = batch_size * LIKELIHOOD_BATCHES  # the prompt's shared first tokens run once per chunk
        for s in bar(range(0, len(split), chunk), desc=f"EMT likelihood on {task.name}"):
            batch = list(split.images[s:s + chunk])
            scores = mllm.loglik_many(batch, prompt, task.class_names, batch_size)
            picks = best_options(scores, task.class_names, token_counts)  # {sum, token, char: (B,)}
            for k in range(len(batch)):
                i, pred, label = s + k, int(picks["sum"][k]), int(split.labels[s + k])
                records.append({"index": i, "label": label, "answer": task.class_names[pred], "predicted": pred,
                                "outcome": "correct" if pred == label else "wrong_class",
                                **{f"predicted_norm_{how}": int(picks[how][k]) for how in NORMALISED}})
    else:
        answers = []
        for s in bar(range(0, len(split), batch_size), desc=f"EMT generation on {task.name}"):
            ims = list(split.images[s:s + batch_size])
            answers += mllm.generate(ims, [prompt] * len(ims), max_new_tokens=max_new_tokens, batch_size=batch_size)
        for i, answer in enumerate(answers):
            label = int(split.labels[i])
            m = matcher.match(answer, label)
            rec = {"index": i, "label": label, "answer": answer, "predicted": m.predicted, "outcome": m.outcome}
            if mode == "judge":
                rec["rule_outcome"] = m.outcome
                try:
                    v = None if halted else judge.judge(answer, task.class_names[label], task.class_names)
                except EndpointDown as e:
                    halted, v = str(e), None
                rec["judge_reply"] = v and v.reply
                if v is None:
                    rec["outcome"], rec["judge_error"] = "judge_error", "not judged: the endpoint is down"
                elif v.correct is None:
                    rec["outcome"], rec["judge_error"] = "judge_error", v.error
                elif v.correct:
                    rec["outcome"] = "correct"
                elif m.outcome == "correct":  # the judge disagrees with the matcher: a wrong class
                    rec["outcome"] = "wrong_class"
            records.append(rec)
    counts = Counter(r["outcome"] for r in records)
    scored = [r for r in records if r["outcome"] != "judge_error"]
    accuracy = sum(r["outcome"] == "correct" for r in scored) / len(scored) if scored else None
    examples = {o: [{"answer": r["answer"], "label": task.class_names[r["label"]]}
                    for r in records if r["outcome"] == o][:examples_per_type]
                for o in (*OUTCOMES[1:], "judge_error") if counts.get(o)}
    zs = None
    if encoder is not None:
        from retain.eval.classification import zero_shot

        zs = zero_shot(encoder, task, limit=limit).accuracy
    full_counts = {o: counts.get(o, 0) for o in (*OUTCOMES, "judge_error")}
    norm = {f"accuracy_norm_{how}": float(np.mean([r[f"predicted_norm_{how}"] == r["label"] for r in records]))
            for how in NORMALISED} if mode == "likelihood" and records else {}
    judged = [r for r in scored if "rule_outcome" in r]  # judge mode: the items both scored
    agree = (sum((r["rule_outcome"] == "correct") == (r["outcome"] == "correct") for r in judged) / len(judged)
             if judged else None)
    return EMTResult(task.name, mode, accuracy, zs, full_counts, examples, records, halted, **norm,
                     rule_judge_agreement=agree)
