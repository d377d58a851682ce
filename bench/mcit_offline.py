"""Every MCIT method on the offline benchmark with mini-LLaVA, over the preset's seeds: the
table with 95% intervals, paired differences against LoRA-FT, the learnability bar, the
ranking of methods by MAA per seed and its stability, and each run's wall time and peak memory.

Each (method, seed) runs in its own process (`retain run configs/mcit-offline.yaml
methods=[m] seeds=[s]`) into runs/mcit-offline/<method>/seed-<s>/; once finished, its
results.json, config.yaml and per-item records are kept under
bench/results/mcit_offline_runs/<method>/seed-<s>/ (committed: runs/ is not), and the
tables are built from there. The benchmark is resumable at two levels: a kept run is
skipped (its time kept from the first measurement), and a run stopped part-way (the
session ended, the machine was killed) continues from its last finished task with
`--resume` where runs/ survived. bench/results/mcit_offline.json is rewritten after every
run, so a benchmark stopped part-way keeps everything it finished.

    .venv/bin/python bench/mcit_offline.py                    # every method x seed of the preset
    .venv/bin/python bench/mcit_offline.py lora_ft olora      # some methods, every seed
    .venv/bin/python bench/mcit_offline.py --seeds 0          # every method, one seed
    .venv/bin/python bench/mcit_offline.py --table            # only rebuild the tables from finished runs
    .venv/bin/python bench/mcit_offline.py --budget 7200      # stop starting new runs after 2 hours

Before any run starts, the zoo build cached here must be the one the kept runs started from
(a rebuild on another CPU can differ, and runs from different builds are not paired); where
it is not, the benchmark stops and says so (`--any-build` runs anyway).

Order: seed by seed, so that every method has a first seed before any has a third.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "mcit_offline.json"
KEPT = ROOT / "bench" / "results" / "mcit_offline_runs"
CONFIG_NAME = "configs/mcit-offline.yaml"
CONFIG = ROOT / CONFIG_NAME
BASELINE = "lora_ft"
# The bar: LoRA-FT right after training each task reaches LEARNED and gains MARGIN over zero-shot.
LEARNED, MARGIN = 0.5, 0.3


def main() -> None:
    from retain.config import load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("methods", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="*")
    ap.add_argument("--table", action="store_true", help="only rebuild the tables from finished runs")
    ap.add_argument("--budget", type=float, default=0, help="seconds after which no new run starts (0: none)")
    ap.add_argument("--any-build", action="store_true",
                    help="run even where the model's build differs from the kept runs' (they will not be paired)")
    args = ap.parse_args()
    cfg = load_config(CONFIG)
    methods = args.methods or cfg.methods
    seeds = cfg.seeds if args.seeds is None else args.seeds
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    res.setdefault("runs", {})
    if not args.table and not args.any_build:
        refused = build_mismatch(cfg.model)
        if refused:
            raise SystemExit(refused)
    start = time.time()
    for seed, m in ([] if args.table else itertools.product(seeds, methods)):
        key, run = f"{m}/seed-{seed}", ROOT / "runs" / cfg.name / m / f"seed-{seed}"
        if (KEPT / key / "results.json").exists() and key in res["runs"]:
            print(f"{key}: finished before ({res['runs'][key]['wall_s']:.0f} s)")
            continue
        if args.budget and time.time() - start > args.budget:
            print(f"budget of {args.budget:.0f} s spent: {key} and later runs are left for the next call")
            break
        resume = ["--resume"] if (run / "state.json").exists() else []
        rc, cost, proc = timed_retain(["--quiet", "run", CONFIG_NAME, f"methods=[{m}]",
                                       f"seeds=[{seed}]", *resume])
        if rc != 0:
            print(f"{key} failed:\n{proc.stderr[-3000:]}")
            continue
        # a resumed run's time is that of the part run here (the stopped part was not measured)
        res["runs"][key] = {**cost, **({"resumed": True} if resume else {})}
        keep(run, KEPT / key)
        print(key, json.dumps(res["runs"][key]))
        write(res, cfg)
    write(res, cfg)
    print(res.get("table", ""))


def build_mismatch(model: str) -> str | None:
    """Why new runs here could not be paired with the kept ones (None when they could): the kept
    runs started from another build of the zoo model than the one cached here (a rebuild on
    another CPU can differ). Checked before any run starts; builds the model when it is not
    cached, as the first run would."""
    from retain.io import read_json
    from retain.registry import build_info, list_models, zoo_folder
    from retain.report.compare import weights_of

    kept = {}
    for run in finished_runs():
        kept.setdefault(weights_of(read_json(run / "results.json")), []).append(run.relative_to(KEPT).as_posix())
    kept.pop(None, None)
    if not kept or model not in list_models():  # nothing kept, or a hub model: no zoo build to compare
        return None
    zoo_folder(model)  # built now when not cached, as the first run would
    here = weights_of({"model_build": build_info(model)})
    if here in kept:
        return None
    runs = "; ".join(f"{', '.join(names)} on weights {w}" for w, names in kept.items())
    where = str(KEPT).replace(f"{ROOT}/", "")
    return (f"The kept runs under {where} started from another build of {model} ({runs}) than the one "
            f"cached here (weights {here}): new runs could not be paired with them. Run where their build is cached, "
            f"move them aside to start the benchmark again on this build, or pass --any-build to run anyway.")


def keep(run: Path, to: Path) -> None:
    """Copy a finished run's results, config and per-item records to `to` (replacing an older copy)."""
    import shutil

    tmp = to.with_name(to.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("results.json", "config.yaml"):
        shutil.copy2(run / name, tmp / name)
    shutil.copytree(run / "records", tmp / "records")
    shutil.rmtree(to, ignore_errors=True)
    tmp.rename(to)


def finished_runs() -> list[Path]:
    return sorted(p.parent for p in KEPT.glob("*/seed-*/results.json"))


def write(res: dict, cfg) -> None:
    from retain.errors import RetainError
    from retain.io import read_json
    from retain.report import comparison_rows, format_table
    from retain.report.compare import paired_rows

    runs = finished_runs()
    if not runs:
        return
    results = [read_json(r / "results.json") for r in runs]
    header, rows = comparison_rows(runs, results)
    res.update({"command": f"retain run {CONFIG_NAME} methods=[<method>] seeds=[<seed>]",
                "sequence": cfg.sequence, "train": vars(cfg.train), "eval_limit": cfg.eval.limit,
                "max_new_tokens": cfg.eval.max_new_tokens, "seeds": cfg.seeds,
                "table": format_table(header, rows)})
    res.pop("paired", None)
    res.pop("unpaired", None)
    if any(r["method"] == BASELINE for r in results) and len({r["method"] for r in results}) > 1:
        try:
            ph, prow, how = paired_rows(runs, results, BASELINE)
            res["paired"] = {"table": format_table(ph, prow), "how": how,
                             "rows": {row[0]: {h: _cell(c) for h, c in zip(ph[1:], row[1:])} for row in prow}}
        except RetainError as e:  # e.g. runs on different builds of mini-LLaVA: said, not paired
            res["unpaired"] = str(e).replace(f"{ROOT}/", "")
    res["matrices"] = {f"{r['method']}/seed-{r['seed']}": r["accuracy_matrix"] for r in results}
    res["matrix_intervals"] = {f"{r['method']}/seed-{r['seed']}": r["intervals"]["accuracy_matrix"] for r in results}
    res["learnability"] = learnability(results, cfg.sequence)
    res["ranking"] = ranking(results)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")


def _cell(c):
    """A paired-difference cell as plain JSON: value, interval, whether the interval holds zero."""
    if c is None:
        return None
    return {"value": c.value, "interval": None if c.interval is None else list(c.interval), "within_noise": c.noise}


def learnability(results: list[dict], sequence: list[str]) -> dict:
    """Per seed of the baseline: each task's score right after training it, its zero-shot
    score, and whether the bar (>= LEARNED and >= MARGIN above zero-shot) holds."""
    from retain.metrics import learned_tasks

    out = {}
    for r in results:
        if r["method"] != BASELINE:
            continue
        A, iv = r["accuracy_matrix"], r["intervals"]["accuracy_matrix"]
        met = learned_tasks(np.asarray(A, dtype=float), LEARNED, MARGIN)  # None (unscored) -> NaN
        out[f"seed-{r['seed']}"] = {name: {"after_training": A[t + 1][t], "zero_shot": A[0][t],
                                           "after_training_interval": iv[t + 1][t], "zero_shot_interval": iv[0][t],
                                           "meets_bar": bool(met[t])} for t, name in enumerate(sequence)}
    return {"bar": {"learned": LEARNED, "margin": MARGIN}, "seeds": out,
            "all_met": bool(out) and all(v["meets_bar"] for s in out.values() for v in s.values())}


def ranking(results: list[dict]) -> dict:
    """Methods ranked by MAA within each seed (best first), and Kendall's tau between the seeds."""
    from retain.report.compare import ranking_stability

    by_seed: dict[int, dict[str, float]] = {}
    for r in results:
        by_seed.setdefault(r["seed"], {})[r["method"]] = r["metrics"].get("MAA")
    rk = ranking_stability(by_seed)
    return {"by_seed": {f"seed-{s}": o for s, o in rk["by_seed"].items()},
            "kendall_tau": [{"seeds": t["seeds"], "methods": t["rows"], "tau": t["tau"]} for t in rk["kendall_tau"]],
            "mean_tau": rk["mean_tau"]}


if __name__ == "__main__":
    main()
