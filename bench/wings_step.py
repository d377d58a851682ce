"""Step time of a WINGS stage-2 step against a plain LoRA step on the same batch, and memory.

mini-LLaVA, one batch of BATCH vqa-shapes training items (the same batch every step), a
full training step each: forward, answer-only loss, backward, gradient clipping, AdamW.

- lora: LoRA r 16 on the LLM's attention and MLP projections + the projector (`lora_ft`);
- wings-r16 / wings-r64: WINGS stage 2 (visual and textual learners, routers, projector
  and the whole LLM), learner rank 16 (the zoo's mini-llava-wings) and 64 (the paper's).

Each arm runs in its own process (so its peak memory is its own), arms alternate, REPEATS
times; the step time is the median over STEPS timed steps after WARMUP untimed ones.
Results: bench/results/wings_step.json.

    .venv/bin/python bench/wings_step.py
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
STEPS, WARMUP, BATCH, REPEATS, LR = 8, 2, 8, 2, 2e-4
ARMS = ("lora", "wings-r16", "wings-r64")


def child(arm: str) -> dict:
    import torch

    from retain.data.instruct import load_instruction_task
    from retain.methods import create_method
    from retain.registry import load_mllm

    torch.manual_seed(0)
    mllm = load_mllm("mini-llava")
    if arm == "lora":
        method = create_method("lora_ft", family="mllm")
    else:
        method = create_method("wings", {"stage": 2, "rank": int(arm.split("-r")[1])}, family="mllm")
    method.setup(mllm)
    params = list(method.trainable(mllm))
    trainable = {id(p) for p in params}
    for p in mllm.parameters():
        p.requires_grad_(id(p) in trainable)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    split = load_instruction_task("vqa-shapes").split("train")
    batch = mllm.training_batch(split.images[:BATCH], split.questions[:BATCH], split.answers[:BATCH])
    mllm.model.train()
    times = []
    for step in range(STEPS + WARMUP):
        start = time.perf_counter()
        loss = mllm.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
    return {"median_step_s": statistics.median(times), "steps_s": times,
            "trainable_params": sum(p.numel() for p in params), "tokens": int(batch["attention_mask"].sum()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    import torch

    runs = {arm: [] for arm in ARMS}
    for _ in range(REPEATS):
        for arm in ARMS:
            out = subprocess.run([sys.executable, __file__, arm], capture_output=True, text=True,
                                 env={**os.environ, "RETAIN_QUIET": "1"})
            if out.returncode:
                raise SystemExit(f"{arm} failed:\n{out.stderr[-3000:]}")
            res = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
            runs[arm].append(res)
            print(arm, f"{res['median_step_s']:.3f} s/step, {res['peak_rss_mb']:.0f} MB", flush=True)
    step = {arm: min(r["median_step_s"] for r in rs) for arm, rs in runs.items()}
    summary = {"steps": STEPS, "warmup_steps": WARMUP, "batch": BATCH, "repeats": REPEATS, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "runs": runs, "step_s": step,
               "ratio_to_lora": {arm: step[arm] / step["lora"] for arm in ARMS},
               "peak_rss_mb": {arm: max(r["peak_rss_mb"] for r in rs) for arm, rs in runs.items()},
               "trainable_params": {arm: rs[0]["trainable_params"] for arm, rs in runs.items()},
               "tokens_per_batch": runs["lora"][0]["tokens"]}
    OUT.mkdir(exist_ok=True)
    (OUT / "wings_step.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("step_s", "ratio_to_lora", "peak_rss_mb")}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print("RESULT " + json.dumps(child(sys.argv[1])))
    else:
        main()
