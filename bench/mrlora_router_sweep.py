"""MR-LoRA's router learning rate on mini-LLaVA, chosen by a sweep retain reruns.

The reference (bjzhb666/MLLM-CL) trains its router, a rank-128 LoRA of LLaVA-1.5-7B, at lr
5e-6 for 40 epochs over 20 items per task. That rate belongs to a 7B model whose LoRA
updates are scaled for its width; on mini-LLaVA (SmolLM2-135M) it may not move the router
at all. The router's accuracy does not depend on the experts: it is the same MLLM with the
router adapter on, asked which task an item belongs to. So for each candidate rate this
trains the router exactly as `mrlora` does after the last task (`MRLoRA.train_router` on
`router_samples` training items of each task of the preset's sequence, seed 0) and scores
`MRLoRA.select` on the preset's test items of every task: the share routed to their own
task, with a 95% bootstrap interval over items.

The rule: the smallest rate whose routing accuracy is within 2 points of the best
candidate's (a larger rate than needed risks a router that overfits its 20 items per task);
configs/mcit-offline.yaml carries it as `method_args.mrlora.router_lr`. Results go to
bench/results/mrlora_router.json, rewritten after every candidate; a finished candidate is
skipped.

    .venv/bin/python bench/mrlora_router_sweep.py            # every candidate
    .venv/bin/python bench/mrlora_router_sweep.py --table    # only rebuild the choice
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "mrlora_router.json"
CONFIG = ROOT / "configs" / "mcit-offline.yaml"
CANDIDATES = [5e-6, 1e-4, 1e-3]  # the reference's, then up by decades to the preset's expert rate
TEST_ITEMS = 100  # per task: 400 routed items, +-5 points at 50%
WITHIN = 0.02


def route(lr: float, model: str | None = None, test_items: int = TEST_ITEMS) -> dict:
    import torch
    import transformers

    from retain.config import load_config
    from retain.data.instruct import load_instruction_task
    from retain.eval.emt import EMT_TEMPLATE
    from retain.methods import create_method
    from retain.registry import build_info, load_mllm
    from retain.stats import percentile_interval, resample_means

    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    tasks = [load_instruction_task(s, cfg.eval.emt_template or EMT_TEMPLATE) for s in cfg.sequence]
    mllm = load_mllm(model or cfg.model)
    method = create_method("mrlora", {**(cfg.method_args.get("mrlora") or {}), "router_lr": lr}, family="mllm")
    method.setup(mllm)
    method.names = [t.name for t in tasks]
    method.splits = [t.split("train") for t in tasks]
    g = torch.Generator().manual_seed(0)
    for k, split in enumerate(method.splits):
        n = min(method.opts.router_samples, len(split))
        method.samples[k] = torch.randperm(len(split), generator=g)[:n].sort().values
    start = time.time()
    method.train_router(len(tasks), cfg.train.batch_size, seed=cfg.seed)
    train_s = time.time() - start
    method.routable = len(tasks)
    hits, per_task = [], {}
    for k, task in enumerate(tasks):
        test = task.split("test").subset(test_items, seed=0)
        picked = method.select(list(test.images), list(test.questions))
        got = [int(p == k) for p in picked]
        per_task[task.name] = float(np.mean(got))
        hits += got
    lo, hi = percentile_interval(resample_means({"routing": np.asarray(hits, dtype=float)})["routing"][:, 0])
    return {"router_lr": lr, "accuracy": float(np.mean(hits)), "interval": [float(lo), float(hi)],
            "per_task": per_task, "items": len(hits), "train_s": round(train_s, 1),
            "options": {k: v for k, v in vars(method.opts).items()}, "seed": cfg.seed,
            "model": model or cfg.model, "zoo_build": build_info(model or cfg.model),
            "torch": torch.__version__, "transformers": transformers.__version__}


def choose(res: dict) -> None:
    done = sorted(res["runs"].values(), key=lambda r: r["router_lr"])
    if len(done) < len(CANDIDATES):
        res.pop("chosen", None)
        return
    best = max(r["accuracy"] for r in done)
    chosen = next(r for r in done if r["accuracy"] >= best - WITHIN)
    res["chosen"] = {"router_lr": chosen["router_lr"], "accuracy": chosen["accuracy"], "best": best,
                     "rule": f"the smallest rate within {100 * WITHIN:g} points of the best routing accuracy"}


def main() -> None:
    if "--smoke" in sys.argv:  # the script's own check on a model folder: --smoke FOLDER (nothing written)
        print(json.dumps(route(1e-3, model=sys.argv[sys.argv.index("--smoke") + 1], test_items=4)))
        return
    res = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
    for lr in [] if "--table" in sys.argv else CANDIDATES:
        key = f"{lr:g}"
        if key in res["runs"]:
            print(f"router_lr {key}: finished before")
            continue
        res["runs"][key] = route(lr)
        choose(res)
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(res, indent=1) + "\n")
        r = res["runs"][key]
        print(f"router_lr {key}: routing accuracy {100 * r['accuracy']:.1f} "
              f"[{100 * r['interval'][0]:.1f}, {100 * r['interval'][1]:.1f}] ({r['train_s']:.0f} s to train)")
    choose(res)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res.get("chosen"), indent=1))


if __name__ == "__main__":
    main()
