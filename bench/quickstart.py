"""The quickstart: its wall time and peak memory (fresh cache and warm), and its evidence
over three seeds, checked against the acceptance of issue 14.

Fresh: an empty $RETAIN_CACHE, so the datasets are converted and mini-CLIP is built (its
weights' hash is compared with the cached build's: the build is deterministic).
Warm: the same cache again (a new output directory, so nothing is skipped).
Seeds: `retain run configs/quickstart.yaml seeds=[0,1,2]` into runs/bench/quickstart-seeds/
(finished runs there are kept, so an interrupted benchmark continues): the table with
t-intervals over seeds, the paired differences against fine-tuning, and the checks:
- LDIFS's mean zero-shot concept-forgetting delta at most 50% of fine-tuning's,
- LDIFS's MFT at least 98% of fine-tuning's,
- the paired interval of the difference in zero-shot forgetting excludes zero,
- fine-tuning's accuracy right after each task at least 85% of the ceiling measured by
  `bench/ldifs_sweep.py ceiling` (bench/results/ldifs_sweep.json).
Results go to bench/results/quickstart.json.

    .venv/bin/python bench/quickstart.py            # fresh, warm and seeds
    .venv/bin/python bench/quickstart.py --warm     # warm and seeds (uses your cache)
    .venv/bin/python bench/quickstart.py --seeds    # only the seeds (and the checks)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
SEEDS = [0, 1, 2]
SEED_RUNS = ROOT / "runs" / "bench"


def measure(cache: str, out_dir: str, extra: list[str] = ()) -> dict:
    rc, cost, proc = timed_retain(["run", "configs/quickstart.yaml", f"output_dir={out_dir}", *extra],
                                  {"RETAIN_CACHE": cache})
    if rc != 0:
        raise SystemExit(f"quickstart failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    table = proc.stdout[: proc.stdout.index("BENCH")].split("\n\nreports:")[0]
    return {**cost, "table": table.strip(), "zoo": build_hash(cache)}


def build_hash(cache: str) -> dict | None:
    """Which mini-CLIP build is in `cache` (recipe hash, weights' sha256: `build_info`)."""
    os.environ["RETAIN_CACHE"] = cache
    from retain.registry import build_info

    return build_info("mini-clip")


def seeds_evidence(cache: str) -> dict:
    """The quickstart over SEEDS: comparison rows with t-intervals, paired rows, checks."""
    args = [f"seeds={SEEDS}", "name=quickstart-seeds"]
    rc, cost, proc = timed_retain(["run", "configs/quickstart.yaml", f"output_dir={SEED_RUNS}", *args],
                                  {"RETAIN_CACHE": cache})
    if rc != 0:
        raise SystemExit(f"quickstart over seeds failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    group = SEED_RUNS / "quickstart-seeds"
    comparison = json.loads((group / "comparison.json").read_text())
    md = (group / "comparison.md").read_text()
    out = {"command": f"retain run configs/quickstart.yaml {' '.join(args)}", "seeds": SEEDS, **cost,
           "comparison": comparison, "markdown": md.strip(), "zoo": build_hash(cache)}
    out["checks"] = checks(comparison, group)
    return out


def _cell(comparison: dict, row: str, column: str, paired: bool = False) -> dict | None:
    block = comparison["paired"] if paired else comparison
    header = block["header"]
    for r in block["rows"]:
        if r[0] == row:
            c = r[header.index(column)]
            return c if isinstance(c, dict) else {"value": c, "low": None, "high": None}
    return None


def checks(comparison: dict, group: Path) -> dict:
    ft_zs, ld_zs = _cell(comparison, "finetune", "ZS delta (mean)"), _cell(comparison, "ldifs", "ZS delta (mean)")
    ft_mft, ld_mft = _cell(comparison, "finetune", "MFT (downstream)"), _cell(comparison, "ldifs", "MFT (downstream)")
    diff = _cell(comparison, "ldifs", "ZS delta (mean) minus finetune", paired=True)
    out = {
        "ldifs_zs_forgetting_share": ld_zs["value"] / ft_zs["value"],
        "ldifs_mft_share": ld_mft["value"] / ft_mft["value"],
        "paired_zs_difference": diff,
    }
    out["pass_zs_half"] = out["ldifs_zs_forgetting_share"] <= 0.5
    out["pass_mft_98"] = out["ldifs_mft_share"] >= 0.98
    out["pass_paired_excludes_zero"] = diff["low"] is not None and (diff["low"] > 0 or diff["high"] < 0)
    sweep = OUT / "ldifs_sweep.json"
    ceiling = json.loads(sweep.read_text())["groups"].get("ceiling", {}).get("finetune") if sweep.exists() else None
    if ceiling:
        diag = []
        for s in SEEDS:
            res = json.loads((group / "finetune" / f"seed-{s}" / "results.json").read_text())
            A = res["accuracy_matrix"]
            diag.append([A[i + 1][i] for i in range(len(res["sequence"]))])
        mean = [sum(d[i] for d in diag) / len(diag) for i in range(len(ceiling["diagonal"]))]
        out["ceiling"] = {"tasks": ceiling["sequence"], "ceiling": ceiling["diagonal"],
                          "ceiling_interval": ceiling["diagonal_interval"], "finetune_mean": mean,
                          "share": [m / c for m, c in zip(mean, ceiling["diagonal"])]}
        out["pass_ceiling_85"] = all(x >= 0.85 for x in out["ceiling"]["share"])
    return out


def main() -> None:
    path = OUT / "quickstart.json"
    results = json.loads(path.read_text()) if path.exists() and "--seeds" in sys.argv else {}
    results.update({"config": "configs/quickstart.yaml", "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")})
    warm_cache = os.environ.get("RETAIN_CACHE", str(Path.home() / ".cache" / "retain"))
    with tempfile.TemporaryDirectory() as tmp:
        if "--warm" not in sys.argv and "--seeds" not in sys.argv:
            results["fresh"] = measure(os.path.join(tmp, "cache"), os.path.join(tmp, "runs-fresh"))
            print(f"fresh cache: {results['fresh']['wall_s']:.0f} s, peak {results['fresh']['peak_rss_mb']:.0f} MB")
        if "--seeds" not in sys.argv:
            results["warm"] = measure(warm_cache, os.path.join(tmp, "runs-warm"))
            print(f"warm cache: {results['warm']['wall_s']:.0f} s, peak {results['warm']['peak_rss_mb']:.0f} MB")
            print(results["warm"]["table"])
        if "fresh" in results and "warm" in results:
            results["build_reproduced"] = results["fresh"]["zoo"]["sha256"] == results["warm"]["zoo"]["sha256"]
    results["seeds"] = seeds_evidence(warm_cache)
    print(results["seeds"]["markdown"])
    print(json.dumps(results["seeds"]["checks"], indent=1))
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
