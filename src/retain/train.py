"""The continual trainer: one loop for every method, on `accelerate`.

For each task of the Sequence: the method's `before_task`, gradient steps (AdamW,
warm-up then cosine, gradient clipping), `after_task`, then evaluation of every task of
the Sequence (one row of the accuracy matrix; row 0 is measured before any training)
and of the concept-forgetting probes (zero-shot accuracy with the pre-trained text
encoder's head, and linear-probe accuracy) on datasets outside the Sequence. A
checkpoint is written at every task boundary, so `--resume` continues a killed run to
the same results.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import time

import numpy as np
import torch

from retain import metrics, zoo
from retain.config import RunConfig, to_dict
from retain.data import load_task
from retain.errors import RetainError
from retain.eval.classification import linear_probe, zero_shot
from retain.intervals import evidence
from retain.methods.base import Method, TaskContext, create_method, options_dict
from retain.models import load_dual_encoder
from retain.models.classifier import ImageClassifier
from retain.progress import bar, say, time_left
from retain.rundir import RunDir, run_path
from retain.schedule import warmup_cosine
from retain.tracking import Tracker, trackers


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(cfg: RunConfig, run: RunDir):
    """The Accelerator of a run (mixed precision, DDP, the run's trackers) and the tracker names."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    names = trackers(cfg.report_to)
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=names or None,
                              project_dir=str(run.path / "tracking"),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    return accelerator, names


def run_method(cfg: RunConfig, method_name: str, resume: bool = False, label: str | None = None) -> dict:
    """Train `method_name` through `cfg.sequence`, evaluate, and return results.json's content."""
    method = create_method(method_name, cfg.method_args.get(method_name), family="dual_encoder")
    run = RunDir(run_path(cfg, method_name, label))
    resolved = {**to_dict(cfg), "method": method_name, "method_options": options_dict(method)}
    status = run.prepare(resolved, resume)
    if status == "done":
        say(f"[{method_name}] already finished in {run.path}; nothing recomputed")
        return run.results()

    accelerator, names = make_accelerator(cfg, run)
    seed_everything(cfg.seed)
    _check_tasks(cfg)
    with accelerator.main_process_first():  # one process converts data and builds the zoo model
        tasks = [load_task(n) for n in cfg.sequence]
        probes = [load_task(n) for n in cfg.probes]
        encoder = load_dual_encoder(cfg.model, trust_remote_code=cfg.trust_remote_code)
    model = ImageClassifier(encoder, tasks).to(accelerator.device)
    method.setup(model)
    # the pre-trained model's class embeddings at its temperature: confidences for calibration
    scale = encoder.logit_scale.detach().exp()
    probe_heads = {p.name: encoder.zero_shot_head(p.class_names, p.templates) * scale for p in probes}
    limit = cfg.train.train_limit or None
    train_splits = [t.split("train").subset(limit, seed=cfg.seed) for t in tasks]

    state = run.load_state() if status == "resume" else None
    data = {t.name: t.fingerprint for t in [*tasks, *probes]}
    if state is not None:
        run.check_data(state, data)
    if state and state["done_tasks"] > 0:
        model_state, method_state = run.load_checkpoint(state["done_tasks"] - 1)
        model.load_state_dict(model_state)
        method.load_state_dict(method_state)
        say(f"[{method_name}] resuming after task {state['done_tasks']} of {len(tasks)} from {run.path}")
    if state is None:
        row, zs, lp, records = evaluate_pretrained(model, tasks, probes, probe_heads, cfg)
        state = {"done_tasks": 0, "rows": [row], "probe_zero_shot": [zs], "probe_linear": [lp], "seconds": [],
                 "data": data}
        if accelerator.is_main_process:
            run.write_records("row-0", records)
            run.save_state(state)
    wrapped = accelerator.prepare(model)
    tracker = Tracker(accelerator, names, cfg.name, method_name, resolved, step=state.get("tracker_step", 0))

    first = state["done_tasks"]  # time left is estimated from tasks trained in this process
    for k in range(state["done_tasks"], len(tasks)):
        start = time.time()
        task_seed = cfg.seed + 1000 * (k + 1)
        seed_everything(task_seed)
        ctx = TaskContext(task=tasks[k], index=k, train=train_splits[k], model=model, tasks=tasks,
                          train_splits=train_splits, device=accelerator.device, seed=task_seed,
                          batch_size=cfg.train.batch_size, tracker=tracker)
        method.before_task(ctx)
        if method.trains:
            train_task(accelerator, wrapped, method, ctx, cfg, run)
        method.after_task(ctx)
        last = k == len(tasks) - 1
        row, zs, lp, records = evaluate(model, tasks, probes, probe_heads, cfg, with_lp=last)
        state["rows"].append(row)
        state["probe_zero_shot"].append(zs)
        state["probe_linear"].append(lp)
        state["seconds"].append(round(time.time() - start, 2))
        state["done_tasks"], state["tracker_step"] = k + 1, tracker.step
        tracker.log({"task_index": k + 1, **{f"eval/{t.name}": a for t, a in zip(tasks, row)},
                     **{f"probe/{p}": v for p, v in zs.items()}})
        if accelerator.is_main_process:
            run.write_records(f"row-{k + 1}", records)
            run.commit_task(k, model.state_dict(), method.state_dict(), state)
            run.log(f"task {k + 1}/{len(tasks)} {tasks[k].name}: row {np.round(row, 4).tolist()}")
        accelerator.wait_for_everyone()
        say(f"[{method_name}] after task {k + 1}/{len(tasks)} ({tasks[k].name}): "
            + ", ".join(f"{t.name} {a:.3f}" for t, a in zip(tasks, row))
            + time_left(state["seconds"][-(k + 1 - first):], len(tasks) - k - 1))
        if os.environ.get("RETAIN_KILL_AFTER_TASK") == str(k + 1):  # used by the resume test
            os.kill(os.getpid(), signal.SIGKILL)

    results = assemble_results(cfg, method_name, tasks, probes, state, label=label)
    tracker.log_metrics(results)
    tracker.finish()
    if accelerator.is_main_process:
        results.update(evidence(run.path, results))  # 95% intervals and calibration, from the per-item records
        run.write_results(results)
        run.log(f"finished: {results['metrics']}")
    accelerator.wait_for_everyone()
    return results


def _check_tasks(cfg: RunConfig) -> None:
    if not cfg.sequence:
        raise RetainError("The config's `sequence` is empty: name at least one task to train on.")
    odd = [s for s in [*cfg.sequence, *cfg.probes] if not isinstance(s, str)]
    if odd:
        raise RetainError(f"A dual-encoder run names its tasks as strings; got {odd[0]!r} (conversation-file tasks "
                          "are for MLLM runs).")
    both = sorted(set(cfg.sequence) & set(cfg.probes))
    if both:
        raise RetainError(f"{both} are both in `sequence` and in `probes`: concept-forgetting probes must lie outside the sequence.")


def train_task(accelerator, wrapped, method: Method, ctx: TaskContext, cfg: RunConfig, run: RunDir) -> None:
    """Gradient steps on one image-classification task."""
    model, split, name = ctx.model, ctx.train, ctx.task.name

    def collate(indices):
        idx = np.asarray(indices)
        return {"index": torch.from_numpy(idx), "pixel_values": model.encoder.preprocess(split.images[idx]),
                "labels": torch.from_numpy(split.labels[idx]).long(), "heads": [name] * len(idx)}

    optimise(accelerator, wrapped, method, ctx, cfg, run, collate, lambda batch: step_loss(wrapped, method, batch, ctx))


def optimise(accelerator, wrapped, method: Method, ctx: TaskContext, cfg: RunConfig, run: RunDir, collate,
             batch_loss, on_epoch=None) -> None:
    """The optimisation loop every model family shares: AdamW on `method.trainable`,
    linear warm-up then cosine, gradient clipping, a NaN check; `on_epoch(e)` after each
    full epoch (1-based)."""
    model = ctx.model
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(dict.fromkeys(method.trainable(model)))
    if not params:
        raise RetainError(f"Method {method.name!r} gives the optimiser no parameters to train.")
    for p in params:
        p.requires_grad_(True)
    tc = cfg.train
    per_process = max(1, tc.batch_size // accelerator.num_processes)
    n, name = len(ctx.train), ctx.task.name
    loader = torch.utils.data.DataLoader(range(n), batch_size=per_process, shuffle=True, collate_fn=collate,
                                         drop_last=n > per_process, generator=torch.Generator().manual_seed(ctx.seed))
    optimizer = torch.optim.AdamW(params, lr=tc.lr * method.lr_scale, weight_decay=tc.weight_decay)
    optimizer, loader = accelerator.prepare(optimizer, loader)
    total = tc.epochs * len(loader)
    if tc.max_steps:
        if total < tc.max_steps:  # a cap nobody sees is a setting nobody documented: say it, and log it
            capped = (f"[{method.name}] {name}: {total} steps ({tc.epochs} epoch(s) of {len(loader)} batches), fewer "
                      f"than train.max_steps {tc.max_steps}; raise train.epochs to train {tc.max_steps} steps")
            say(capped)
            if accelerator.is_main_process:
                run.log(capped)
        total = min(total, tc.max_steps)
    warmup = min(tc.warmup_steps, total)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total))
    wrapped.train()
    step = epoch = 0
    progress = bar(total=total, desc=f"{method.name} on {name} ({ctx.index + 1}/{len(ctx.tasks)})")
    while step < total:
        for batch in loader:
            if step >= total:
                break
            loss = batch_loss(batch)
            value = loss.item()  # one device sync per step, for the check, the bar and the trackers
            if not math.isfinite(value):
                raise RetainError(
                    f"The loss became {value} at step {step + 1} of task {name!r} "
                    f"(method {method.name!r}, lr {tc.lr}). Lower train.lr or check the data. "
                    f"Every finished task is kept in {run.path}; start a run with the fixed config under another name."
                )
            accelerator.backward(loss)
            if tc.grad_clip:
                accelerator.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{value:.3f}")
            if ctx.tracker is not None:
                ctx.tracker.log_step(value, schedule.get_last_lr()[0])
        epoch += 1
        if on_epoch is not None and step < total:  # the last epoch is evaluated as the task's row
            wrapped.eval()
            on_epoch(epoch)
            wrapped.train()
    progress.close()
    wrapped.eval()
    for p in model.parameters():
        p.requires_grad_(True)


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
        r = zero_shot(model.encoder, probe, limit=limit, head=probe_heads[probe.name])
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
        "model_build": zoo.build_info(cfg.model),  # which zoo build (weights' sha256) the numbers come from
        "concept_forgetting": {},
    }
    zs_before, zs_after = state["probe_zero_shot"][0], state["probe_zero_shot"][-1]
    cf = {"zero_shot": delta_summary(zs_before, zs_after)}
    lp_before, lp_after = state["probe_linear"][0], state["probe_linear"][-1]
    if lp_before and lp_after:
        cf["linear_probe"] = delta_summary(lp_before, lp_after)
    out["concept_forgetting"] = cf
    return out


def delta_summary(before: dict, after: dict) -> dict:
    d = metrics.concept_forgetting(before, after)
    return {"before": before, "after": after, "delta": d,
            "mean_delta": float(np.mean(list(d.values()))) if d else None}
