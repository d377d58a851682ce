"""LDIFS step time over plain fine-tuning step time on the same batch, and zero-shot throughput.

Both steps run retain's own training step (forward, method loss, backward, AdamW) on a
model with mini-CLIP's architecture, batch 128 of Animal-MNIST. LDIFS is timed with the
frozen features cached (retain's default) and with the frozen tower run every step (the
reference code's way). Results go to bench/results/ldifs_step.json.

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
from retain.models import load_dual_encoder
from retain.models.classifier import ImageClassifier
from retain.train import step_loss

OUT = Path(__file__).parent / "results"
BATCH, WARMUP, REPEATS = 128, 3, 15


def time_steps(model, method, ctx, batch) -> list[float]:
    params = method.trainable(model)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1)
    times = []
    for i in range(WARMUP + REPEATS):
        t = time.perf_counter()
        loss = step_loss(model, method, dict(batch), ctx)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= WARMUP:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    torch.manual_seed(0)
    task = load_task("animal-mnist")
    split = task.split("train").subset(2048)
    results = {"batch": BATCH, "repeats": REPEATS, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.machine(), "python": sys.version.split()[0]}
    for variant in ("finetune", "ldifs", "ldifs_nocache"):
        enc = load_dual_encoder("mini-clip")
        model = ImageClassifier(enc, [task]).train()
        method = create_method("ldifs", {"cache_frozen": False}) if variant == "ldifs_nocache" else create_method(variant)
        method.setup(model)
        ctx = TaskContext(task=task, index=0, train=split, model=model, tasks=[task], train_splits=[split],
                          device=torch.device("cpu"), seed=0, batch_size=256)
        t0 = time.perf_counter()
        method.before_task(ctx)
        setup_s = time.perf_counter() - t0
        idx = torch.arange(BATCH)
        batch = {"index": idx, "pixel_values": enc.preprocess(split.images[:BATCH]),
                 "labels": torch.from_numpy(split.labels[:BATCH]).long(), "heads": [task.name] * BATCH}
        times = time_steps(model, method, ctx, batch)
        results[variant] = {"median_step_s": statistics.median(times), "min_step_s": min(times),
                            "max_step_s": max(times), "before_task_s": setup_s, "cached_items": len(split)}
        print(f"{variant}: median step {statistics.median(times):.3f} s (before_task {setup_s:.2f} s)")
    ft = results["finetune"]["median_step_s"]
    results["ratio_ldifs_over_finetune"] = results["ldifs"]["median_step_s"] / ft
    results["ratio_ldifs_nocache_over_finetune"] = results["ldifs_nocache"]["median_step_s"] / ft
    # Cache building amortised over one epoch of this split:
    steps = len(split) // BATCH
    results["ratio_ldifs_amortised_epoch"] = (results["ldifs"]["median_step_s"] * steps + results["ldifs"]["before_task_s"]) / (ft * steps)

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
