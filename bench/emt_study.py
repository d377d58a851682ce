"""EMT's fine-tuning study on mini-LLaVA (configs/emt-study.yaml), one method at a time: each
finished method's evaluation curve with 95% intervals, counts of failure types and wall
time go into bench/results/emt_study.json at once, and a method found there is not run
again (a run stopped part-way resumes from runs/emt-study where that survived);
bench/run_all.py --summary writes docs/emt.md.

Intervals: each point's accuracy on each dataset by bootstrap over its test images; the
paper's claim (early fine-tuning helps the other datasets, later hurts) is read from the
mean over the held-out datasets (every dataset but the fine-tuned one) minus its zero-shot
value, with a paired interval: both points scored on the same images, drawn together.

    .venv/bin/python bench/emt_study.py            # every method of the preset
    .venv/bin/python bench/emt_study.py adapter    # one
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "emt_study.json"


def main() -> None:
    from retain.config import load_config

    cfg = load_config(ROOT / "configs" / "emt-study.yaml")
    setting = {"command": "retain run configs/emt-study.yaml", "train": vars(cfg.train), "eval_limit": cfg.eval.limit,
               "every_steps": cfg.eval.every_steps, "emt_mode": cfg.eval.emt_mode, "sequence": cfg.sequence}
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    if any(res.get(k) != v for k, v in setting.items()):  # another setting: start the record afresh
        res = {**setting, "methods": {}}
    wanted = sys.argv[1:] or cfg.methods
    for m in [m for m in cfg.methods if m in wanted]:  # one at a time, kept here once finished (runs/ is not committed)
        if m in res["methods"]:
            print(f"{m}: finished before")
            continue
        run = ROOT / "runs" / cfg.name / m
        start = time.time()
        resume = ["--resume"] if (run / "state.json").exists() else []
        subprocess.run([sys.executable, "-m", "retain", "--quiet", "run", "configs/emt-study.yaml", f"methods=[{m}]",
                        *resume], cwd=ROOT, check=True)
        r = json.loads((run / "results.json").read_text())
        state = json.loads((run / "state.json").read_text())
        curve = r["evaluation"]["curve"]
        res["methods"][m] = {"curve": curve, "task_seconds": state["seconds"], "wall_s_this_call": time.time() - start,
                             "evidence": curve_evidence(run, curve, cfg.sequence[0])}
        res["encoder_zero_shot"] = r["evaluation"]["encoder_zero_shot"]
        res["encoder"] = r["evaluation"]["encoder"]
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({m: [p["accuracy"] for p in v["curve"]] for m, v in res["methods"].items()}, indent=1))


def records_name(point: dict, trained: str) -> str:
    """The records file of a curve point: row-0 (zero-shot), row-1 (after the task), or the
    point inside the task (task-1-step-<s> / task-1-epoch-<e>)."""
    if point["task_index"] < 0:
        return "row-0"
    if point["label"].startswith("after "):
        return f"row-{point['task_index'] + 1}"
    return f"task-{point['task_index'] + 1}-" + point["label"][len(trained) + 1:].replace(" ", "-")


def curve_evidence(run: Path, curve: list[dict], trained: str) -> list[dict]:
    """Per point: each dataset's accuracy interval, and the held-out mean's change from
    zero-shot with its paired 95% interval (bootstrap over the images, both points drawn together)."""
    from retain import stats
    from retain.intervals import item_score, read_records

    def scores(point) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        by: dict[str, list] = {}
        for rec in read_records(run, records_name(point, trained)):
            by.setdefault(rec["task"], []).append((rec["index"], item_score(rec)))
        return {d: tuple(np.asarray(v, dtype=float).T[k] for k in (0, 1)) for d, v in
                ((d, sorted(v)) for d, v in by.items())}

    zero = scores(curve[0])
    held_out = [d for d in zero if d != trained]
    out = []
    for point in curve:
        now = scores(point)
        for d in zero:
            if not np.array_equal(now[d][0], zero[d][0]):
                raise SystemExit(f"{run}: point {point['label']!r} scored other {d} images than zero-shot")
        draws = stats.resample_means({d: np.stack([now[d][1], zero[d][1]]) for d in zero})  # (R, 2) per dataset
        change = np.mean([draws[d][:, 0] - draws[d][:, 1] for d in held_out], axis=0)
        point_change = float(np.mean([np.nanmean(now[d][1]) - np.nanmean(zero[d][1]) for d in held_out]))
        out.append({"label": point["label"], "step": point.get("step"), "epoch": point["epoch"],
                    "accuracy_interval": {d: stats.percentile_interval(draws[d][:, 0]) for d in zero},
                    "held_out_change": point_change, "held_out_change_interval": stats.percentile_interval(change),
                    "held_out": held_out})
    return out


if __name__ == "__main__":
    main()
