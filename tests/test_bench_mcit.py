"""bench/mcit_offline.py's tables from the kept runs: runs that started from different builds of
mini-LLaVA are not paired, and docs/mcit.md's findings then say why instead of claiming."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEPT_RUN = ROOT / "bench" / "results" / "mcit_offline_runs" / "lora_ft" / "seed-0"


def bench_module(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def kept_pair(kept: Path, olora_sha: str | None) -> None:
    """lora_ft seed 0 as it was run, and the same run relabelled olora, on build `olora_sha`."""
    shutil.copytree(KEPT_RUN, kept / "lora_ft" / "seed-0")
    shutil.copytree(KEPT_RUN, kept / "olora" / "seed-0")
    path = kept / "olora" / "seed-0" / "results.json"
    res = json.loads(path.read_text())
    res["method"] = res["label"] = "olora"
    if olora_sha:
        res["model_build"]["sha256"] = {"model.safetensors": olora_sha}
    path.write_text(json.dumps(res))


def test_runs_on_another_build_are_tabled_but_not_paired(tmp_path, monkeypatch):
    from retain.config import load_config

    mcit, run_all = bench_module("mcit_offline"), bench_module("run_all")
    cfg = load_config(mcit.CONFIG)
    for case, sha in (("same", None), ("rebuilt", "a87ab56c" * 8)):
        kept, out = tmp_path / case, tmp_path / f"{case}.json"
        kept_pair(kept, sha)
        monkeypatch.setattr(mcit, "KEPT", kept)
        monkeypatch.setattr(mcit, "OUT", out)
        res = {"runs": {}, "paired": {"stale": True}}
        mcit.write(res, cfg)
        written = json.loads(out.read_text())
        assert "| olora |" in written["table"] and "| lora_ft |" in written["table"]
        findings = "\n".join(run_all.mcit_findings(written))
        if case == "same":  # the same run twice: every paired difference is 0, within noise
            cells = written["paired"]["rows"]["olora"]
            assert all(c["value"] == 0 and c["within_noise"] for c in cells.values() if c)
            assert "unpaired" not in written and "No method differs" in findings
        else:
            assert "paired" not in written  # the stale table is gone, not kept
            assert "different builds of mini-llava" in written["unpaired"] and "a87ab56ca87a" in written["unpaired"]
            assert str(ROOT) not in written["unpaired"]  # the docs name the kept runs by their place in the repo
            assert "No paired claims: " in findings and "No method differs" not in findings


def test_no_run_starts_on_another_build_than_the_kept_runs(tmp_path, monkeypatch):
    """Checked before the first run: the kept run's build (9ebc3fba...) against the one cached here."""
    import retain.registry as registry

    mcit = bench_module("mcit_offline")
    kept_pair(tmp_path, None)
    monkeypatch.setattr(mcit, "KEPT", tmp_path)
    monkeypatch.setattr(registry, "zoo_folder", lambda name: tmp_path)  # nothing is built by the test
    kept = json.loads((KEPT_RUN / "results.json").read_text())["model_build"]
    monkeypatch.setattr(registry, "build_info", lambda name: kept)
    assert mcit.build_mismatch("mini-llava") is None
    monkeypatch.setattr(registry, "build_info", lambda name: {**kept, "sha256": {"model.safetensors": "a87ab56c" * 8}})
    said = mcit.build_mismatch("mini-llava")
    assert "lora_ft/seed-0, olora/seed-0 on weights model.safetensors 9ebc3fba3f32" in said
    assert "cached here (weights model.safetensors a87ab56ca87a)" in said and "--any-build" in said
    assert mcit.build_mismatch("hf:llava-hf/llava-1.5-7b-hf") is None  # a hub model has no zoo build
    monkeypatch.setattr(sys, "argv", ["mcit_offline.py", "lora_ft"])
    monkeypatch.setattr(mcit, "timed_retain", lambda *a: pytest.fail("a run started"))
    with pytest.raises(SystemExit, match="another build of mini-llava"):
        mcit.main()
