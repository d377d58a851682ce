"""Scoring an MLLM on an instruction task: greedy answers, each scored against its references.

Scorers: `exact` (exact match after the VQA normalisation), `vqa` (VQA accuracy over the
references), `caption` (ROUGE-L per item as the task's score; BLEU-4 and CIDEr-D over the
split as well), `judge` (an LLM judge on an OpenAI-compatible endpoint decides; an item
it cannot judge is reported and left out of the score: unscored, never wrong; with no item
scored the score is None, not 0). Every answer is kept as a record, so each score can be
audited. An endpoint that goes down (`retain.llm.EndpointDown`) leaves the remaining items
unscored and is reported in `halted`, for the caller to stop on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retain.errors import RetainError
from retain.eval.text_scores import bleu, cider_d, exact_match, rouge_l, vqa_accuracy
from retain.llm import EndpointDown
from retain.progress import bar

ITEM_SCORES = {"exact": exact_match, "vqa": vqa_accuracy, "caption": rouge_l}
SCORERS = (*ITEM_SCORES, "judge")


@dataclass
class InstructionResult:
    task: str
    scorer: str
    score: float | None
    """None when no item could be scored"""
    extra: dict = field(default_factory=dict)
    records: list[dict] = field(repr=False, default_factory=list)
    halted: str | None = None
    """why judging stopped part-way (the endpoint went down), None when every item was asked"""


def evaluate_instruction(mllm, task, limit: int | None = None, batch_size: int = 8,
                         max_new_tokens: int = 32, judge=None) -> InstructionResult:
    """Generate an answer for each test item of `task` and score it with the task's scorer."""
    if task.scorer not in SCORERS:
        raise RetainError(f"Task {task.name!r} has scorer {task.scorer!r}, which `evaluate_instruction` does not "
                          f"handle (use one of {', '.join(SCORERS)}; emt tasks go through evaluate_emt).")
    if task.scorer == "judge" and judge is None:
        raise RetainError(f"Task {task.name!r} is scored by an LLM judge: set eval.judge_url and eval.judge_model "
                          "(the key comes from the variable named by eval.judge_key_env).")
    split = task.split("test").subset(limit)
    answers = []
    for s in bar(range(0, len(split), batch_size), desc=f"answering {task.name}"):
        ims = split.images[s:s + batch_size]
        text_only = [i is None for i in ims]
        if all(text_only):
            ims = None
        elif any(text_only):  # generate the two kinds apart, keep the order
            out = {}
            for want in (False, True):
                idx = [k for k, t in enumerate(text_only) if t == want]
                got = mllm.generate(None if want else [ims[k] for k in idx], [split.questions[s + k] for k in idx],
                                    max_new_tokens=max_new_tokens, batch_size=batch_size)
                out.update(zip(idx, got))
            answers += [out[k] for k in range(len(ims))]
            continue
        answers += mllm.generate(ims, split.questions[s:s + batch_size], max_new_tokens=max_new_tokens,
                                 batch_size=batch_size)
    records, halted = [], None
    for i, answer in enumerate(answers):
        refs = split.refs(i)
        rec = {"index": i, "question": split.questions[i], "answer": answer, "references": refs}
        if task.scorer == "judge":
            try:
                v = None if halted else judge.judge_open(split.questions[i], answer, refs)
            except EndpointDown as e:
                halted, v = str(e), None
            rec["score"] = None if v is None or v.correct is None else float(v.correct)
            rec["judge_reply"] = v and v.reply
            if v is None or v.error:
                rec["judge_error"] = v.error if v else "not judged: the endpoint is down"
        else:
            rec["score"] = ITEM_SCORES[task.scorer](answer, refs)
        records.append(rec)
    extra = {}
    if task.scorer == "caption":
        refs = [split.refs(i) for i in range(len(answers))]
        extra = {"bleu4": bleu(answers, refs), "cider_d": cider_d(answers, refs),
                 "rouge_l": float(np.mean([r["score"] for r in records]))}
    scored = [r["score"] for r in records if r["score"] is not None]
    if task.scorer == "judge":
        extra = {"judged": len(scored), "judge_errors": len(records) - len(scored)}
    score = float(np.mean(scored)) if scored else None
    return InstructionResult(task.name, task.scorer, score, extra, records, halted)
