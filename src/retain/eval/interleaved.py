"""Interleaved image-text evaluation: conversations that mix text-only turns and image turns.

Each conversation has `turns` turns; `images` of them (chosen at random positions) ask
about an image (easy-VQA: the shape's colour or its shape, options = the classes), the
others are text-only questions of the offline set (`text_qa_items`). Earlier turns carry
their reference answers as the history; each turn is scored by the log-likelihood of its
options. Mixes run from text-rich (0 image turns) to image-rich (all image turns), so one
table shows whether text skill holds up as images crowd in, and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retain.eval.text_retention import text_qa_items
from retain.progress import bar


@dataclass
class Turn:
    question: str
    options: list[str]
    answer: int
    image: object | None = None


@dataclass
class Conversation:
    turns: list[Turn]

    @property
    def image_turns(self) -> int:
        return sum(t.image is not None for t in self.turns)


@dataclass
class InterleavedResult:
    by_mix: dict[int, dict[str, float]]  # image turns -> {text, image, all} accuracy
    records: list[dict] = field(repr=False, default_factory=list)


def image_turns_pool(limit: int = 200) -> list[Turn]:
    """easy-VQA test images as multiple-choice turns (colour and shape questions)."""
    from retain.data import load_task

    shape, color = load_task("easyvqa-shape"), load_task("easyvqa-color")
    s, c = shape.split("test").subset(limit), color.split("test").subset(limit)
    turns = []
    for i in range(len(s)):
        turns.append(Turn("What shape is in the image?", list(shape.class_names), int(s.labels[i]), s.images[i]))
        turns.append(Turn("What colour is the shape?", list(color.class_names), int(c.labels[i]), c.images[i]))
    return turns


def build_conversations(per_mix: int = 10, turns: int = 4, seed: int = 0, image_pool: list[Turn] | None = None
                        ) -> list[Conversation]:
    """`per_mix` conversations for every number of image turns from 0 to `turns`."""
    rng = np.random.default_rng(seed)
    text = [Turn(t.question, t.options, t.answer) for t in text_qa_items(seed)]
    pool = image_pool if image_pool is not None else image_turns_pool()
    out = []
    for n_images in range(turns + 1):
        for _ in range(per_mix):
            where = set(rng.choice(turns, n_images, replace=False).tolist())
            out.append(Conversation([pool[rng.integers(len(pool))] if k in where else text[rng.integers(len(text))]
                                     for k in range(turns)]))
    return out


def evaluate_interleaved(mllm, conversations: list[Conversation]) -> InterleavedResult:
    records = []
    for c, conv in enumerate(bar(conversations, desc="interleaved conversations")):
        for k, turn in enumerate(conv.turns):
            history = [(t.question, t.image is not None, t.options[t.answer]) for t in conv.turns[:k]]
            images = [t.image for t in conv.turns[:k + 1] if t.image is not None]
            scores = mllm.loglik_conversation(history + [(turn.question, turn.image is not None, None)], images,
                                              turn.options)
            records.append({"conversation": c, "turn": k, "image_turns": conv.image_turns,
                            "kind": "image" if turn.image is not None else "text",
                            "question": turn.question, "predicted": turn.options[int(np.argmax(scores))],
                            "answer": turn.options[turn.answer], "correct": int(np.argmax(scores)) == turn.answer})
    by_mix = {}
    for n in sorted({r["image_turns"] for r in records}):
        mine = [r for r in records if r["image_turns"] == n]
        row = {"all": float(np.mean([r["correct"] for r in mine]))}
        for kind in ("text", "image"):
            sel = [r["correct"] for r in mine if r["kind"] == kind]
            row[kind] = float(np.mean(sel)) if sel else None
        by_mix[n] = row
    return InterleavedResult(by_mix, records)
