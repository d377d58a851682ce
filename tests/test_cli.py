"""The CLI end to end on a tiny budget: run, compare, report, determinism, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, model: Path, **over) -> Path:
    cfg = {
        "name": "tiny",
        "model": str(model),
        "sequence": ["digits", "textile"],
        "probes": ["animal-mnist"],
        "methods": ["finetune"],
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "train": {"lr": 1e-3, "batch_size": 16, "warmup_steps": 1, "max_steps": 3, "train_limit": 48},
        "eval": {"limit": 40, "probe_limit": 40},
    }
    for k, v in over.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg.get(k, {}), **v}
        else:
            cfg[k] = v
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def retain(*args, env=None, check=True, kill_after: int | None = None, timeout: int = 600):
    """The CLI in a subprocess; with `kill_after=N`, SIGKILLed once the N-th task is committed."""
    e = {**os.environ, "RETAIN_QUIET": "1", **(env or {})}
    entry = ["-m", "retain"] if kill_after is None else [str(ROOT / "tests" / "killer.py"), str(kill_after)]
    proc = subprocess.run([sys.executable, *entry, *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"retain {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def results(tmp_path, method="finetune", name="tiny"):
    return json.loads((tmp_path / "runs" / name / method / "results.json").read_text())


def test_run_compare_report_end_to_end(tmp_path, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, methods=["finetune", "ldifs", "wise_ft"])
    out = retain("run", cfg).stdout
    assert "MFT (downstream)" in out and "ldifs" in out
    group = tmp_path / "runs" / "tiny"
    for m in ("finetune", "ldifs", "wise_ft"):
        res = results(tmp_path, m)
        A = np.asarray(res["accuracy_matrix"])
        assert A.shape == (3, 2) and ((A >= 0) & (A <= 1)).all()
        assert set(res["concept_forgetting"]) == {"zero_shot", "linear_probe"}
        assert (group / m / "report.html").read_text().count("data:image/png;base64") == 4
        rec = (group / m / "records" / "row-2.jsonl").read_text().splitlines()
        assert len(rec) == 40 + 40 + 40 + 40  # two tasks, probe zero-shot, probe linear
        cfg_dump = yaml.safe_load((group / m / "config.yaml").read_text())
        assert cfg_dump["seed"] == 0 and "torch" in cfg_dump["versions"]
    # fine-tuning changed the model: task 1's accuracy moved after training on it
    A = np.asarray(results(tmp_path, "finetune")["accuracy_matrix"])
    assert A[1, 0] != A[0, 0]
    table = (group / "comparison.md").read_text()
    assert table.count("\n| ") >= 3
    out = retain("compare", group / "finetune", group / "ldifs", "--out", tmp_path).stdout
    assert "finetune" in out and "ldifs" in out and (tmp_path / "comparison.csv").exists()
    assert "Paired differences against finetune" in out and "| ldifs |" in out.split("Paired differences")[1]
    out = retain("compare", group, "--baseline", "ldifs", "--out", tmp_path).stdout
    paired = out.split("Paired differences against ldifs")[1]
    assert "| finetune |" in paired and "| wise_ft |" in paired and "| ldifs |" not in paired
    bad = retain("compare", group, "--baseline", "ldfis", check=False)
    assert bad.returncode == 2 and "Baseline 'ldfis' is not among the compared runs" in bad.stderr
    (group / "finetune" / "report.html").unlink()
    retain("report", group / "finetune")
    assert (group / "finetune" / "report.html").exists()


def test_same_seed_same_results_and_finished_run_not_recomputed(tmp_path, tiny_clip_dir):
    a = tiny_config(tmp_path, tiny_clip_dir, methods=["ldifs"])
    retain("run", a)
    first = (tmp_path / "runs" / "tiny" / "ldifs" / "results.json").read_text()
    retain("run", a, "name=tiny2")
    assert (tmp_path / "runs" / "tiny2" / "ldifs" / "results.json").read_text() == first
    mtime = (tmp_path / "runs" / "tiny" / "ldifs" / "results.json").stat().st_mtime_ns
    proc = retain("run", a, env={"RETAIN_QUIET": "0"})
    assert "already finished" in proc.stderr
    assert (tmp_path / "runs" / "tiny" / "ldifs" / "results.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("method", ["ewc", "replay"])
def test_resume_after_kill_gives_same_results(tmp_path, tiny_clip_dir, method):
    cfg = tiny_config(tmp_path, tiny_clip_dir, methods=[method])
    killed = retain("run", cfg, "name=killed", kill_after=1, check=False)
    assert killed.returncode != 0
    run = tmp_path / "runs" / "killed" / method
    assert json.loads((run / "state.json").read_text())["done_tasks"] == 1
    assert not (run / "results.json").exists()
    again = retain("run", cfg, "name=killed", check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    retain("run", cfg, "name=killed", "--resume")
    retain("run", cfg, "name=whole")
    assert (run / "results.json").read_text() == (tmp_path / "runs" / "whole" / method / "results.json").read_text()


def test_resume_into_different_config_is_refused(tmp_path, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"])
    retain("run", cfg)
    before = (tmp_path / "runs" / "tiny" / "finetune" / "results.json").read_text()
    proc = retain("run", cfg, "train.lr=0.5", "--resume", check=False)
    assert proc.returncode == 2
    assert "different config" in proc.stderr and "train.lr" in proc.stderr
    assert (tmp_path / "runs" / "tiny" / "finetune" / "results.json").read_text() == before
    # which other methods run beside it is not part of a run: found finished, not refused
    retain("run", cfg, "methods=[finetune,zeroshot]", "method_args.ldifs.alpha=10", "--resume")
    assert (tmp_path / "runs" / "tiny" / "finetune" / "results.json").read_text() == before
    assert (tmp_path / "runs" / "tiny" / "zeroshot" / "results.json").exists()


def test_nan_loss_stops_with_message_and_keeps_other_results(tmp_path, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"])
    retain("run", cfg)
    done = (tmp_path / "runs" / "tiny" / "finetune" / "results.json").read_text()
    proc = retain("run", cfg, "name=exploding", "train.lr=1e30", "train.grad_clip=0", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "loss became nan" in proc.stderr.lower() and "'digits'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "runs" / "tiny" / "finetune" / "results.json").read_text() == done


@pytest.mark.parametrize("override, message", [
    (["methods=[ldif]"], "Did you mean 'ldifs'"),
    (["trian.lr=1"], "Did you mean 'train'"),
    (["train.lrr=1"], "Did you mean 'lr'"),
    (["sequence=[digitz]"], "digits"),
    (["probes=[digits]"], "outside the sequence"),
    (["train.lr=-1"], "'train.lr' must be > 0, got -1"),
    (["train.batch_size=0"], "'train.batch_size' must be > 0, got 0"),
    (["seeds=[a,b]"], "'seeds[0]' must be a number, got 'a'"),
    # the option is refused before any model loads: this model does not exist
    (["methods=[ldifs]", "method_args.ldifs.normalize=foo", "model=/nonexistent/model"],
     "'method_args.ldifs.normalize' must be one of token, channel, got 'foo'"),
    (["output_dir=/proc/retain-runs"], "The output directory /proc/retain-runs/tiny cannot be written"),
    (["name=never-ran", "--resume"], "--resume: there is no run to resume in"),
    (["eval.every_steps=5"], "eval.every_steps evaluates inside a task in MLLM runs only"),
    # options for a method not run this time are kept but still checked
    (["method_args.ldifz.alpha=1"], "Unknown method 'ldifz'. Did you mean 'ldifs'"),
    (["method_args.ldifs.alpha=-1"], "'method_args.ldifs.alpha' must be"),
])
def test_bad_config_is_one_clear_message(tmp_path, tiny_clip_dir, override, message):
    cfg = tiny_config(tmp_path, tiny_clip_dir)
    proc = retain("run", cfg, *override, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_image_in_folder_task_names_the_file(tmp_path, tiny_clip_dir):
    from PIL import Image

    for cls in ("cat", "dog"):
        d = tmp_path / "pets" / cls
        d.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(d / f"{i}.png")
    bad = tmp_path / "pets" / "dog" / "broken.png"
    bad.write_bytes(b"not a png")
    cfg = tiny_config(tmp_path, tiny_clip_dir, sequence=[f"folder:{tmp_path / 'pets'}"])
    proc = retain("run", cfg, check=False)
    assert proc.returncode == 2 and "broken.png" in proc.stderr and "Traceback" not in proc.stderr


def test_multi_process_accelerate_launch(tmp_path, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"], methods=["ldifs"])
    env = {**os.environ, "RETAIN_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "retain", "run", str(cfg)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results(tmp_path, "ldifs")
    assert np.asarray(res["accuracy_matrix"]).shape == (2, 1)
    assert (tmp_path / "runs" / "tiny" / "comparison.md").exists()


def test_several_seeds_give_mean_and_t_interval(tmp_path, tiny_clip_dir):
    retain("run", tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"], seeds=[0, 1]))
    runs = [json.loads((tmp_path / "runs" / "tiny" / "finetune" / f"seed-{s}" / "results.json").read_text())
            for s in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1]
    mft = [r["metrics"]["MFT"] for r in runs]
    table = (tmp_path / "runs" / "tiny" / "comparison.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| finetune |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2"  # seeds
    half = 12.706205 * np.std(mft, ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert cells[2] == f"{100 * np.mean(mft):.1f} [{100 * (np.mean(mft) - half):.1f}, {100 * (np.mean(mft) + half):.1f}]"
    assert cells[-1] == "t-interval over seeds (2)"
    again = retain("compare", str(tmp_path / "runs" / "tiny"))
    assert row in again.stdout


def test_an_epoch_count_that_ends_a_task_before_max_steps_is_logged(tmp_path, tiny_clip_dir):
    # 48 items in batches of 16: one epoch is 3 steps, fewer than max_steps 5
    retain("run", tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"], probes=[],
                              train={"epochs": 1, "max_steps": 5}))
    log = (tmp_path / "runs" / "tiny" / "finetune" / "log.txt").read_text()
    assert "digits: 3 steps (1 epoch(s) of 3 batches), fewer than train.max_steps 5; raise train.epochs" in log
    retain("run", tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"], probes=[], name="enough",
                              train={"epochs": 2, "max_steps": 5}))
    assert "fewer than train.max_steps" not in (tmp_path / "runs" / "enough" / "finetune" / "log.txt").read_text()


def test_out_puts_the_run_where_it_says(tmp_path, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, sequence=["digits"], probes=[])
    retain("run", cfg, "--out", tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "tiny" / "finetune" / "results.json").exists()
    assert not (tmp_path / "runs").exists()
    assert yaml.safe_load((tmp_path / "elsewhere" / "tiny" / "finetune" / "config.yaml").read_text())["output_dir"] \
        == str(tmp_path / "elsewhere")
