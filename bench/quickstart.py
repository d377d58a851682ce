"""The quickstart's wall time and peak memory, on a fresh cache and on a warm one.

Fresh: an empty $RETAIN_CACHE, so the datasets are converted and mini-CLIP is built.
Warm: the same cache again (a new output directory, so nothing is skipped).
Results go to bench/results/quickstart.json.

    .venv/bin/python bench/quickstart.py            # both
    .venv/bin/python bench/quickstart.py --warm     # only the warm run (uses your cache)
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

def measure(cache: str, out_dir: str) -> dict:
    rc, cost, proc = timed_retain(["run", "configs/quickstart.yaml", f"output_dir={out_dir}"], {"RETAIN_CACHE": cache})
    if rc != 0:
        raise SystemExit(f"quickstart failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    table = proc.stdout[: proc.stdout.index("BENCH")].split("\n\nreports:")[0]
    return {**cost, "table": table.strip()}


def main() -> None:
    results = {"config": "configs/quickstart.yaml", "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    warm_cache = os.environ.get("RETAIN_CACHE", str(Path.home() / ".cache" / "retain"))
    with tempfile.TemporaryDirectory() as tmp:
        if "--warm" not in sys.argv:
            results["fresh"] = measure(os.path.join(tmp, "cache"), os.path.join(tmp, "runs-fresh"))
            print(f"fresh cache: {results['fresh']['wall_s']:.0f} s, peak {results['fresh']['peak_rss_mb']:.0f} MB")
            warm_cache = os.path.join(tmp, "cache")
        results["warm"] = measure(warm_cache, os.path.join(tmp, "runs-warm"))
        print(f"warm cache: {results['warm']['wall_s']:.0f} s, peak {results['warm']['peak_rss_mb']:.0f} MB")
        print(results["warm"]["table"])
    OUT.mkdir(exist_ok=True)
    (OUT / "quickstart.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
