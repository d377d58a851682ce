"""LDIFS (Mukhoti et al., 2023, arXiv 2308.13320): keep the features where they were.

Loss = CE + alpha * R with

    R = mean_b (1/L) sum_l mean_{t,d} (n(phi_l(x; theta)) - n(phi_l(x; theta0)))^2

phi_l the image tower's tapped hidden states (the embedding output after the
pre-LayerNorm and evenly spaced block outputs: blocks 3, 6, 9, 12 of a 12-block ViT),
theta0 the model at the start of the current task, n division by the L2 norm.

`normalize` picks the axis of n. `token` (default) is the reference code's
(omegafragger/ldifs_code, loss/ldifs.py: F.normalize(features, dim=1) on (B, T, D)):
each channel is divided by its norm over the T tokens. `channel` divides each token's
D-vector by its norm instead. For unit vectors the squared difference averaged over
(t, d) scales as 1/T (token) or 1/D (channel), so at one alpha the `channel` term is
about D/T times weaker: 11x on mini-CLIP (D 192, T 17), 3.9x on ViT-B/16 at 224 px
(768, 197). alpha must be chosen with the normalisation.

The paper's alpha = 10 (`PAPER_ALPHA`, the option's default) belongs to its setting: lr
1e-5, 500 warm-up steps, ViT-B at 224 px, many epochs. A shorter or faster schedule
moves the features further per step, and the weight that holds them must grow with it:
retain's quickstart (lr 3e-4, a few hundred steps, a 6-block tower) uses the alpha its
sweep chose (docs/guide/ldifs.md, `bench/ldifs_sweep.py`).

Inputs are not augmented, so the frozen model's tap features of an item never change
within a task: they are computed the first time the item is seen (by a frozen copy of
the tower, as the reference code does every step) and looked up by item index after
that (`cache_frozen`), as long as the cache fits in `cache_max_mb`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F

from retain.config import NON_NEGATIVE
from retain.methods.base import Method, TaskContext, register


PAPER_ALPHA = 10.0


@dataclass
class LDIFSOptions:
    alpha: Annotated[float, NON_NEGATIVE] = PAPER_ALPHA
    """weight of the feature-distance regulariser (10: the paper's, for lr 1e-5 and long schedules)"""
    taps: list[int] = field(default_factory=list)
    """tapped blocks (0 = embedding output); empty: embedding + 4 evenly spaced blocks"""
    normalize: Literal["token", "channel"] = "token"
    """'token' (over T, per channel; the reference code's, default) or 'channel' (over D, per token)"""
    cache_frozen: bool = True
    """keep the frozen model's features of each item after its first step instead of recomputing"""
    cache_max_mb: Annotated[float, NON_NEGATIVE] = 1024.0
    """largest cache (float32) to keep; beyond it the frozen tower runs every step"""

def default_taps(num_blocks: int, count: int = 4) -> tuple[int, ...]:
    """(0, and `count` evenly spaced blocks ending at the last): 12 blocks -> 0, 3, 6, 9, 12."""
    return (0, *sorted({int(num_blocks * k / count + 0.5) for k in range(1, count + 1)}))


def normalise(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Divide (B, T, D) features by their L2 norm over D ('channel') or over T ('token')."""
    if mode == "channel":
        return F.normalize(x, dim=-1)
    if mode == "token":
        return F.normalize(x, dim=1)
    raise ValueError(f"LDIFS normalize must be 'channel' or 'token', not {mode!r}")


def ldifs_distance(current: list[torch.Tensor], frozen: list[torch.Tensor], mode: str = "token") -> torch.Tensor:
    """R of the docstring above for lists of (B, T, D) tap features."""
    per_item = torch.stack([
        (normalise(c, mode) - normalise(f.to(c), mode)).pow(2).flatten(1).mean(1)
        for c, f in zip(current, frozen)
    ])  # (L, B)
    return per_item.mean(0).mean()


@register
class LDIFS(Method):
    name = "ldifs"
    Options = LDIFSOptions

    def setup(self, model) -> None:
        normalise(torch.zeros(1, 1, 1), self.opts.normalize)  # fail early on a bad mode
        self.taps = tuple(self.opts.taps) or default_taps(model.encoder.num_blocks)
        bad = [t for t in self.taps if not 0 <= int(t) <= model.encoder.num_blocks]
        if bad:
            raise ValueError(f"LDIFS taps {bad} are outside 0..{model.encoder.num_blocks}")

    def before_task(self, ctx: TaskContext) -> None:
        enc = ctx.model.encoder
        self.frozen = copy.deepcopy(enc).eval().requires_grad_(False)
        self.cache, self.filled = None, None
        if self.opts.cache_frozen:
            shapes = tap_shapes(enc, self.taps)
            megabytes = len(ctx.train) * sum(t * d for t, d in shapes) * 4 / 2**20
            if megabytes <= self.opts.cache_max_mb:
                self.cache = [torch.empty(len(ctx.train), t, d) for t, d in shapes]
                self.filled = torch.zeros(len(ctx.train), dtype=torch.bool)

    def frozen_features(self, batch) -> list[torch.Tensor]:
        """The anchor model's tap features of the batch's task items, (B, T, D) each."""
        pixels = batch["pixel_values"]
        if self.cache is None:
            with torch.no_grad():
                return self.frozen.image_forward(pixels, self.taps)[1]
        idx = batch["index"].cpu()
        new = ~self.filled[idx]
        if new.any():
            with torch.no_grad():
                fresh = self.frozen.image_forward(pixels[new.to(pixels.device)], self.taps)[1]
            for store, f in zip(self.cache, fresh):
                store[idx[new]] = f.float().cpu()
            self.filled[idx[new]] = True
        return [c[idx].to(pixels.device, non_blocking=True) for c in self.cache]

    def loss(self, batch, outputs, ctx) -> torch.Tensor:
        return self.opts.alpha * ldifs_distance(outputs["taps"], self.frozen_features(batch), self.opts.normalize)

    def after_task(self, ctx: TaskContext) -> None:
        self.cache, self.filled, self.frozen = None, None, None


def tap_shapes(encoder, taps) -> list[tuple[int, int]]:
    """(tokens, width) of each tap of the image tower."""
    cfg = encoder.vision.config
    tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
    return [(tokens, cfg.hidden_size) for _ in taps]
