"""Memory across tasks: the peak resident memory of a 1-task and a 4-task run of the same
method on mini-CLIP, measured side by side in one invocation (the machine is noisy).

The engine releases a finished task's optimizer, scheduler and loader, so a 4-task run
should peak within 10% of a 1-task run (its evaluation rows are 4 tasks long instead of
one; that difference is small next to the model and the optimizer). With `--before REV`
the same 4-task run is also timed on an older checkout (a `git worktree` of REV), to show
what the release changed. Each arm is one fresh process; every arm's result is written to
bench/results/engine_memory.json as it finishes, and an arm already there is skipped
(delete the file, or pass --again, to measure anew).

    .venv/bin/python bench/engine_memory.py [--before e9ff563] [--again]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "engine_memory.json"
FOUR = ["animal-mnist", "digits", "textile", "easyvqa-shape"]
SETTINGS = ["model=mini-clip", "probes=[fashion-mnist]", "methods=[finetune]", "method_args={}", "seed=0", "train.lr=6e-4",
            "train.batch_size=64", "train.warmup_steps=5", "train.epochs=100", "train.max_steps=30",
            "eval.limit=300", "eval.probe_limit=100"]


def arm(name: str, sequence: list[str], src: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = {"PYTHONPATH": str(src)} if src else None
        rc, cost, proc = timed_retain(["run", "configs/quickstart.yaml", *SETTINGS, f"sequence=[{', '.join(sequence)}]",
                                       f"output_dir={out}", f"name={name}"], env=env)
    if rc != 0:
        raise SystemExit(f"{name} failed ({rc}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return {"tasks": len(sequence), "code": "before" if src else "now", **cost}


def main() -> None:
    done = json.loads(OUT.read_text()) if OUT.exists() and "--again" not in sys.argv else {}
    arms = {"one_task": (FOUR[:1], None), "four_tasks": (FOUR, None)}
    if "--before" in sys.argv:
        rev = sys.argv[sys.argv.index("--before") + 1]
        tree = Path(tempfile.gettempdir()) / f"retain-{rev}"
        if not tree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True)
        arms[f"four_tasks_before_{rev}"] = (FOUR, tree / "src")
    for name, (sequence, src) in arms.items():
        if name in done:
            continue
        done[name] = arm(name, sequence, src)
        print(name, done[name], flush=True)
        OUT.write_text(json.dumps(done, indent=2, sort_keys=True) + "\n")
    one, four = done["one_task"]["peak_rss_mb"], done["four_tasks"]["peak_rss_mb"]
    done["ratio_four_over_one"] = round(four / one, 4)
    done["settings"] = SETTINGS
    done["torch_threads"] = os.cpu_count()
    OUT.write_text(json.dumps(done, indent=2, sort_keys=True) + "\n")
    print(f"peak RSS: 1 task {one:.0f} MB, 4 tasks {four:.0f} MB (x{four / one:.3f})")


if __name__ == "__main__":
    main()
