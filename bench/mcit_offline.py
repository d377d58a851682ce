"""Every MCIT method on the offline benchmark with mini-LLaVA: the table, and each run's
wall time and peak memory (budget: under 15 minutes per method on 2 CPU cores).

Each method runs in its own process (`retain run configs/mcit-offline.yaml methods=[m]`)
into runs/mcit-offline/<method>/, so a method already finished there is not recomputed
(its time is kept from the first measurement). Results: bench/results/mcit_offline.json,
the comparison table in docs/mcit.md (via bench/run_all.py --summary).

    .venv/bin/python bench/mcit_offline.py                    # every method of the preset
    .venv/bin/python bench/mcit_offline.py lora_ft olora      # some
    .venv/bin/python bench/mcit_offline.py --table            # only rebuild the table from finished runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "mcit_offline.json"
def main() -> None:
    from retain.config import load_config
    cfg = load_config(ROOT / "configs" / "mcit-offline.yaml")
    methods = [a for a in sys.argv[1:] if not a.startswith("--")] or ([] if "--table" in sys.argv else cfg.methods)
    res = json.loads(OUT.read_text()) if OUT.exists() else {"runs": {}}
    for m in methods:
        run = ROOT / "runs" / cfg.name / m
        if (run / "results.json").exists() and m in res["runs"]:
            print(f"{m}: finished before ({res['runs'][m]['wall_s']:.0f} s)")
            continue
        rc, cost, proc = timed_retain(["--quiet", "run", "configs/mcit-offline.yaml", f"methods=[{m}]"])
        if rc != 0:
            print(f"{m} failed:\n{proc.stderr[-3000:]}")
            continue
        res["runs"][m] = cost
        print(m, json.dumps(res["runs"][m]))
        write(res, cfg)
    if "--table" in sys.argv:  # only rebuild the table and matrices from the finished runs
        write(res, cfg)
    print(res.get("table", ""))


def write(res: dict, cfg) -> None:
    from retain.report import comparison_rows, format_table

    finished = [ROOT / "runs" / cfg.name / k for k in res["runs"] if (ROOT / "runs" / cfg.name / k / "results.json").exists()]
    header, rows = comparison_rows(finished)
    res.update({"command": "retain run configs/mcit-offline.yaml methods=[<method>]", "sequence": cfg.sequence,
                "train": vars(cfg.train), "eval_limit": cfg.eval.limit, "table": format_table(header, rows),
                "matrices": {r.name: json.loads((r / "results.json").read_text())["accuracy_matrix"] for r in finished}})
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
