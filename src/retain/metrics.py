"""Continual-learning metrics as pure functions of the accuracy matrix.

`A` has T+1 rows and T columns: row 0 is the score of every task before any training
(the zero-shot row), row t (1-based) the score of every task after training task t.
Definitions follow MCITlib (Guo et al., 2025) and GEM (Lopez-Paz & Ranzato, 2017):

    MFT = mean_i A[i][i]                      (fine-tuned: each task right after learning it)
    MFN = mean_i A[T][i]                      (final)
    MAA = mean_t (1/t) sum_{i<=t} A[t][i]     (average accuracy along the way)
    BWT = mean_{i<T} (A[T][i] - A[i][i])      (backward transfer; negative = forgetting)
    forgetting = mean_{i<T} (max_{i<=t<T} A[t][i] - A[T][i])
    forward transfer = mean_{i>1} (A[i-1][i] - A[0][i])
"""

from __future__ import annotations

import numpy as np


def _check(A) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1] + 1 or A.shape[1] < 1:
        raise ValueError(f"accuracy matrix must be (T+1, T) with the zero-shot row first, got {A.shape}")
    return A


def mean_fine_tuned(A) -> float:
    A = _check(A)
    T = A.shape[1]
    return float(np.mean([A[i + 1, i] for i in range(T)]))


def mean_final(A) -> float:
    A = _check(A)
    return float(A[-1].mean())


def mean_average_accuracy(A) -> float:
    A = _check(A)
    T = A.shape[1]
    return float(np.mean([A[t, :t].mean() for t in range(1, T + 1)]))


def backward_transfer(A) -> float:
    A = _check(A)
    T = A.shape[1]
    if T < 2:
        return 0.0
    return float(np.mean([A[T, i] - A[i + 1, i] for i in range(T - 1)]))


def forgetting(A) -> float:
    A = _check(A)
    T = A.shape[1]
    if T < 2:
        return 0.0
    return float(np.mean([A[i + 1:T, i].max() - A[T, i] for i in range(T - 1)]))


def forward_transfer(A) -> float:
    A = _check(A)
    T = A.shape[1]
    if T < 2:
        return 0.0
    return float(np.mean([A[i, i] - A[0, i] for i in range(1, T)]))


def learned_tasks(A, learned: float, margin: float) -> list[bool | None]:
    """Per task: whether the score right after training it (A[t+1, t]) is at least `learned`
    and at least `margin` above its zero-shot score (A[0, t]); None when either is unscored."""
    A = _check(A)
    return [None if np.isnan(A[t + 1, t]) or np.isnan(A[0, t]) else
            bool(A[t + 1, t] >= learned and A[t + 1, t] - A[0, t] >= margin) for t in range(A.shape[1])]


def concept_forgetting(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per dataset, score after fine-tuning minus score of the pre-trained model."""
    missing = set(before) ^ set(after)
    if missing:
        raise ValueError(f"concept-forgetting scores name different datasets: {sorted(missing)}")
    return {k: None if before[k] is None or after[k] is None else float(after[k] - before[k]) for k in sorted(before)}


def delta_summary(before: dict, after: dict) -> dict:
    """Concept forgetting with its inputs and its mean over the datasets scored before and after."""
    d = concept_forgetting(before, after)
    scored = [v for v in d.values() if v is not None]
    return {"before": before, "after": after, "delta": d, "mean_delta": float(np.mean(scored)) if scored else None}


def summary(A) -> dict[str, float]:
    """Every sequence metric of the accuracy matrix, by name."""
    return {
        "MFT": mean_fine_tuned(A),
        "MFN": mean_final(A),
        "MAA": mean_average_accuracy(A),
        "BWT": backward_transfer(A),
        "forgetting": forgetting(A),
        "forward_transfer": forward_transfer(A),
    }
