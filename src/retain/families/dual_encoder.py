"""The dual-encoder family (CLIP-style models) in the continual engine.

The model is an `ImageClassifier`: the image tower with one head per task, initialised
from the text tower's zero-shot class embeddings. A point after each task is one row of
the accuracy matrix (every task through its own head) and the concept-forgetting probes:
zero-shot accuracy with the pre-trained text tower's head on datasets outside the
sequence, and linear-probe accuracy before training and after the last task.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import torch

from retain import metrics
from retain.config import RunConfig, to_dict
from retain.data import load_task
from retain.engine import Family, run_continual
from retain.errors import RetainError
from retain.eval.classification import linear_probe, zero_shot
from retain.methods.base import Method, TaskContext
from retain.registry import build_info, load_dual_encoder
from retain.models.classifier import ImageClassifier
from retain.rundir import RunDir


class DualEncoderFamily(Family):
    name = "dual_encoder"

    def check(self) -> None:
        cfg = self.cfg
        if not cfg.sequence:
            raise RetainError("The config's `sequence` is empty: name at least one task to train on.")
        odd = [s for s in [*cfg.sequence, *cfg.probes] if not isinstance(s, str)]
        if odd:
            raise RetainError(f"A dual-encoder run names its tasks as strings; got {odd[0]!r} (conversation-file "
                              "tasks are for MLLM runs).")
        both = sorted(set(cfg.sequence) & set(cfg.probes))
        if both:
            raise RetainError(f"{both} are both in `sequence` and in `probes`: concept-forgetting probes must lie "
                              "outside the sequence.")
        inside = [k for k in ("every_epoch", "every_steps") if getattr(cfg.eval, k)]
        if inside:
            raise RetainError(f"eval.{inside[0]} evaluates inside a task in MLLM runs only; a dual-encoder run is "
                              "evaluated after every task: remove it.")

    def load(self, accelerator, method: Method) -> None:
        cfg = self.cfg
        with accelerator.main_process_first():  # one process converts data and builds the zoo model
            self.tasks = [load_task(n) for n in cfg.sequence]
            self.probes = [load_task(n) for n in cfg.probes]
            encoder = load_dual_encoder(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.model = self.module = ImageClassifier(encoder, self.tasks).to(accelerator.device)
        method.setup(self.model)
        # the pre-trained model's class embeddings at its temperature: confidences for calibration
        scale = encoder.logit_scale.detach().exp()
        self.probe_heads = {p.name: encoder.zero_shot_head(p.class_names, p.templates) * scale for p in self.probes}
        limit = cfg.train.train_limit or None
        self.train_splits = [t.split("train").subset(limit, seed=cfg.seed) for t in self.tasks]

    def fingerprints(self) -> dict[str, str]:
        return {t.name: t.fingerprint for t in [*self.tasks, *self.probes]}

    def first_point(self, accelerator) -> tuple[dict, list[dict]]:
        row, zs, lp, records = evaluate_pretrained(self.model, self.tasks, self.probes, self.probe_heads, self.cfg)
        return {"done_tasks": 0, "rows": [row], "probe_zero_shot": [zs], "probe_linear": [lp], "seconds": []}, records

    def restore(self, state: dict, checkpoint: tuple[dict, dict] | None, method: Method, run: RunDir) -> None:
        if checkpoint:
            self.model.load_state_dict(checkpoint[0])
            method.load_state_dict(checkpoint[1])

    def collate(self, ctx: TaskContext):
        encoder, split, name = ctx.model.encoder, ctx.train, ctx.task.name

        def collate(indices):
            idx = np.asarray(indices)
            return {"index": torch.from_numpy(idx), "pixel_values": encoder.preprocess(split.images[idx]),
                    "labels": torch.from_numpy(split.labels[idx]).long(), "heads": [name] * len(idx)}

        return collate

    def batch_loss(self, wrapped, method: Method, batch: dict, ctx: TaskContext) -> torch.Tensor:
        return step_loss(wrapped, method, batch, ctx)

    def point(self, k: int, state: dict) -> tuple[list[dict], dict[str, float]]:
        last = k == len(self.tasks) - 1
        row, zs, lp, records = evaluate(self.model, self.tasks, self.probes, self.probe_heads, self.cfg, with_lp=last)
        state["rows"].append(row)
        state["probe_zero_shot"].append(zs)
        state["probe_linear"].append(lp)
        return records, {**{t.name: a for t, a in zip(self.tasks, row)}, **zs}

    def checkpoint(self, state: dict) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def memory_stacks(self, trained_names: list[str]) -> list:
        from retain.memory import dual_encoder_stacks

        enc = self.model.encoder
        return dual_encoder_stacks(enc.vision.config, getattr(enc.text, "config", None), trained_names)

    def results(self, method_name: str, state: dict, label: str | None) -> dict:
        return assemble_results(self.cfg, method_name, self.tasks, self.probes, state, label=label)


def run_method(cfg: RunConfig, method_name: str, resume: bool = False, label: str | None = None) -> dict:
    """Train `method_name` through `cfg.sequence` on a dual encoder, evaluate, return results.json's content."""
    return run_continual(DualEncoderFamily(cfg), method_name, resume=resume, label=label)


def step_loss(wrapped, method: Method, batch: dict, ctx: TaskContext) -> torch.Tensor:
    """The loss of one training batch: the method's task loss plus its extra terms."""
    batch = method.extend_batch(batch, ctx)
    text = method.text_inputs(batch, ctx)
    outputs = wrapped(batch["pixel_values"], batch["heads"], taps=method.taps, text=text)
    return method.task_loss(batch, outputs, ctx) + method.loss(batch, outputs, ctx)


_PRETRAINED_ROWS: dict[str, tuple] = {}


def evaluate_pretrained(model: ImageClassifier, tasks, probes, probe_heads, cfg: RunConfig):
    """Row 0 (before any training), measured once per process for all methods of a config.

    Every method starts from the same pre-trained model with zero-shot heads, so the row
    is the same; the key holds everything it depends on.
    """
    key = json.dumps([cfg.model, cfg.sequence, cfg.probes, to_dict(cfg.eval), cfg.seed])
    if key not in _PRETRAINED_ROWS:
        _PRETRAINED_ROWS[key] = evaluate(model, tasks, probes, probe_heads, cfg, with_lp=True)
    return copy.deepcopy(_PRETRAINED_ROWS[key])


def evaluate(model: ImageClassifier, tasks, probes, probe_heads, cfg: RunConfig, with_lp: bool):
    """One row of the accuracy matrix, the probes' zero-shot (and linear-probe) accuracy."""
    limit = cfg.eval.limit or None
    row, records = [], []
    for task in tasks:
        r = zero_shot(model.encoder, task, limit=limit, head=model.head(task.name).detach())
        row.append(r.accuracy)
        records += r.records(task.name, "task_head")
    zs, lp = {}, None
    for probe in probes:
        r = zero_shot(model.encoder, probe, limit=limit, head=probe_heads[probe.name], pretrained_head=True)
        zs[probe.name] = r.accuracy
        records += r.records(probe.name, "probe_zero_shot")
    if with_lp and cfg.eval.linear_probe and probes:
        lp = {}
        for probe in probes:
            r = linear_probe(model.encoder, probe, limit=cfg.eval.probe_limit or None, seed=cfg.seed)
            lp[probe.name] = r.accuracy
            records += r.records(probe.name, "probe_linear")
    return row, zs, lp, records


def assemble_results(cfg: RunConfig, method_name: str, tasks, probes, state: dict, label: str | None = None) -> dict:
    A = np.asarray(state["rows"])
    out = {
        "method": method_name,
        "label": label or method_name,
        "model": cfg.model,
        "seed": cfg.seed,
        "sequence": [t.name for t in tasks],
        "probes": [p.name for p in probes],
        "accuracy_matrix": A.tolist(),
        "metrics": metrics.summary(A),
        "final_task_accuracy": dict(zip([t.name for t in tasks], A[-1].tolist())),
        "probe_zero_shot_curve": state["probe_zero_shot"],
        "model_build": build_info(cfg.model),  # which zoo build (weights' sha256) the numbers come from
        "concept_forgetting": {},
    }
    zs_before, zs_after = state["probe_zero_shot"][0], state["probe_zero_shot"][-1]
    cf = {"zero_shot": metrics.delta_summary(zs_before, zs_after)}
    lp_before, lp_after = state["probe_linear"][0], state["probe_linear"][-1]
    if lp_before and lp_after:
        cf["linear_probe"] = metrics.delta_summary(lp_before, lp_after)
    out["concept_forgetting"] = cf
    return out
