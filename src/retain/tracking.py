"""Experiment tracking through accelerate's trackers: TensorBoard, Weights & Biases, MLflow.

`retain run CONFIG --report-to tensorboard` (or `report_to: [tensorboard, wandb]` in the
config) sends, on the main process:
- at start, the resolved config flattened to scalars (`train.lr`, `method_options.alpha`, ...);
- every optimiser step, `train/loss` and `train/lr` (one global step across the sequence);
- after every task, `eval/<task>` for each task of the sequence, `probe/<dataset>` (zero-shot of
  the concept-forgetting datasets, or EMT score of an MLLM's held-out datasets) and `task_index`;
- at the end, `metrics/MFT`, `metrics/MFN`, `metrics/MAA`, `metrics/BWT`, `metrics/forgetting`
  and the concept-forgetting mean deltas.

TensorBoard event files go to `<run>/tracking/<name>/`. wandb and MLflow read their own
settings (project, tracking URI, API key) from the environment, as they document; retain
never writes a key anywhere.
"""

from __future__ import annotations

import importlib.util

from retain.errors import RetainError, suggest

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def trackers(value) -> list[str]:
    """The tracker names of a `report_to` value ("", "tensorboard", "tensorboard,wandb" or a list), checked."""
    names = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    names = [n.strip() for n in names if n and n.strip() and n.strip() != "none"]
    for n in names:
        if n not in PACKAGES:
            raise RetainError(f"report_to: unknown tracker {n!r}.{suggest(n, PACKAGES)} "
                              f"Use {', '.join(PACKAGES)} (or several, comma-separated).")
        if importlib.util.find_spec(PACKAGES[n]) is None:
            raise RetainError(f"report_to: {n} needs the {PACKAGES[n]!r} package: pip install {PACKAGES[n]} "
                              "(or drop it from report_to).")
    return list(dict.fromkeys(names))


def flatten(config: dict, prefix: str = "") -> dict:
    """A nested config as {dotted.key: scalar}; lists and None become strings (trackers want scalars)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class Tracker:
    """Logs to the accelerator's trackers with one global step; does nothing when none are set."""

    def __init__(self, accelerator, names: list[str], project: str, run_name: str, config: dict, step: int = 0):
        self.accelerator, self.active, self.step = accelerator, bool(names), step
        if self.active:
            kwargs = {"wandb": {"name": run_name}, "mlflow": {"run_name": run_name}}
            accelerator.init_trackers(project, config=flatten(config),
                                      init_kwargs={n: kwargs[n] for n in names if n in kwargs})

    def log(self, values: dict) -> None:
        if self.active:
            self.accelerator.log({k: float(v) for k, v in values.items() if v is not None}, step=self.step)

    def log_step(self, loss: float, lr: float) -> None:
        """One optimiser step: logged, then the global step moves on."""
        self.step += 1
        self.log({"train/loss": loss, "train/lr": lr})

    def log_metrics(self, results: dict) -> None:
        values = {f"metrics/{k}": v for k, v in results["metrics"].items() if isinstance(v, (int, float))}
        for kind, d in results.get("concept_forgetting", {}).items():
            if d.get("mean_delta") is not None:
                values[f"metrics/{kind}_delta_mean"] = d["mean_delta"]
        self.log(values)

    def finish(self) -> None:
        if self.active:
            self.accelerator.end_training()
