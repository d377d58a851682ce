"""Model families in the continual engine: what differs between CLIP-style dual encoders
(`dual_encoder`) and LLaVA-style MLLMs (`mllm`); the loop itself is `retain.engine`."""

from __future__ import annotations


def run_method(cfg, method_name: str, family: str, resume: bool = False, label: str | None = None) -> dict:
    """Run one method of `cfg` on a model of `family` (see `retain.models` for how it is decided)."""
    if family == "mllm":
        from retain.families.mllm import run_method as run
    else:
        from retain.families.dual_encoder import run_method as run
    return run(cfg, method_name, resume=resume, label=label)
