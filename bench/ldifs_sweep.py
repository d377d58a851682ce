"""Calibrate the quickstart: the fine-tuning ceiling, LDIFS's alpha by normalisation and
learning rate, and the trade-off of every method against concept forgetting.

Every group is one `retain run configs/quickstart.yaml ...` with overrides, into
runs/bench/<group>/ (one run directory per method and swept value). A run finished there
is not recomputed, so the sweep progresses across sessions; results (every run's scores
with their 95% intervals, and each group's wall time) go to bench/results/ldifs_sweep.json.

    .venv/bin/python bench/ldifs_sweep.py                  # every group not yet finished
    .venv/bin/python bench/ldifs_sweep.py ceiling alpha    # some groups
    .venv/bin/python bench/ldifs_sweep.py --table          # only rebuild the json from finished runs

Groups:
- ceiling: plain fine-tuning with 10x the quickstart's steps on all of each task's training
  items; the accuracy each task reaches when trained to convergence.
- budget: plain fine-tuning (no probes) at several step counts and learning rates, and the
  old preset whose one epoch capped a task at 46 and 15 steps: how the quickstart's
  budget was chosen.
- alpha: fine-tuning and LDIFS at alpha 1 .. 10^4 with the reference normalisation (token).
- alpha-channel: LDIFS with the per-token (channel) normalisation at the same alphas.
- alpha-lr: fine-tuning and LDIFS at a third of the quickstart's learning rate.
- tradeoff: L2-SP weights, WiSE-FT mixing ratios, LP-FT and FLYP.

The quickstart's alpha is the rule below applied to the alpha group: the alpha with the
least zero-shot concept forgetting among those whose MFT is at least 98% of fine-tuning's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml
from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "ldifs_sweep.json"
RUNS = ROOT / "runs" / "bench"
ALPHAS = [1, 10, 30, 100, 300, 1000, 10000]
MFT_KEPT = 0.98
RULE = ("the alpha with the least zero-shot concept forgetting among those whose MFT is at least "
        f"{100 * MFT_KEPT:.0f}% of fine-tuning's, on the alpha group")


BUDGET = [(100, 6e-4), (150, 6e-4), (200, 6e-4), (200, 3e-4), (200, 1e-3)]


def groups(quick: dict) -> dict[str, list[tuple[str, list[str]]]]:
    """group -> its commands, each (run name, overrides of configs/quickstart.yaml)."""
    t = quick["train"]
    no_probes = ["methods=[finetune]", "probes=[]", "eval.linear_probe=false"]
    return {
        "alpha": [("alpha", ["methods=[finetune,ldifs]", f"method_args.ldifs.alpha={ALPHAS}"])],
        "ceiling": [("ceiling", ["methods=[finetune]", f"train.max_steps={10 * t['max_steps']}", "train.epochs=1000",
                                 "train.train_limit=0", f"train.warmup_steps={10 * t['warmup_steps']}"])],
        "budget": [("budget-epoch-cap", [*no_probes, "train.epochs=1", "train.max_steps=100", "train.lr=3e-4",
                                        "train.train_limit=3000"])]
                  + [(f"budget-{steps}-steps-lr-{lr:g}", [*no_probes, f"train.max_steps={steps}", f"train.lr={lr:g}"])
                     for steps, lr in BUDGET],
        "alpha-channel": [("alpha-channel", ["methods=[ldifs]", "method_args.ldifs.normalize=channel",
                                             "method_args.ldifs.alpha=[10,100,1000]"])],
        "alpha-lr": [("alpha-lr", [f"train.lr={t['lr'] / 3:g}", "methods=[finetune,ldifs]",
                                   "method_args.ldifs.alpha=[10,30,100]"])],
        "tradeoff": [("tradeoff", ["methods=[l2sp,wise_ft,lp_ft,flyp]", "method_args.l2sp.weight=[0.1,1]",
                                   "method_args.wise_ft.alpha=[0.25,0.75]"])],
    }


def collect(name: str) -> dict:
    """Every finished run of one command: label -> scores with intervals, read from results.json."""
    out = {}
    for res_file in sorted((RUNS / name).glob("*/results.json")):
        res = json.loads(res_file.read_text())
        iv = res.get("intervals", {})
        cf = res.get("concept_forgetting", {})
        civ = iv.get("concept_forgetting", {})
        A = res["accuracy_matrix"]
        out[res.get("label", res["method"])] = {
            "method": res["method"],
            "options": (yaml.safe_load((res_file.parent / "config.yaml").read_text()) or {}).get("method_options", {}),
            "MFT": res["metrics"]["MFT"], "MFT_interval": iv.get("metrics", {}).get("MFT"),
            "MFN": res["metrics"]["MFN"], "MFN_interval": iv.get("metrics", {}).get("MFN"),
            "diagonal": [A[i + 1][i] for i in range(len(res["sequence"]))],
            "diagonal_interval": [iv["accuracy_matrix"][i + 1][i] for i in range(len(res["sequence"]))] if iv else None,
            "sequence": res["sequence"],
            "zs_delta": cf.get("zero_shot", {}).get("mean_delta"),
            "zs_delta_interval": civ.get("zero_shot", {}).get("mean_delta"),
            "lp_delta": cf.get("linear_probe", {}).get("mean_delta"),
            "lp_delta_interval": civ.get("linear_probe", {}).get("mean_delta"),
            "zs_ece_change": res.get("calibration", {}).get("zero_shot", {}).get("mean_delta"),
            "seconds": sum(json.loads((res_file.parent / "state.json").read_text()).get("seconds", [])),
        }
    return out


def _prefixed(group: str, name: str) -> dict:
    """A command's runs, keyed by label (by run name where a group has several commands)."""
    runs = collect(name)
    return runs if name == group else {name: v for v in runs.values()}


def choose_alpha(runs: dict) -> dict | None:
    """The rule: least zero-shot forgetting among alphas keeping MFT >= 98% of fine-tuning's."""
    ft = runs.get("finetune")
    cands = {k: v for k, v in runs.items() if v["method"] == "ldifs"}
    if not ft or not cands:
        return None
    kept = {k: v for k, v in cands.items() if v["MFT"] >= MFT_KEPT * ft["MFT"]}
    if not kept:
        return None
    best = max(kept, key=lambda k: kept[k]["zs_delta"])
    return {"label": best, "alpha": kept[best]["options"].get("alpha"), "rule": RULE}


def main() -> None:
    quick = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    plan = groups(quick)
    wanted = [a for a in sys.argv[1:] if not a.startswith("--")] or ([] if "--table" in sys.argv else list(plan))
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    res.setdefault("wall_s", {})
    for g in wanted:
        if g not in plan:
            raise SystemExit(f"unknown group {g!r}; groups: {', '.join(plan)}")
        for name, overrides in plan[g]:
            if (RUNS / name / "comparison.md").exists() and name in res["wall_s"]:
                print(f"{name}: finished before ({res['wall_s'][name]:.0f} s)")
                continue
            args = ["run", "configs/quickstart.yaml", "method_args={}", *overrides, f"name={name}", f"output_dir={RUNS}"]
            print(f"{g}: retain {' '.join(args)}", flush=True)
            rc, cost, proc = timed_retain(args)
            if rc != 0:
                print(f"{name} failed:\n{proc.stderr[-3000:]}")
                continue
            res["wall_s"][name] = round(cost["wall_s"], 1)
    res.update({"date": time.strftime("%Y-%m-%d"), "config": "configs/quickstart.yaml",
                "commands": {name: " ".join(["retain run configs/quickstart.yaml method_args={}", *o, f"name={name}"])
                             for cmds in plan.values() for name, o in cmds},
                "quickstart_train": quick["train"], "quickstart_eval": quick["eval"],
                "groups": {g: {k: v for name, _ in cmds if (RUNS / name).exists() for k, v in _prefixed(g, name).items()}
                           for g, cmds in plan.items()}})
    res["chosen_alpha"] = choose_alpha(res["groups"].get("alpha", {}))
    from retain.registry import build_info

    build = build_info("mini-clip")  # which build the runs used (its weights' hash)
    if build:
        res["zoo_build"] = build
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({g: {k: (v["MFT"], v["zs_delta"]) for k, v in runs.items()} for g, runs in res["groups"].items()},
                     indent=1))
    print("chosen alpha:", res["chosen_alpha"])


if __name__ == "__main__":
    main()
