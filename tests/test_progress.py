"""Progress output: counts and time left on long steps, and nothing at all in quiet mode."""

from __future__ import annotations

from test_cli import retain, tiny_config

from retain.progress import time_left


def test_time_left_from_finished_units():
    assert time_left([10.0, 20.0], 3) == "; about 45 s left"
    assert time_left([60.0], 2) == "; about 2 min left"
    assert time_left([], 3) == "" and time_left([5.0], 0) == ""


def test_progress_is_shown_and_quiet_mode_silences_it(tmp_path, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, sequence=["digits", "textile", "easyvqa-color"])
    loud = retain("run", cfg, env={"RETAIN_QUIET": "0"}).stderr
    assert "finetune on digits (1/3)" in loud and "3/3" in loud  # the step bar: task, count
    assert "after task 1/3 (digits)" in loud and "left" in loud.split("after task 1/3")[1].splitlines()[0]
    assert "after task 3/3" in loud
    quiet = retain("--quiet", "run", cfg, "name=again", "sequence=[digits]", env={"RETAIN_QUIET": "0"}).stderr
    assert "finetune on" not in quiet and "after task" not in quiet and "it/s" not in quiet
