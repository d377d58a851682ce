"""The run directory keeps finished work whatever happens: a kill between any two writes, a
full disk, a folder that cannot be written; and its files are readable as the umask says."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

from retain.config import load_config
from retain.errors import RetainError
from retain.io import check_writable, write_json, write_text
from retain.rundir import RunDir
from retain.families.dual_encoder import run_method


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler catches it."""


def tiny(tmp_path, model, name):
    return load_config(None, [f"model={model}", "sequence=[digits, textile]", "probes=[]", f"output_dir={tmp_path}",
                              f"name={name}", "train.lr=1e-3", "train.batch_size=16", "train.warmup_steps=1",
                              "train.max_steps=2", "train.train_limit=32", "eval.limit=32", "eval.linear_probe=false"])


def test_a_kill_between_the_checkpoint_and_state_json_leaves_a_resumable_run(tmp_path, tiny_clip_dir, monkeypatch):
    save_state = RunDir.save_state

    def killed_after_the_second_checkpoint(self, state):
        if state["done_tasks"] == 2:
            raise Killed
        save_state(self, state)

    monkeypatch.setattr(RunDir, "save_state", killed_after_the_second_checkpoint)
    with pytest.raises(Killed):
        run_method(tiny(tmp_path, tiny_clip_dir, "killed"), "finetune")
    monkeypatch.setattr(RunDir, "save_state", save_state)
    run = tmp_path / "killed" / "finetune"
    assert json.loads((run / "state.json").read_text())["done_tasks"] == 1
    assert (run / "checkpoints" / "after-task-2").exists()  # written, but state.json does not point at it yet

    resumed = run_method(tiny(tmp_path, tiny_clip_dir, "killed"), "finetune", resume=True)
    whole = run_method(tiny(tmp_path, tiny_clip_dir, "whole"), "finetune")
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["after-task-2"]  # the older one went last


def test_a_missing_checkpoint_says_what_is_there_and_keeps_the_rows(tmp_path):
    run = RunDir(tmp_path / "r")
    (run.path / "checkpoints" / "after-task-2").mkdir(parents=True)
    with pytest.raises(RetainError, match=r"after-task-1 is missing \(.*holds after-task-2\).*rows are kept"):
        run.load_checkpoint(0)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_result_files_are_as_readable_as_the_umask_says(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "results.json", {"a": 1})
        write_text(tmp_path / "sub" / "table.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "sub" / "table.md").stat().st_mode) == mode


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    from retain.io import atomic_write

    target = tmp_path / "results.json"
    write_json(target, {"finished": True})

    def disk_full(tmp):
        with open(tmp, "w") as f:
            f.write("{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(RetainError, match=r"Could not write .*results.json \(No space left on device\)"):
        atomic_write(target, disk_full)
    assert json.loads(target.read_text()) == {"finished": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


@pytest.mark.parametrize("where", ["/proc/retain-runs", "a-file/runs"])
def test_an_unwritable_output_directory_is_named(tmp_path, where):
    (tmp_path / "a-file").write_text("not a folder")
    target = where if where.startswith("/") else tmp_path / where
    with pytest.raises(RetainError, match=f"The output directory {target} cannot be written"):
        check_writable(target)


def test_resume_is_refused_when_a_folder_task_gained_images(tmp_path, tiny_clip_dir, monkeypatch):
    import numpy as np
    from PIL import Image

    root = tmp_path / "pets"
    for c, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8, 3), 15 * i + 100 * c, dtype=np.uint8)).save(root / cls / f"{i}.png")
    cfg = load_config(None, [f"model={tiny_clip_dir}", f"sequence=[digits, 'folder:{root}']", "probes=[]",
                             f"output_dir={tmp_path}", "name=grown", "train.batch_size=8", "train.max_steps=1",
                             "train.train_limit=8", "eval.limit=8", "eval.linear_probe=false"])
    save_state = RunDir.save_state

    def killed_after_the_first_task(self, state):
        save_state(self, state)
        if state["done_tasks"] == 1:
            raise Killed

    monkeypatch.setattr(RunDir, "save_state", killed_after_the_first_task)
    with pytest.raises(Killed):
        run_method(cfg, "finetune")
    monkeypatch.setattr(RunDir, "save_state", save_state)
    state_file = tmp_path / "grown" / "finetune" / "state.json"
    before = state_file.read_text()

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "dog" / "new.png")
    with pytest.raises(RetainError, match=r"--resume: the items of folder:.*pets are not those the run .* started"):
        run_method(cfg, "finetune", resume=True)
    assert state_file.read_text() == before  # the finished rows are untouched
    (root / "dog" / "new.png").unlink()
    assert run_method(cfg, "finetune", resume=True)["accuracy_matrix"]  # the same items again: it resumes
