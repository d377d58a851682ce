"""Offline instruction data for building mini-LLaVA, generated from the offline datasets.

Stage 1 (projector alignment, as LLaVA's caption pre-training): an image and a request
for a brief description, answered by a caption made from the item's labels.
Stage 2 (instruction tuning): questions about the images (what clothing, which shape,
which colour, yes/no checks) mixed with text-only turns whose answers the original LM
gave itself, so that its text skill has something to hold on to. Everything here is
generated from templates and says so; no external instruction corpus ships offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retain.data import load_task

DESCRIBE = ["Describe the image briefly.", "What does the image show?", "Give a short caption for this image.",
            "Summarize the picture in a few words."]
TEXT_PROMPTS = [
    "What is 2 plus 3?", "What is the capital of France?", "Name three colours.", "What is 10 minus 4?",
    "What do bees make?", "How many legs does a spider have?", "What is the opposite of hot?",
    "Name a fruit that is yellow.", "What is the largest planet in the solar system?", "What is 6 times 7?",
    "Which animal is known as the king of the jungle?", "What do you call frozen water?",
    "Write a short sentence about the sea.", "What day comes after Monday?", "What is the boiling point of water in Celsius?",
    "Name a musical instrument with strings.",
]


@dataclass
class Item:
    image: np.ndarray | None
    question: str
    answer: str


def _pools():
    fashion = load_task("fashion-mnist")
    shape, color = load_task("easyvqa-shape"), load_task("easyvqa-color")
    return fashion, shape, color


def caption_items(n: int, seed: int) -> list[Item]:
    """Stage-1 items: describe-the-image requests answered by label captions."""
    rng = np.random.default_rng(seed)
    fashion, shape, color = _pools()
    fs, ss, cs = fashion.split("pretrain"), shape.split("pretrain"), color.split("pretrain")
    items = []
    for _ in range(n):
        q = DESCRIBE[rng.integers(len(DESCRIBE))]
        if rng.random() < 0.5:
            i = rng.integers(len(fs))
            items.append(Item(fs.images[i], q, f"A photo of a {fashion.class_names[fs.labels[i]]}."))
        else:
            i = rng.integers(len(ss))
            items.append(Item(ss.images[i], q, f"A {color.class_names[cs.labels[i]]} {shape.class_names[ss.labels[i]]}."))
    return items


def question_items(n: int, seed: int) -> list[Item]:
    """Stage-2 image items: questions about clothing type, shape and colour, and yes/no checks."""
    rng = np.random.default_rng(seed)
    fashion, shape, color = _pools()
    fs, ss, cs = fashion.split("pretrain"), shape.split("pretrain"), color.split("pretrain")
    items = []
    for _ in range(n):
        kind = rng.integers(6)
        if kind < 2:
            i = rng.integers(len(fs))
            name = fashion.class_names[fs.labels[i]]
            if kind == 0:
                items.append(Item(fs.images[i], "What type of clothing is this?", f"{name}."))
            else:
                other = fashion.class_names[rng.integers(fashion.num_classes)]
                items.append(Item(fs.images[i], f"Is this a {other}?", "Yes." if other == name else "No."))
            continue
        i = rng.integers(len(ss))
        s, c = shape.class_names[ss.labels[i]], color.class_names[cs.labels[i]]
        if kind == 2:
            items.append(Item(ss.images[i], "What shape is in the image?", f"{s}."))
        elif kind == 3:
            items.append(Item(ss.images[i], "What color is the shape?", f"{c}."))
        elif kind == 4:
            other = color.class_names[rng.integers(color.num_classes)]
            items.append(Item(ss.images[i], f"Is there a {other} shape in the image?", "Yes." if other == c else "No."))
        else:
            items.append(Item(ss.images[i], DESCRIBE[rng.integers(len(DESCRIBE))], f"A {c} {s}."))
    return items


def self_distilled_text_items(mllm, max_new_tokens: int = 32) -> list[Item]:
    """Text-only turns answered by the model itself before any multimodal training."""
    answers = mllm.generate(None, TEXT_PROMPTS, max_new_tokens=max_new_tokens, batch_size=8)
    return [Item(None, q, a) for q, a in zip(TEXT_PROMPTS, answers) if a]
