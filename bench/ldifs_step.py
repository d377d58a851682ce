"""LDIFS step time over plain fine-tuning step time on the same batch, and zero-shot throughput.

Both steps run retain's own training step (forward, method loss, backward, AdamW) on a
model with mini-CLIP's architecture, batch 128 of Animal-MNIST. LDIFS is timed with the
frozen features cached (retain's default) and with the frozen tower run every step (the
reference code's way). Each variant's share of the machine's float32 matmul peak (measured in
this process before and after the timed steps, bench/peak.py) is its counted FLOPs per step
(torch's FLOP counter over one step) over its median step time. Results go to
bench/results/ldifs_step.json.

    .venv/bin/python bench/ldifs_step.py
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from retain.data import load_task
from retain.eval.classification import image_features
from retain.methods import create_method
from retain.methods.base import TaskContext
from retain.registry import load_dual_encoder
from retain.models.classifier import ImageClassifier
from retain.families.dual_encoder import step_loss

from peak import count_flops, machine_peak

OUT = Path(__file__).parent / "results"
BATCH, WARMUP, REPEATS = 128, 3, 25


def make_step(model, method, ctx, batch):
    opt = torch.optim.AdamW(method.trainable(model), lr=1e-5, weight_decay=0.1)

    def step() -> float:
        t = time.perf_counter()
        loss = step_loss(model, method, dict(batch), ctx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    return step


def main() -> None:
    torch.manual_seed(0)
    task = load_task("animal-mnist")
    split = task.split("train").subset(2048)
    results = {"batch": BATCH, "repeats": REPEATS, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.machine(), "python": sys.version.split()[0]}
    peak = machine_peak()
    steps, setup = {}, {}
    for variant in ("finetune", "ldifs", "ldifs_nocache"):
        enc = load_dual_encoder("mini-clip")
        model = ImageClassifier(enc, [task]).train()
        method = create_method("ldifs", {"cache_frozen": False}) if variant == "ldifs_nocache" else create_method(variant)
        method.setup(model)
        ctx = TaskContext(task=task, index=0, train=split, model=model, tasks=[task], train_splits=[split],
                          device=torch.device("cpu"), seed=0, batch_size=256)
        t0 = time.perf_counter()
        method.before_task(ctx)
        setup[variant] = time.perf_counter() - t0
        batch = {"index": torch.arange(BATCH), "pixel_values": enc.preprocess(split.images[:BATCH]),
                 "labels": torch.from_numpy(split.labels[:BATCH]).long(), "heads": [task.name] * BATCH}
        steps[variant] = make_step(model, method, ctx, batch)
    times = {v: [] for v in steps}
    for i in range(WARMUP + REPEATS):  # interleaved, so drift on a shared machine hits all alike
        for v, step in steps.items():
            t = step()
            if i >= WARMUP:
                times[v].append(t)
    peak["float32"] = max(peak["float32"], machine_peak()["float32"])
    results["peak"] = peak
    for v, ts in times.items():
        flops = count_flops(steps[v])
        results[v] = {"median_step_s": statistics.median(ts), "min_step_s": min(ts), "max_step_s": max(ts),
                      "before_task_s": setup[v], "flops_per_step": flops,
                      "share_of_peak": flops / statistics.median(ts) / peak["float32"]}
        print(f"{v}: median step {statistics.median(ts):.3f} s")
    ft = results["finetune"]["median_step_s"]
    # The cache is filled on an item's first step (the cost of running the frozen tower,
    # as without the cache) and read on every later epoch.
    results["ratio_ldifs_first_epoch"] = results["ldifs_nocache"]["median_step_s"] / ft
    results["ratio_ldifs_later_epochs"] = results["ldifs"]["median_step_s"] / ft
    for epochs in (1, 3, 10):
        results[f"ratio_ldifs_over_finetune_{epochs}_epochs"] = (
            results["ratio_ldifs_first_epoch"] + (epochs - 1) * results["ratio_ldifs_later_epochs"]) / epochs

    enc = load_dual_encoder("mini-clip")
    test = load_task("fashion-mnist").split("test").subset(5000)
    image_features(enc, test.subset(256))
    t = time.perf_counter()
    image_features(enc, test)
    results["zero_shot_images_per_s"] = len(test) / (time.perf_counter() - t)
    print(json.dumps({k: v for k, v in results.items() if k.startswith(("ratio", "zero"))}, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / "ldifs_step.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
