"""The MCIT offline benchmark's training budget, chosen by a sweep retain reruns.

MCITlib trains LLaVA-1.5-7B for one epoch per task at lr 2e-4 on tens of thousands of
items; mini-LLaVA on 2 CPU cores gets a few hundred steps. Which budget makes the
benchmark's tasks learned? For each candidate (lr, optimizer steps per task, batch size)
and each task of the preset's sequence, this trains LoRA-FT on that task alone (seed 0)
and scores the task's preset test items before and after. The rule: the cheapest candidate
(fewest items seen per task, then least time) under which every task reaches at least
50% and at least 30 points above zero-shot; configs/mcit-offline.yaml carries it, and
bench/mcit_offline.py checks the same bar inside the sequence, for every seed.

Each (candidate, task) runs into runs/mcit-calibrate/<candidate>/<task>/lora_ft/; its two
scores and time go into bench/results/mcit_calibration.json (committed; runs/ is not),
rewritten after every run, and a (candidate, task) found there is skipped (one stopped
part-way continues with --resume where runs/ survived).

    .venv/bin/python bench/mcit_calibrate.py                       # every candidate
    .venv/bin/python bench/mcit_calibrate.py lr0.002-steps80-batch8 # one
    .venv/bin/python bench/mcit_calibrate.py --table                # only rebuild the summary
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mcit_offline import LEARNED, MARGIN
from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "mcit_calibration.json"
CONFIG = "configs/mcit-offline.yaml"
NAME = "mcit-calibrate"
# (lr, optimizer steps per task, batch size); the preset before this sweep: lr 2e-4, 10 steps of 16
CANDIDATES = [(2e-3, 80, 8), (1e-3, 80, 16), (1e-3, 160, 16)]


def label(lr: float, steps: int, batch: int) -> str:
    return f"lr{lr:g}-steps{steps}-batch{batch}"


def main() -> None:
    from retain.config import load_config

    sequence = [str(t) for t in load_config(ROOT / CONFIG).sequence]
    res = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
    wanted = [a for a in sys.argv[1:] if not a.startswith("--")]
    todo = [] if "--table" in sys.argv else [c for c in CANDIDATES if not wanted or label(*c) in wanted]
    for lr, steps, batch in todo:
        for task in sequence:
            key = f"{label(lr, steps, batch)}/{task}"
            run = ROOT / "runs" / NAME / key / "lora_ft"
            if key in res["runs"]:
                print(f"{key}: finished before")
                continue
            resume = ["--resume"] if (run / "state.json").exists() else []
            rc, cost, proc = timed_retain(["--quiet", "run", CONFIG, "methods=[lora_ft]", "seeds=[]", "seed=0",
                                           f"sequence=[{task}]", f"output_dir=runs/{NAME}/{label(lr, steps, batch)}",
                                           f"name={task}", f"train.lr={lr}", f"train.max_steps={steps}",
                                           "train.epochs=1000", "train.train_limit=0", f"train.batch_size={batch}",
                                           *resume])
            if rc != 0:
                print(f"{key} failed:\n{proc.stderr[-3000:]}")
                continue
            res = json.loads(OUT.read_text()) if OUT.exists() else res  # another process may have added runs
            res["runs"][key] = {"lr": lr, "steps": steps, "batch_size": batch, "task": task, **cost,
                                **scores(run / "results.json")}  # kept here: runs/ is not committed
            summarise(res, sequence)
            print(key, json.dumps(res["summary"]["candidates"].get(label(lr, steps, batch))))
    summarise(res, sequence)
    print(json.dumps(res.get("summary"), indent=2))


def scores(results_json: Path) -> dict:
    """A one-task run's score before and after training, each with its 95% interval
    (bootstrap over the test items), and whether the bar holds."""
    from retain.metrics import learned_tasks

    res = json.loads(results_json.read_text())
    A, iv = res["accuracy_matrix"], res["intervals"]["accuracy_matrix"]
    return {"after_training": A[1][0], "zero_shot": A[0][0], "after_training_interval": iv[1][0],
            "zero_shot_interval": iv[0][0],
            "meets_bar": bool(learned_tasks(np.asarray(A, dtype=float), LEARNED, MARGIN)[0])}


def summarise(res: dict, sequence: list[str]) -> None:
    cands: dict[str, dict] = {}
    for key, r in res["runs"].items():
        if "after_training_interval" not in r:  # recorded before the intervals were kept in this file
            path = ROOT / "runs" / NAME / key / "lora_ft" / "results.json"
            if not path.exists():
                continue
            r.update(scores(path))
        c = cands.setdefault(key.split("/")[0], {"lr": r["lr"], "steps": r["steps"], "batch_size": r["batch_size"],
                                                 "items_per_task": r["steps"] * r["batch_size"], "wall_s": 0.0,
                                                 "tasks": {}})
        c["wall_s"] += r["wall_s"]
        c["tasks"][r["task"]] = {k: r[k] for k in ("after_training", "zero_shot", "after_training_interval",
                                                   "zero_shot_interval", "meets_bar")}
    for c in cands.values():
        c["complete"] = set(c["tasks"]) == set(sequence)
        c["meets_bar"] = c["complete"] and all(t["meets_bar"] for t in c["tasks"].values())
    passing = sorted((k for k, c in cands.items() if c["meets_bar"]),
                     key=lambda k: (cands[k]["items_per_task"], cands[k]["wall_s"]))
    res["summary"] = {"bar": {"learned": LEARNED, "margin": MARGIN}, "sequence": sequence, "candidates": cands,
                      "chosen": passing[0] if passing else None}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
