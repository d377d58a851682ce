"""Experience replay: a bounded buffer of earlier tasks' items mixed into every batch.

After each task the buffer keeps `buffer_size` items split equally over the tasks seen
so far (each task's share a fixed random sample of its training split). While training
later tasks every batch gets `replay_fraction` x batch-size extra items from the buffer,
each scored by its own task's head (for an MLLM: each with its own question and answer,
trained as lora_ft trains).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from retain.config import FRACTION, NON_NEGATIVE
from retain.methods.base import Method, TaskContext, is_mllm, register
from retain.methods.lora import setup_mllm_adapters


@dataclass
class ReplayOptions:
    buffer_size: Annotated[int, NON_NEGATIVE] = 500
    """items kept over all earlier tasks"""
    replay_fraction: Annotated[float, FRACTION] = 0.5
    """replayed items per step, as a fraction of the batch size"""


@register
class Replay(Method):
    name = "replay"
    Options = ReplayOptions
    families = ("dual_encoder", "mllm")

    def setup(self, model) -> None:
        setup_mllm_adapters(model)
        self.buffer = torch.zeros(0, 2, dtype=torch.long)  # rows: (task index, item index)

    def before_task(self, ctx: TaskContext) -> None:
        self.rng = np.random.default_rng(ctx.seed)

    def extend_batch(self, batch: dict, ctx: TaskContext) -> dict:
        n = int(round(self.opts.replay_fraction * len(batch["index"])))
        if len(self.buffer) == 0 or n == 0:
            return batch
        rows = self.buffer[self.rng.integers(0, len(self.buffer), n)]
        if is_mllm(ctx.model):  # an MLLM batch: items are (image, question, answer)
            # image and text-only items cannot share a batch: replay items of the batch's kind
            out = {k: list(v) for k, v in batch.items() if k in ("images", "questions", "answers")}
            for t, i in rows.tolist():
                split = ctx.train_splits[t]
                if (split.images[i] is None) == (batch["images"][0] is None):
                    out["images"].append(split.images[i])
                    out["questions"].append(split.questions[i])
                    out["answers"].append(split.answers[i])
            return {**batch, **out}
        images, labels, heads = [], [], []
        for t, i in rows.tolist():
            split = ctx.train_splits[t]
            images.append(split.images[i])
            labels.append(int(split.labels[i]))
            heads.append(ctx.tasks[t].name)
        pixels = ctx.model.encoder.preprocess(np.stack(images)).to(batch["pixel_values"])
        return {
            "pixel_values": torch.cat([batch["pixel_values"], pixels]),
            "labels": torch.cat([batch["labels"], torch.tensor(labels, device=batch["labels"].device)]),
            "heads": list(batch["heads"]) + heads,
            "index": torch.cat([batch["index"], torch.full((n,), -1, device=batch["index"].device)]),
        }

    def after_task(self, ctx: TaskContext) -> None:
        seen = ctx.index + 1
        quota = self.opts.buffer_size // seen
        kept = [self.buffer[self.buffer[:, 0] == t][:quota] for t in range(ctx.index)]
        pick = np.random.default_rng(ctx.seed).permutation(len(ctx.train))[:quota]
        new = torch.stack([torch.full((len(pick),), ctx.index), torch.from_numpy(pick)], 1).long()
        self.buffer = torch.cat([*kept, new])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"buffer": self.buffer}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.buffer = state["buffer"].long()
