"""EMT's fine-tuning study on mini-LLaVA (configs/emt-study.yaml): run it (a finished run in
runs/emt-study is reused) and keep its evaluation curves, counts of failure types and
wall time in bench/results/emt_study.json; bench/run_all.py --summary writes docs/emt.md.

    .venv/bin/python bench/emt_study.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "emt_study.json"


def main() -> None:
    from retain.config import load_config

    cfg = load_config(ROOT / "configs" / "emt-study.yaml")
    start = time.time()
    subprocess.run([sys.executable, "-m", "retain", "--quiet", "run", "configs/emt-study.yaml"], cwd=ROOT, check=True)
    res = {"command": "retain run configs/emt-study.yaml", "train": vars(cfg.train), "eval_limit": cfg.eval.limit,
           "emt_mode": cfg.eval.emt_mode, "sequence": cfg.sequence, "methods": {}}
    for m in cfg.methods:
        run = ROOT / "runs" / cfg.name / m
        r = json.loads((run / "results.json").read_text())
        state = json.loads((run / "state.json").read_text())
        res["methods"][m] = {"curve": r["evaluation"]["curve"], "task_seconds": state["seconds"]}
        res["encoder_zero_shot"] = r["evaluation"]["encoder_zero_shot"]
        res["encoder"] = r["evaluation"]["encoder"]
    res["wall_s_this_call"] = time.time() - start
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({m: [p["accuracy"] for p in v["curve"]] for m, v in res["methods"].items()}, indent=1))


if __name__ == "__main__":
    main()
