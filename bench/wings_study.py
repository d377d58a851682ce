"""WINGS's study on mini-LLaVA (configs/wings-study.yaml): build mini-llava-wings when it is
not cached (its build time and peak memory are kept), run the study (finished measurements
in runs/wings-study are reused) and keep its table and attention profiles in
bench/results/wings_study.json; bench/run_all.py --summary writes docs/wings.md.

    .venv/bin/python bench/wings_study.py
"""

from __future__ import annotations

import json
from pathlib import Path

from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "wings_study.json"
def timed(args: list[str]) -> dict:
    rc, cost, proc = timed_retain(["--quiet", *args])
    if rc != 0:
        raise SystemExit(f"retain {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return cost


def main() -> None:
    from retain.registry import zoo_folder

    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    if not (zoo_folder("mini-llava-wings", build=False) / "DONE").exists():
        res["build"] = {**timed(["zoo", "build", "mini-llava-wings"]), "command": "retain zoo build mini-llava-wings"}
        print("build", res["build"], flush=True)
    res["study_run"] = {**timed(["study", "configs/wings-study.yaml"]), "command": "retain study configs/wings-study.yaml"}
    study = json.loads((ROOT / "runs" / "wings-study" / "study.json").read_text())
    res.update({"table": study["table"], "models": study["models"], "reference": study["reference"],
                "order": study["order"], "evidence": study["evidence"],
                "attention": {k: v["attention"] for k, v in study["results"].items() if v["attention"]},
                "text_by_kind": {k: v["text_by_kind"] for k, v in study["results"].items()},
                "interleaved": {k: v["interleaved"] for k, v in study["results"].items()}})
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["table"], indent=1))


if __name__ == "__main__":
    main()
