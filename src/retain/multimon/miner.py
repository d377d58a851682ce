"""Exact search for erroneous agreements (MultiMon, Tong, Jones and Steinhardt, 2023).

A pair of sentences (i, j) is an erroneous agreement when the target encoder embeds them
almost identically and the reference encoder does not:

    cos_target(i, j) > threshold  and  |cos_target(i, j) - cos_reference(i, j)| > gap

with the paper's threshold 0.9 and gap 0.2. The search visits every unordered pair once,
tile by tile over the upper triangle of the similarity matrix: a (block x chunk) tile of
target cosines, the reference cosines only where the target passes (gathered when they
are few, a dense tile when they are many), and a running top-k by target cosine. Memory
is one tile plus the top-k, whatever the corpus size; the result equals a brute-force
pass over the full matrices (tested).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from retain.errors import RetainError
from retain.progress import bar


@dataclass
class MineResult:
    """Erroneous agreements, best first: highest target cosine, then lowest (i, j)."""

    i: np.ndarray
    j: np.ndarray
    cos_target: np.ndarray
    cos_reference: np.ndarray
    stats: dict = field(default_factory=dict)
    """pairs compared, candidates (target above threshold), agreements found, seconds"""

    def __len__(self) -> int:
        return len(self.i)


class _TopK:
    """The k best pairs seen so far, ordered by (-cos_target, i, j); k=None keeps all."""

    def __init__(self, k: int | None):
        self.k = k
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.floor = -np.inf  # a pair below the current k-th cosine cannot enter

    def add(self, i, j, ct, cr) -> None:
        if self.k is not None:
            keep = ct >= self.floor
            i, j, ct, cr = i[keep], j[keep], ct[keep], cr[keep]
        if len(i):
            self.parts.append((i, j, ct, cr))
            if self.k is not None and sum(len(p[0]) for p in self.parts) > 4 * self.k:
                self._compact()

    def _compact(self) -> None:
        i, j, ct, cr = (np.concatenate(x) for x in zip(*self.parts))
        order = np.lexsort((j, i, -ct.astype(np.float64)))
        if self.k is not None:
            order = order[:self.k]
            if len(order) == self.k:
                self.floor = ct[order[-1]]
        self.parts = [(i[order], j[order], ct[order], cr[order])]

    def result(self) -> tuple[np.ndarray, ...]:
        if not self.parts:
            return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),) * 2
        self._compact()
        return self.parts[0]


def erroneous_agreements(target: torch.Tensor, reference: torch.Tensor, threshold: float = 0.9,
                         gap: float = 0.2, top_k: int | None = 150, block: int = 1024, chunk: int = 16384,
                         progress: bool = True) -> MineResult:
    """Every pair i < j with target cosine above `threshold` and a target-reference gap above `gap`.

    Args:
        target: (N, Et) L2-normalised embeddings by the target encoder.
        reference: (N, Er) L2-normalised embeddings of the same sentences by the reference.
        top_k: keep the k pairs with the highest target cosine (None: keep every pair,
            memory then grows with the number of agreements).
        block, chunk: tile size (rows x columns); memory is about 9 bytes per tile entry.
    """
    n = target.shape[0]
    if reference.shape[0] != n:
        raise RetainError(f"The target has {n} embeddings but the reference {reference.shape[0]}: "
                          "both must embed the same sentences.")
    if top_k is not None and top_k < 1:
        raise RetainError(f"top_k must be a positive number of pairs (or None for all), not {top_k}.")
    t = target.float().contiguous()
    r = reference.float().contiguous()
    best = _TopK(top_k)
    compared = candidates = found = 0
    start = time.perf_counter()
    starts = range(0, n, block)
    buffer = torch.empty(min(block, n) * min(chunk, n))  # one tile's cosines, reused: no page faults per tile
    for r0 in bar(starts, desc="searching pairs", total=len(starts), unit="block", disable=not progress):
        r1 = min(r0 + block, n)
        rows_t, rows_r = t[r0:r1], r[r0:r1]
        for c0 in range(r0, n, chunk):
            c1 = min(c0 + chunk, n)
            sim = torch.mm(rows_t, t[c0:c1].T, out=buffer[:(r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0))
            mask = sim > threshold
            if c0 < r1:  # the tile crosses the diagonal: only j > i
                mask &= torch.arange(c0, c1).unsqueeze(0) > torch.arange(r0, r1).unsqueeze(1)
                compared += int(np.clip(c1 - np.maximum(c0, np.arange(r0, r1) + 1), 0, None).sum())
            else:
                compared += sim.numel()
            a, b = mask.nonzero(as_tuple=True)  # one pass; a separate count would cost more than this
            count = len(a)
            if not count:
                continue
            candidates += count
            ct = sim[a, b]
            if count * 32 > sim.numel():  # many candidates: a dense reference tile is cheaper
                cr = (rows_r @ r[c0:c1].T)[a, b]
            else:
                cr = (rows_r[a] * r[c0 + b]).sum(-1)
            keep = (ct - cr).abs() > gap
            if not bool(keep.any()):
                continue
            found += int(keep.sum())
            best.add((a[keep] + r0).numpy().astype(np.int64), (b[keep] + c0).numpy().astype(np.int64),
                     ct[keep].numpy(), cr[keep].numpy())
    seconds = time.perf_counter() - start
    i, j, ct, cr = best.result()
    stats = {"sentences": n, "pairs_compared": compared, "candidates": candidates, "agreements": found,
             "kept": len(i), "threshold": threshold, "gap": gap, "top_k": top_k, "search_seconds": round(seconds, 3),
             "pairs_per_second": round(compared / seconds) if seconds > 0 else None}
    return MineResult(i, j, ct, cr, stats)
