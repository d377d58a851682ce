"""bench/gpu_check.sh in its dry mode (the CPU stands in for the GPU), and its comparison rule."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_flags_non_finite_missing_and_distant_scores():
    compare = load_check().compare
    ref = {"a": 50.0, "b": 50.0, "c": 50.0, "d": None, "e": 50.0, "f": 10.0}
    got = {"a": 54.9, "b": 55.1, "c": math.nan, "d": None, "e": None, "f": 9.0}
    failures = compare(ref, got, tolerance=5.0)
    assert set(failures) == {"b", "c", "e"}  # a and f within 5 points; d unscored on both sides
    assert "more than 5.0 points" in failures["b"]
    assert compare(ref, {**got, "b": 50.0, "c": 50.0, "e": 50.0}, 5.0) == {}
    assert "extra scores" in compare({"a": 1.0}, {"a": 1.0, "z": 2.0}, 5.0)
    assert set(compare({"x": None}, {"x": 3.0}, 5.0)) == {"x"}  # unscored on the CPU, scored on the device


def test_dry_check_runs_every_workload_and_reports_costs(tmp_path, tiny_llava_dir):
    # tiny_llava_dir: the same assets the check's tiny models need (skips or fails like the rest)
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "RETAIN_QUIET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--dry", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["passed"] and report["models"]["kind"] == "tiny"
    assert set(report["workloads"]) == {"emt-eval", "dual-encoder-run", "mcit-2task", "wings-study"}
    for name, w in report["workloads"].items():
        assert w["passed"] and w["failures"] == {}
        ref, dev = w["reference"], w["device"]
        assert ref["scores"] and set(ref["scores"]) == set(dev["scores"]), name
        assert all(v is None or 0 <= abs(v) <= 100 for v in dev["scores"].values())
    runs = report["workloads"]["mcit-2task"]
    assert {"lora_ft/final/digit-read", "lora_ft/final/digits"} <= set(runs["device"]["scores"])
    assert runs["device"]["cost"]["train_items_per_s"] > 0 and runs["device"]["cost"]["peak_rss_mb"] > 0
    emt = report["workloads"]["emt-eval"]
    assert emt["device"]["cost"]["likelihood_images_per_s"] > 0 and 0 <= emt["agreement"]["likelihood"] <= 1
    assert "mcit-2task: ok" in proc.stdout and "gpu_check: passed" in proc.stdout


def test_without_a_gpu_the_real_check_says_to_use_dry(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real check would run")
    proc = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--out", str(tmp_path / "x.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--dry" in proc.stderr and not (tmp_path / "x.json").exists()
