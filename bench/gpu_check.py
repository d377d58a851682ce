"""The GPU check: retain's runs on a CUDA device in bf16, against the same runs on the CPU in float32.

Four workloads, each run twice (the reference: CPU, float32; the device: CUDA, bf16):

- `emt-eval`: EMT on digits in likelihood and rule mode, the same weights on both sides
  (in this process: the device side loads the MLLM in bfloat16);
- `dual-encoder-run`: a quickstart-shaped run (fine-tuning and LDIFS on a CLIP, digits),
  `retain run` with `train.mixed_precision=bf16` on the device side;
- `mcit-2task`: LoRA-FT through two instruction tasks on the MLLM (digit-read, then digits
  as EMT questions), `retain run` with bf16 on the device side;
- `wings-study`: `retain study` on a LLaVA-way / WINGS-way pair with tiny budgets (the study
  has no dtype setting: float32 on both sides, the device side on CUDA).

Every score must be finite (None only where the run records an item as unscored) and close
to the reference's; the tolerances are in `TOLERANCE`, with their reasons. It prints each
workload's throughput and peak memory (CUDA: `torch.cuda.max_memory_allocated`; CPU: peak
resident memory), writes everything to bench/results/gpu_check.json (or --out), and exits 1
when a check fails.

Models: the zoo's mini-CLIP and mini-LLaVA when they are built (`--models zoo`, the default
where both are cached; the WINGS pair then needs mini-llava-wings cached too, else the tiny
pair is used and the results say so), else tiny random models of the same architectures
built here from a seed (`--models tiny`, `retain.zoo.tiny`; they need only the tokenizers).
A machine without retain's asset packages (a lent GPU machine with its own torch and no
network) gets the tokenizers from a folder written here by
`.venv/bin/python -c "from retain.zoo.tiny import export_tokenizers; export_tokenizers('.gpu_carry')"`
(about 4 MB; ignore it in .git/info/exclude and carry it), named there in
$RETAIN_TINY_TOKENIZERS. Every dataset used is digits (scikit-learn's, offline).

`--dry` runs the whole check on the CPU (the device side: bf16 on the CPU), tiny models and
budgets: CI runs it (tests/test_gpu_check.py), so the script cannot rot while no GPU is lent.

    bench/gpu_check.sh                 # on a GPU machine: about 2-3 minutes with tiny models
    bench/gpu_check.sh --dry --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "gpu_check.json"

# How close the device side must come to the CPU float32 reference, in accuracy points (0-100).
TOLERANCE = {
    # Same weights, evaluation only. bf16 keeps 8 significant bits, so a logit of magnitude
    # ~10 moves by up to ~0.04; on a trained model that flips the few items whose two best
    # options are that close. 5 points over >= 64 items allows about 3 flipped items net.
    "eval": 5.0,
    # Trained runs: bf16 rounding changes every step's update, and tens of steps carry the
    # difference forward into a different (equally trained) model; two fp32 runs with
    # different seeds differ by several points at these budgets. 15 points catches a device
    # path that is broken (no learning, NaN, a wrong cast) without failing on that drift.
    "trained": 15.0,
}
BUDGET = {  # (dry, real): items per evaluation, steps per task
    "limit": (24, 200),
    "steps": (4, 30),
}


def pick(dry: bool, key: str) -> int:
    return BUDGET[key][0 if dry else 1]


# ---- models -------------------------------------------------------------------------------------
def zoo_built(name: str) -> bool:
    from retain.registry import zoo_folder

    try:
        return (zoo_folder(name, build=False) / "DONE").exists()
    except Exception:  # noqa: BLE001 - an unbuildable zoo counts as not built
        return False


def models(kind: str, work: Path, dry: bool) -> dict:
    """The models of the check: names or folders, and how they were made."""
    if kind == "auto":
        kind = "zoo" if not dry and zoo_built("mini-clip") and zoo_built("mini-llava") else "tiny"
    if kind == "zoo":
        if not (zoo_built("mini-clip") and zoo_built("mini-llava")):
            raise SystemExit("--models zoo: mini-clip and mini-llava must be built first "
                             "(retain zoo build mini-llava), or use --models tiny.")
        out = {"kind": "zoo", "clip": "mini-clip", "llava": "mini-llava"}
        if zoo_built("mini-llava-wings"):
            out["wings"] = {"kind": "zoo", "models": ["mini-llava", "mini-llava-wings"], "reference": ""}
            return out
    else:
        out = {"kind": "tiny"}
    from retain.zoo.tiny import build_study_pair, build_tiny_clip, build_tiny_llava

    width = 32 if dry else 256  # real mode: wide enough that the device does measurable work
    if out["kind"] == "tiny":
        out["clip"] = str(build_tiny_clip(work / "tiny-clip", width=width))
        out["llava"] = str(build_tiny_llava(work / "tiny-llava", width=width, layers=2 if dry else 4))
    base = out["llava"] if out["kind"] == "tiny" else str(build_tiny_llava(work / "tiny-llava", width=width))
    reference, winged = build_study_pair(base, work / "study-pair")
    out["wings"] = {"kind": "tiny", "models": [base, str(winged)], "reference": str(reference)}
    return out


# ---- running a command on one side ---------------------------------------------------------------
PROBE = """
import json, resource, sys, time
t = time.time()
from retain.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else 1
peak = None
try:
    import torch
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
except Exception:
    pass
print("GPUCHECK " + json.dumps({"rc": rc, "wall_s": time.time() - t, "cuda_peak_mb": peak,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def side_env(side: str, dry: bool) -> dict:
    env = {**os.environ, "RETAIN_QUIET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                                            os.environ.get("PYTHONPATH", "")])}
    if side == "reference" or dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the reference never sees the GPU
        env["RETAIN_DEVICE"] = "cpu"
    else:
        env["RETAIN_DEVICE"] = "cuda"
    return env


def retain_cli(args: list[str], side: str, dry: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=side_env(side, dry),
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("GPUCHECK ")]
    cost = json.loads(lines[-1][len("GPUCHECK "):]) if lines else {"rc": proc.returncode}
    if cost["rc"] != 0:
        raise RuntimeError(f"retain {' '.join(args)} failed on the {side} side ({cost['rc']}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return cost


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- the workloads ---------------------------------------------------------------------------------
def run_workload(name: str, config: dict, work: Path, dry: bool, batch: int) -> dict:
    """`retain run` on both sides; the scores of every method's results.json, and the costs."""
    sides = {}
    for side in ("reference", "device"):
        cfg = {**config, "name": f"{name}-{side}", "output_dir": str(work / "runs")}
        if side == "device":
            cfg["train"] = {**cfg["train"], "mixed_precision": "bf16"}
        cost = retain_cli(["run", str(write_yaml(work / f"{name}-{side}.yaml", cfg))], side, dry)
        scores, seconds, steps = {}, 0.0, 0
        for method in config["methods"]:
            run = work / "runs" / f"{name}-{side}" / method
            res = json.loads((run / "results.json").read_text())
            state = json.loads((run / "state.json").read_text())
            seconds += sum(state["seconds"])
            steps += len(res["sequence"]) * config["train"]["max_steps"]
            for metric, value in res["metrics"].items():
                scores[f"{method}/{metric}"] = points(value)
            for task, value in res["final_task_accuracy"].items():
                scores[f"{method}/final/{task}"] = points(value)
        sides[side] = {"scores": scores, "cost": {**cost, "task_seconds": round(seconds, 2),
                                                 "train_items_per_s": round(steps * batch / max(seconds, 1e-9), 1)}}
    return sides


def dual_encoder_run(m: dict, work: Path, dry: bool) -> dict:
    config = {"model": m["clip"], "sequence": ["digits"], "probes": [], "methods": ["finetune", "ldifs"],
              "method_args": {"ldifs": {"alpha": 100, "normalize": "token"}}, "seed": 0,
              "train": {"lr": 6e-4, "batch_size": 32, "warmup_steps": 2, "epochs": 100,
                        "max_steps": pick(dry, "steps"), "train_limit": 0},
              "eval": {"limit": pick(dry, "limit"), "linear_probe": False}}
    return run_workload("dual-encoder-run", config, work, dry, batch=32)


def mcit_run(m: dict, work: Path, dry: bool) -> dict:
    config = {"model": m["llava"], "sequence": ["digit-read", "digits"], "probes": [], "methods": ["lora_ft"],
              "seed": 0, "train": {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 8, "warmup_steps": 2,
                                   "epochs": 100, "max_steps": pick(dry, "steps"), "train_limit": 0},
              "eval": {"limit": pick(dry, "limit"), "emt_mode": "likelihood", "max_new_tokens": 8}}
    return run_workload("mcit-2task", config, work, dry, batch=8)


def wings_study(m: dict, work: Path, dry: bool) -> dict:
    w = m["wings"]
    sides = {}
    for side in ("reference", "device"):
        cfg = {"study": "wings", "name": f"wings-{side}", "models": w["models"], "reference": w["reference"],
               "emt_tasks": ["digits"], "emt_mode": "likelihood", "instruction_tasks": ["digit-read"],
               "limit": pick(dry, "limit"), "text_limit": 32 if dry else 160, "kl_prompts": 4, "interleaved_per_mix": 1,
               "interleaved_turns": 2, "attention_items": 2, "seed": 0, "output_dir": str(work / "studies")}
        cost = retain_cli(["study", str(write_yaml(work / f"wings-{side}.yaml", cfg))], side, dry)
        study = json.loads((work / "studies" / f"wings-{side}" / "study.json").read_text())
        scores = {}
        for label, r in study["results"].items():
            for part in ("multimodal", "text"):
                for task, value in (r.get(part) or {}).items():
                    if isinstance(value, (int, float)) or value is None:
                        scores[f"{Path(label).name}/{part}/{task}"] = points(value)
        sides[side] = {"scores": scores, "cost": cost}
    return {**sides, "models": w["kind"]}


def emt_eval(m: dict, dry: bool, device: str) -> dict:
    """EMT on digits, both modes, the same weights in float32 on the CPU and bf16 on the device."""
    import torch

    from retain.data import load_task
    from retain.eval.emt import evaluate_emt
    from retain.registry import load_mllm

    task = load_task("digits")
    limit = pick(dry, "limit")
    sides = {}
    for side, dev, dtype in (("reference", "cpu", torch.float32), ("device", device, torch.bfloat16)):
        mllm = load_mllm(m["llava"], dtype=dtype)
        mllm.model.to(dev)
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        scores, cost, predictions = {}, {}, {}
        for mode in ("likelihood", "rule"):
            start = time.time()
            r = evaluate_emt(mllm, task, mode, limit=limit, max_new_tokens=8)
            seconds = time.time() - start
            scores[f"{mode}/accuracy"] = points(r.accuracy)
            cost[f"{mode}_images_per_s"] = round(limit / seconds, 2)
            predictions[mode] = [rec.get("predicted", rec.get("answer")) for rec in r.records]
        cost["wall_s"] = round(sum(limit / cost[f"{mode}_images_per_s"] for mode in ("likelihood", "rule")), 1)
        if dev.startswith("cuda"):
            cost["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        sides[side] = {"scores": scores, "cost": cost, "predictions": predictions}
        del mllm
    ref, got = sides["reference"]["predictions"], sides["device"]["predictions"]
    agreement = {mode: sum(a == b for a, b in zip(ref[mode], got[mode])) / len(ref[mode]) for mode in ref}
    for side in sides.values():
        side.pop("predictions")
    return {**sides, "agreement": agreement}


# ---- checking -------------------------------------------------------------------------------------
def points(value):
    """A score on retain's 0-1 scale in points (0-100); None (unscored) stays None."""
    return None if value is None else 100.0 * value


def compare(reference: dict, device: dict, tolerance: float) -> dict:
    """Every score finite on the device side where the reference has one, and within `tolerance`
    points of it (scores in points). Returns the failures, key -> why."""
    failures = {}
    for key, ref in reference.items():
        got = device.get(key)
        if ref is None and got is None:
            continue  # unscored on both sides: recorded as such, not a failure
        if got is None or not math.isfinite(got):
            failures[key] = f"device score {got!r} (reference {ref!r})"
            continue
        if ref is None or not math.isfinite(ref):
            failures[key] = f"reference score {ref!r} (device {got!r})"
            continue
        if abs(got - ref) > tolerance:
            failures[key] = f"device {got:.4g} vs reference {ref:.4g}: more than {tolerance} points apart"
    missing = sorted(set(device) - set(reference))
    if missing:
        failures["extra scores"] = f"on the device side only: {missing[:5]}"
    return failures


def versions() -> dict:
    import torch
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="run on the CPU only, tiny models and budgets (CI)")
    parser.add_argument("--models", choices=["auto", "zoo", "tiny"], default="auto")
    parser.add_argument("--out", default=None, help=f"results file (default {OUT.relative_to(ROOT)}; --dry: "
                                                     "a temporary file)")
    parser.add_argument("--only", default="", help="comma-separated workloads to run (default: all)")
    args = parser.parse_args()

    import torch

    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry for the CPU version of the check", file=sys.stderr)
        return 2
    device = "cpu" if args.dry else "cuda"
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) / "gpu_check.json" if args.dry else OUT)
    work = Path(tempfile.mkdtemp(prefix="retain-gpu-check-"))
    start = time.time()
    m = models(args.models, work, args.dry)
    workloads = {
        "emt-eval": (lambda: emt_eval(m, args.dry, device), "eval"),
        "dual-encoder-run": (lambda: dual_encoder_run(m, work, args.dry), "trained"),
        "mcit-2task": (lambda: mcit_run(m, work, args.dry), "trained"),
        "wings-study": (lambda: wings_study(m, work, args.dry), "eval"),
    }
    chosen = [w for w in args.only.split(",") if w] or list(workloads)
    report = {"dry": args.dry, "models": {k: v for k, v in m.items() if k != "wings"}, "versions": versions(),
              "tolerance_points": TOLERANCE, "workloads": {}}
    failed = []
    for name in chosen:
        run, kind = workloads[name]
        t = time.time()
        try:
            result = run()
            result["failures"] = compare(result["reference"]["scores"], result["device"]["scores"], TOLERANCE[kind])
        except RuntimeError as e:
            result = {"failures": {"run": str(e)}}
        result["seconds"] = round(time.time() - t, 1)
        result["passed"] = not result["failures"]
        report["workloads"][name] = result
        if not result["passed"]:
            failed.append(name)
        costs = {s: result[s]["cost"] for s in ("reference", "device") if s in result}
        print(f"{name}: {'ok' if result['passed'] else 'FAILED'} in {result['seconds']} s; "
              + "; ".join(f"{s} {json.dumps(c)}" for s, c in costs.items()))
        for key, why in result["failures"].items():
            print(f"  {key}: {why}")
    report["seconds"] = round(time.time() - start, 1)
    report["passed"] = not failed
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"gpu_check: {'passed' if not failed else 'FAILED: ' + ', '.join(failed)} in {report['seconds']} s; "
          f"written {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
