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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"

# Runs the CLI in a child and reports the child's peak resident memory.
PROBE = (
    "import resource, subprocess, sys, time\n"
    "t = time.time()\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('BENCH', rc, time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def measure(cache: str, out_dir: str) -> dict:
    env = {**os.environ, "RETAIN_CACHE": cache, "RETAIN_QUIET": "1"}
    cmd = [sys.executable, "-c", PROBE, sys.executable, "-m", "retain", "run", "configs/quickstart.yaml",
           f"output_dir={out_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")][-1].split()
    if int(line[1]) != 0:
        raise SystemExit(f"quickstart failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    table = proc.stdout[: proc.stdout.index("BENCH")].split("\n\nreports:")[0]
    return {"wall_s": float(line[2]), "peak_rss_mb": int(line[3]) / 1024, "table": table.strip()}


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
