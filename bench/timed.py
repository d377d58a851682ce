"""One way for the benchmarks to time a `retain` command: wall time and peak memory.

The command runs in a grandchild under a small probe process, so the peak resident memory
reported (RUSAGE_CHILDREN of the probe) is the command's own, not the benchmark's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import resource, subprocess, sys, time\n"
    "t = time.time()\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('BENCH', rc, time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def timed_retain(args: list[str], env: dict | None = None) -> tuple[int, dict, subprocess.CompletedProcess]:
    """Run `python -m retain ARGS` from the repository root (quiet progress).

    Returns (exit status, {"wall_s", "peak_rss_mb"}, the probe's completed process, whose
    stdout holds the command's output before the BENCH line)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, sys.executable, "-m", "retain", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "RETAIN_QUIET": "1", **(env or {})})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")][-1].split()
    return int(line[1]), {"wall_s": float(line[2]), "peak_rss_mb": int(line[3]) / 1024}, proc
