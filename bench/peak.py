"""The machine's matrix-multiply peak, and the FLOPs of one step, for "share of peak" columns.

A throughput benchmark calls `machine_peak()` in its own process, next to what it times,
so that both see the same threads, clocks and neighbours: the peak is the best of several
square matrix products (n = 2048: large enough to reach the kernels' steady state, small
enough to take a second) in float32, and in bfloat16 where the CPU build multiplies it
(it is reported whatever its speed: on a CPU without native bf16, such as this project's
AMD EPYC machines, it is about 100 times slower than float32 and measured on n = 512 only,
and the share is then taken against float32's). `count_flops(fn)` runs `fn` once
under torch's FLOP counter (matrix products, convolutions and attention, forward and
backward: what the counter knows, not element-wise work), so a share is
(counted FLOPs per step / measured seconds per step) / peak.

    .venv/bin/python bench/peak.py        # prints this machine's peaks
"""

from __future__ import annotations

import json
import time

import torch

SIZE, REPEATS = 2048, 8
BF16_SIZE = 512  # where the CPU has no bf16 instructions a 2048 product takes half a minute; 512 shows the rate


def matmul_flops_per_s(dtype: torch.dtype, n: int = SIZE, repeats: int = REPEATS, budget_s: float = 20.0
                       ) -> float | None:
    """Best FLOP/s of an n x n x n product in `dtype` (2 n^3 FLOPs each); None when unsupported.
    Stops repeating once `budget_s` is spent (an emulated bf16 product can take seconds)."""
    g = torch.Generator().manual_seed(0)
    try:
        a = torch.randn(n, n, generator=g).to(dtype)
        b = torch.randn(n, n, generator=g).to(dtype)
        a @ b  # warm-up: thread pool, kernel choice
    except RuntimeError:
        return None
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return 2 * n**3 / best


def machine_peak() -> dict:
    """{"float32": FLOP/s, "bfloat16": FLOP/s or None, "threads": n}: measured now, in this process."""
    return {"float32": matmul_flops_per_s(torch.float32), "bfloat16": matmul_flops_per_s(torch.bfloat16, BF16_SIZE),
            "threads": torch.get_num_threads(), "size": {"float32": SIZE, "bfloat16": BF16_SIZE}}


def count_flops(fn) -> int:
    """FLOPs that torch's counter sees while `fn()` runs (forward and backward, if `fn` does both)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def share_of_peak(flops: float, seconds: float, peak: dict, dtype: str = "float32") -> float:
    """(flops / seconds) over the better of `dtype`'s peak and float32's (a slow bf16 path is not the ceiling)."""
    best = max(v for v in (peak.get(dtype), peak["float32"]) if v)
    return flops / seconds / best


if __name__ == "__main__":
    p = machine_peak()
    print(json.dumps({k: (round(v / 1e9, 1) if isinstance(v, float) else v) for k, v in p.items()}) + "  (GFLOP/s)")
