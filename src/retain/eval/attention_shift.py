"""The attention shift WINGS points at: in an instruction with text before the image and a
question after it, how much attention do the question's tokens give to the text before
the image, layer by layer, and how does that profile compare with the original LLM
reading the same text without the image?

For every layer: the mass the post-image text tokens give to the pre-image text, to the
image tokens and to the post-image text (mean over heads, query tokens and items). With a
reference LLM, the same text with the image removed gives its pre-image-text mass per
layer, and the Pearson correlation of the two profiles across layers summarises the
shift (1: the same profile; lower: the MLLM attends to the earlier text differently).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from retain.errors import RetainError
from retain.hf import unwrapped


@dataclass
class AttentionShift:
    before_text: list[float]  # per layer
    image: list[float]
    after_text: list[float]
    reference_before_text: list[float] | None = None
    correlation: float | None = None

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _user_turn(tokenizer, content: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


@torch.no_grad()
def _masses(model, enc, image_id: int | None, split: int | None = None) -> np.ndarray:
    """(layers, 3): attention of post-image text queries on pre-image text, image, post-image text.
    Without image tokens (the reference), `split` marks where the image was."""
    out = model(**enc, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise RetainError("The model returned no attention probabilities (it needs eager attention).")
    ids = enc["input_ids"][0]
    is_image = ids == image_id if image_id is not None else torch.zeros_like(ids, dtype=torch.bool)
    where = torch.nonzero(is_image).flatten()
    if len(where):
        first, last = int(where[0]), int(where[-1])
    else:  # the reference reads the text alone: the image's place is marked by the split point
        first, last = int(split), int(split) - 1
    n = len(ids)
    before = torch.zeros(n, dtype=torch.bool)
    before[:first] = True
    after = torch.zeros(n, dtype=torch.bool)
    after[last + 1:] = True
    rows = []
    for att in out.attentions:
        a = att[0].float().mean(0)[after]  # (queries, keys)
        rows.append([float(a[:, before].sum(-1).mean()), float(a[:, is_image.cpu()].sum(-1).mean()),
                     float(a[:, after].sum(-1).mean())])
    return np.asarray(rows)


def _eager(model):
    """Switch `model` to eager attention; returns a function that switches it back."""
    base = unwrapped(model)
    was = getattr(base.config, "_attn_implementation", None)
    if was != "eager":
        base.set_attn_implementation("eager")
    return lambda: base.set_attn_implementation(was) if was not in (None, "eager") else None


def attention_shift(mllm, items: list[tuple[str, object, str]], reference=None) -> AttentionShift:
    """`items`: (text before the image, image, question after it). `reference`: the original
    causal LM (same tokenizer), read on the same text without the image."""
    if not items:
        raise RetainError("attention_shift needs at least one (text, image, question) item.")
    tok = mllm.tokenizer
    image_id = tok.convert_tokens_to_ids(mllm.image_token)
    restore = _eager(mllm.model)
    restore_ref = _eager(reference) if reference is not None else (lambda: None)
    try:
        masses, ref = [], []
        for before, image, question in items:
            prompt = _user_turn(tok, f"{before}\n{mllm.image_token}\n{question}")
            enc = mllm._encode([image], [prompt], "left")
            masses.append(_masses(mllm.model, enc, image_id))
            if reference is not None:
                head = _user_turn(tok, f"{before}\n{mllm.image_token}").split(mllm.image_token)[0]
                text = prompt.replace(f"{mllm.image_token}\n", "")
                ids = tok(text, return_tensors="pt", add_special_tokens=False)
                split = len(tok(head, add_special_tokens=False)["input_ids"])
                device = next(reference.parameters()).device
                renc = {"input_ids": ids["input_ids"].to(device), "attention_mask": ids["attention_mask"].to(device)}
                ref.append(_masses(reference, renc, None, split)[:, 0])
    finally:
        restore()
        restore_ref()
    m = np.mean(masses, 0)
    result = AttentionShift(m[:, 0].tolist(), m[:, 1].tolist(), m[:, 2].tolist())
    if ref:
        r = np.mean(ref, 0)
        result.reference_before_text = r.tolist()
        if np.std(m[:, 0]) > 0 and np.std(r) > 0:
            result.correlation = float(np.corrcoef(m[:, 0], r)[0, 1])
    return result
