"""Experiment tracking: TensorBoard's event file holds what the run logged; bad trackers are named."""

from __future__ import annotations

import pytest

from conftest import need
from test_cli import results, retain, tiny_config

from retain.errors import RetainError
from retain.tracking import flatten, trackers


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {folder}"
    out = {}
    for f in files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def test_tensorboard_event_file_holds_the_run_metrics(tmp_path, tiny_clip_dir):
    need("tensorboard")
    cfg = tiny_config(tmp_path, tiny_clip_dir, methods=["ldifs"])
    retain("run", cfg, "--report-to", "tensorboard")
    res = results(tmp_path, "ldifs")
    s = _scalars(tmp_path / "runs" / "tiny" / "ldifs" / "tracking")
    # 3 steps per task (train.max_steps) on each of 2 tasks, one global step count
    assert [step for step, _ in s["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert all(v > 0 for _, v in s["train/loss"])
    A = res["accuracy_matrix"]
    for j, task in enumerate(res["sequence"]):  # rows 1.. of the accuracy matrix, logged after each task
        assert [v for _, v in s[f"eval/{task}"]] == pytest.approx([A[1][j], A[2][j]], abs=1e-6)
    assert [step for step, _ in s["eval/digits"]] == [3, 6]
    curve = res["probe_zero_shot_curve"]
    assert [v for _, v in s["probe/animal-mnist"]] == pytest.approx([curve[1]["animal-mnist"], curve[2]["animal-mnist"]])
    for k in ("MFT", "MFN", "MAA", "BWT", "forgetting"):
        assert s[f"metrics/{k}"][-1][1] == pytest.approx(res["metrics"][k], abs=1e-6)
    assert s["metrics/zero_shot_delta_mean"][-1][1] == pytest.approx(res["concept_forgetting"]["zero_shot"]["mean_delta"])


def test_tracker_names_are_checked(monkeypatch):
    assert trackers("") == [] and trackers([]) == []
    with pytest.raises(RetainError, match="unknown tracker 'tensorbord'.*Did you mean 'tensorboard'"):
        trackers("tensorbord")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RetainError, match="pip install wandb"):
        trackers("wandb")


def test_unknown_tracker_fails_before_training(tmp_path, tiny_clip_dir):
    proc = retain("run", tiny_config(tmp_path, tiny_clip_dir), "--report-to", "mlfow", check=False)
    assert proc.returncode == 2 and "Did you mean 'mlflow'" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_flatten_gives_scalars():
    flat = flatten({"train": {"lr": 1e-3, "epochs": 2}, "methods": ["a", "b"], "seed": 0, "x": None})
    assert flat == {"train.lr": 1e-3, "train.epochs": 2, "methods": "['a', 'b']", "seed": 0, "x": "None"}


def test_resume_continues_the_logged_steps_and_may_add_a_tracker(tmp_path, tiny_clip_dir):
    need("tensorboard")
    cfg = tiny_config(tmp_path, tiny_clip_dir)
    killed = retain("run", cfg, kill_after=1, check=False)  # no tracker yet
    assert killed.returncode != 0
    retain("run", cfg, "--resume", "--report-to", "tensorboard")  # added on resume: not a config change
    s = _scalars(tmp_path / "runs" / "tiny" / "finetune" / "tracking")
    assert [step for step, _ in s["train/loss"]] == [4, 5, 6]  # task 2's steps, after task 1's three
    assert [step for step, _ in s["eval/textile"]] == [6]
