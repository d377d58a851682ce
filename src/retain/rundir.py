"""The run directory: resolved config, progress state, checkpoints, results, records.

    runs/<name>/<method>/
        config.yaml        resolved config with seed, method options and versions
        state.json         rows of the accuracy matrix finished so far (for --resume)
        checkpoints/       model + method state after the last finished task (safetensors)
        results.json       accuracy matrix, metrics, concept forgetting (when complete)
        records/*.jsonl    every prediction, so every score can be audited
        report.html, figures/, log.txt

Every file is written atomically; a finished run is never recomputed.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import yaml

from retain.errors import RetainError
from retain.io import atomic_write, read_json, write_json, write_text


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("retain", "torch", "transformers", "accelerate", "peft", "numpy", "scikit-learn", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_path(cfg, method_name: str, label: str | None = None) -> Path:
    """<output_dir>/<name>/<label>/, or .../<label>/seed-<s>/ when the config repeats seeds;
    the label (a sweep's variant, e.g. ldifs-alpha-100) defaults to the method's name."""
    path = Path(cfg.output_dir) / cfg.name / (label or method_name)
    return path / f"seed-{cfg.seed}" if cfg.seeds else path


BESIDE = ("report_to", "methods", "seeds")  # config keys a run's identity does not include


def _own(resolved: dict) -> dict:
    """The part of a resolved config that makes the run what it is: without BESIDE, and with
    the options of its own method only (a preset's options for other methods do not count)."""
    out = {k: v for k, v in resolved.items() if k not in BESIDE}
    if isinstance(out.get("method_args"), dict) and "method" in out:
        out["method_args"] = {k: v for k, v in out["method_args"].items() if k == out["method"]}
    return out


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ---- config & lifecycle --------------------------------------------------------
    def prepare(self, resolved: dict, resume: bool) -> str:
        """Create or check the directory; return 'fresh', 'resume' or 'done'."""
        cfg_file = self.path / "config.yaml"
        if not cfg_file.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            write_text(cfg_file, yaml.safe_dump({**resolved, "versions": versions()}, sort_keys=False))
            return "fresh"
        stored = yaml.safe_load(cfg_file.read_text()) or {}
        stored.pop("versions", None)
        from retain.config import RunConfig, to_dict

        # where metrics are also sent, and which other methods and seeds ran beside this one, do
        # not change this run's experiment (its method and seed are part of its path)
        diff = _differences(_own(stored), _own(resolved), defaults=to_dict(RunConfig()))
        if diff:
            raise RetainError(
                f"The run directory {self.path} holds a run with a different config "
                f"({'; '.join(diff[:5])}). Its results are kept: choose another `name` "
                "(or output_dir) for the new config, or delete that directory to start over."
            )
        if (self.path / "results.json").exists():
            return "done"
        if not resume and (self.path / "state.json").exists():
            raise RetainError(
                f"The run directory {self.path} holds an unfinished run. Pass --resume to "
                "continue it from its last checkpoint, or delete the directory to start over."
            )
        return "resume" if (self.path / "state.json").exists() else "fresh"

    # ---- progress state ------------------------------------------------------------
    def load_state(self) -> dict | None:
        f = self.path / "state.json"
        return read_json(f) if f.exists() else None

    def save_state(self, state: dict) -> None:
        write_json(self.path / "state.json", state)

    def check_data(self, state: dict, fingerprints: dict[str, str]) -> None:
        """Refuse to resume on items other than those the finished rows were scored on
        (`fingerprints`: task name -> `Task.fingerprint`, kept in state.json as `data`)."""
        before = state.get("data")
        if before is None:  # a run started before retain recorded its data: nothing to compare
            return
        changed = sorted(n for n in set(before) | set(fingerprints) if before.get(n) != fingerprints.get(n))
        if changed:
            raise RetainError(
                f"--resume: the items of {', '.join(changed)} are not those the run in {self.path} started with "
                "(files were added, removed or changed), so its finished rows and the rest would be scored on "
                "different data. Restore the data, or start a new run under another `name`.")

    # ---- checkpoints ---------------------------------------------------------------
    def checkpoint_dir(self, task_index: int) -> Path:
        return self.path / "checkpoints" / f"after-task-{task_index + 1}"

    def commit_task(self, task_index: int, model_state: dict, method_state: dict, state: dict) -> None:
        """Make task `task_index` finished on disk, in the order that keeps the run resumable
        if killed at any point: its checkpoint, then state.json (which points at it), and only
        then the older checkpoints go."""
        self.save_checkpoint(task_index, model_state, method_state)
        self.save_state(state)
        keep = self.checkpoint_dir(state["done_tasks"] - 1)
        for old in (self.path / "checkpoints").glob("after-task-*"):
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    def save_checkpoint(self, task_index: int, model_state: dict, method_state: dict) -> None:
        """Write the checkpoint after `task_index` (older ones stay: see `commit_task`)."""
        from safetensors.torch import save_file

        target = self.checkpoint_dir(task_index)
        for name, state in (("model.safetensors", model_state), ("method.safetensors", method_state)):
            tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
            atomic_write(target / name, lambda tmp, t=tensors: save_file(t, tmp))

    def load_checkpoint(self, task_index: int) -> tuple[dict, dict]:
        from safetensors.torch import load_file

        d = self.checkpoint_dir(task_index)
        if not (d / "model.safetensors").exists() or not (d / "method.safetensors").exists():
            there = sorted(p.name for p in (self.path / "checkpoints").glob("after-task-*"))
            raise RetainError(f"The checkpoint {d} is missing (the run's checkpoints folder holds "
                              f"{', '.join(there) or 'none'}), so the run cannot resume from state.json. Its "
                              f"finished rows are kept in {self.path / 'records'}; start it again under another "
                              "`name` to keep them, or delete the run directory to start over.")
        return load_file(str(d / "model.safetensors")), load_file(str(d / "method.safetensors"))

    # ---- outputs -------------------------------------------------------------------
    def write_results(self, results: dict) -> None:
        write_json(self.path / "results.json", results)

    def results(self) -> dict:
        return read_json(self.path / "results.json")

    def write_records(self, name: str, records: list[dict]) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        write_text(self.path / "records" / f"{name}.jsonl", text)

    def log(self, message: str) -> None:
        try:
            with open(self.path / "log.txt", "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError as e:
            raise RetainError(f"Could not write {self.path / 'log.txt'} ({e.strerror or e}): free space or fix the "
                              "folder's permissions; the finished files are kept.") from e


def _differences(a: dict, b: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """Keys whose values differ; a key the stored run lacks counts as equal when the new
    value is that key's default (a run finished before the key existed is the same run)."""
    out = []
    defaults = defaults or {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = defaults.get(key) if isinstance(defaults.get(key), dict) else {}
            out += _differences(va, vb, f"{prefix}{key}.", sub)
        elif va == "<absent>" and key in defaults and vb == defaults[key]:
            continue
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} there, {vb!r} now")
    return out
