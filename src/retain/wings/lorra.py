"""Low-Rank Residual Attention (LoRRA), WINGS's learner, and its router.

For a hidden state h (after the main attention's residual) and the learner's features F
(the projected image tokens for the visual learner, the text token embeddings for the
textual one):

    Q = h + h A_q B_q,   K = F + F A_k B_k,   V = F + F A_v B_v
    out = softmax(Q K^T / sqrt(d_head) + mask) V A_o B_o

per head (d_head = the model's head size). A ~ trunc-normal(std 0.02), B = 0, so a fresh
learner outputs exactly zero. The router weighs the two learners per token:
w = softmax(SiLU(W_r a + b)) in R^2, a a summary of the main attention's probabilities.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LowRank(nn.Module):
    """x + x A B (residual=True) or x A B, A: (d, r) trunc-normal(0.02), B: (r, d) zeros."""

    def __init__(self, dim: int, rank: int, residual: bool = True):
        super().__init__()
        self.A = nn.Parameter(nn.init.trunc_normal_(torch.empty(dim, rank), std=0.02))
        self.B = nn.Parameter(torch.zeros(rank, dim))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x @ self.A.to(x.dtype) @ self.B.to(x.dtype)
        return x + low if self.residual else low


class LoRRA(nn.Module):
    def __init__(self, dim: int, heads: int, rank: int = 64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"LoRRA: width {dim} does not split into {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = LowRank(dim, rank), LowRank(dim, rank), LowRank(dim, rank)
        self.o = LowRank(dim, rank, residual=False)

    def forward(self, h: torch.Tensor, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """h: (B, T, d); features: (B, S, d); mask: (B, T, S) bool, True where a query may look.
        Rows with nothing to look at give zero."""
        b, t, d = h.shape
        s = features.shape[1]
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(features).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(features).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None], float("-inf"))
        probs = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
        probs = probs.nan_to_num(0.0).to(h.dtype)  # empty rows -> 0
        out = (probs @ v).transpose(1, 2).reshape(b, t, d)
        return self.o(out)


class LearnerRouter(nn.Module):
    """w = softmax(SiLU(W a + b)): per-token weights of the visual and textual learners."""

    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 2)

    def forward(self, summary: torch.Tensor) -> torch.Tensor:
        return F.softmax(F.silu(self.linear(summary.to(self.linear.weight.dtype))), dim=-1)
