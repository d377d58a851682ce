"""The continual engine: one outer loop for every model family, and the gradient loop.

For each task of the sequence: the method's `before_task`, gradient steps (AdamW,
warm-up then cosine, gradient clipping, a NaN check), `after_task`, then one evaluation
point (a row of the accuracy matrix; row 0 is measured before any training), evaluated
under the method's `inference` hook (how routed methods answer). After every
task the run directory gets the point's records, then a checkpoint, then state.json
pointing at it, so `--resume` continues a killed run to the same results and refuses one
whose data changed. What differs between model families (what is loaded, how a batch
becomes a loss, how a point is evaluated, which parameters a checkpoint holds, what
results.json says) comes from a `Family` (retain.families).

A finished task's optimizer, scheduler and data loader are released from accelerate, and
every parameter's `requires_grad` is put back as it was, so memory stays flat across tasks.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from retain.config import RunConfig, to_dict
from retain.errors import RetainError
from retain.intervals import evidence
from retain.methods import create_method, options_dict
from retain.methods.base import Method, TaskContext
from retain.progress import bar, say, time_left
from retain.rundir import RunDir, run_path
from retain.schedule import warmup_cosine
from retain.tracking import Tracker, trackers


class Family(ABC):
    """What a model family supplies to the engine. The engine calls, in order: `check`,
    `load`, then `restore` (a resume) or `first_point` (a fresh run), and per task
    `collate`/`batch_loss` while training (and `mid_task` for the points inside a task),
    `trained` after it, `point` for its row,
    `checkpoint`; `results` at the end."""

    name: ClassVar[str] = ""
    resolved: ClassVar[dict] = {}
    """keys that override the config's in the run's resolved config.yaml"""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.model: Any = None  # what methods set up, train and evaluate (TaskContext.model)
        self.module: torch.nn.Module | None = None  # the torch module accelerate prepares for training
        self.tasks: list = []
        self.train_splits: list = []

    def check(self) -> None:
        """Refuse a bad config before anything loads."""

    @abstractmethod
    def load(self, accelerator, method: Method) -> None:
        """Load tasks and model, set the method up, and pick each task's training items."""

    @abstractmethod
    def fingerprints(self) -> dict[str, str]:
        """Every evaluated task's items: name -> `fingerprint` (a resume refuses changed data)."""

    @abstractmethod
    def first_point(self, accelerator) -> tuple[dict, list[dict]]:
        """state.json's first content (row 0 and what else the family tracks) and its records."""

    @abstractmethod
    def restore(self, state: dict, checkpoint: tuple[dict, dict] | None, method: Method, run: RunDir) -> None:
        """A resume: put the last checkpoint (model tensors, method tensors; None before the
        first task finished) back into the model and the method, and tidy `state`."""

    @abstractmethod
    def collate(self, ctx: TaskContext):
        """indices -> a training batch of task `ctx.index`."""

    @abstractmethod
    def batch_loss(self, wrapped, method: Method, batch: dict, ctx: TaskContext) -> torch.Tensor:
        """The loss of one training batch through `wrapped` (the task loss plus the method's terms)."""

    def mid_task(self, ctx: TaskContext, state: dict, run: RunDir, accelerator):
        """A callback `evaluate(epoch, step, where)` for the evaluation points inside a task
        (`eval.every_epoch`, `eval.every_steps`), or None when the family has none."""
        return None

    def trained(self, state: dict, method: Method) -> None:
        """After a task's gradient steps: note what the checkpoint must hold."""

    @abstractmethod
    def point(self, k: int, state: dict) -> tuple[list[dict], dict[str, float]]:
        """Evaluate after task `k`, append the row (and the rest) to `state`; return the
        records and the values to log (name -> score; None when unscored)."""

    @abstractmethod
    def checkpoint(self, state: dict) -> dict[str, torch.Tensor]:
        """The model tensors to save after a task."""

    @abstractmethod
    def results(self, method_name: str, state: dict, label: str | None) -> dict:
        """results.json's content (before the intervals the engine adds)."""


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


def run_continual(family: Family, method_name: str, resume: bool = False, label: str | None = None) -> dict:
    """Train `method_name` through the config's sequence on `family`'s model, evaluate after
    every task, and return results.json's content."""
    cfg = family.cfg
    method = create_method(method_name, cfg.method_args.get(method_name), family=family.name)
    family.check()
    run = RunDir(run_path(cfg, method_name, label))
    resolved = {**to_dict(cfg), **family.resolved, "method": method_name, "method_options": options_dict(method)}
    status = run.prepare(resolved, resume)
    if status == "done":
        say(f"[{method_name}] already finished in {run.path}; nothing recomputed")
        return run.results()

    accelerator, names = make_accelerator(cfg, run)
    seed_everything(cfg.seed)
    family.load(accelerator, method)
    tasks = family.tasks
    state = run.load_state() if status == "resume" else None
    data = family.fingerprints()
    if state is not None:
        run.check_data(state, data)
        checkpoint = run.load_checkpoint(state["done_tasks"] - 1) if state["done_tasks"] else None
        family.restore(state, checkpoint, method, run)
        if checkpoint:
            say(f"[{method_name}] resuming after task {state['done_tasks']} of {len(tasks)} from {run.path}")
    else:
        with method.inference(family.model):  # routed methods answer through their own parts
            state, records = family.first_point(accelerator)
        state["data"] = data
        if accelerator.is_main_process:
            run.write_records("row-0", records)
            run.save_state(state)
    tracker = Tracker(accelerator, names, cfg.name, method_name, resolved, step=state.get("tracker_step", 0))

    first = state["done_tasks"]  # time left is estimated from tasks trained in this process
    for k in range(state["done_tasks"], len(tasks)):
        start = time.time()
        task_seed = cfg.seed + 1000 * (k + 1)
        seed_everything(task_seed)
        ctx = TaskContext(task=tasks[k], index=k, train=family.train_splits[k], model=family.model, tasks=tasks,
                          train_splits=family.train_splits, device=accelerator.device, seed=task_seed,
                          batch_size=cfg.train.batch_size, tracker=tracker)
        method.before_task(ctx)
        if method.trains:
            wrapped = accelerator.prepare(family.module)  # per task: a method may have added adapters
            optimise(accelerator, wrapped, method, ctx, cfg, run, family.collate(ctx),
                     lambda batch, ctx=ctx, wrapped=wrapped: family.batch_loss(wrapped, method, batch, ctx),
                     mid_task=_inferring(method, family, family.mid_task(ctx, state, run, accelerator)))
            del wrapped
            accelerator.free_memory()  # the task's optimizer, scheduler and loader go with it
            family.trained(state, method)
        method.after_task(ctx)
        with method.inference(family.model):
            records, values = family.point(k, state)
        state["seconds"].append(round(time.time() - start, 2))
        state["done_tasks"], state["tracker_step"] = k + 1, tracker.step
        sequence = {t.name for t in tasks}
        tracker.log({"task_index": k + 1, **{(f"eval/{n}" if n in sequence else f"probe/{n}"): v
                                             for n, v in values.items() if v is not None}})
        row = state["rows"][-1]
        if accelerator.is_main_process:
            run.write_records(f"row-{k + 1}", records)
            run.commit_task(k, family.checkpoint(state), method.state_dict(), state)
            run.log(f"task {k + 1}/{len(tasks)} {tasks[k].name}: row "
                    f"{np.round(np.asarray(row, dtype=float), 4).tolist()}")
        accelerator.wait_for_everyone()
        say(f"[{method_name}] after task {k + 1}/{len(tasks)} ({tasks[k].name}): "
            + ", ".join(f"{n} {'unscored' if v is None else f'{v:.3f}'}" for n, v in values.items())
            + time_left(state["seconds"][-(k + 1 - first):], len(tasks) - k - 1))

    results = family.results(method_name, state, label)
    tracker.log_metrics(results)
    tracker.finish()
    if accelerator.is_main_process:
        results.update(evidence(run.path, results))  # 95% intervals and calibration, from the per-item records
        run.write_results(results)
        run.log(f"finished: {results['metrics']}")
    accelerator.wait_for_everyone()
    return results


def _inferring(method: Method, family: Family, evaluate):
    """`evaluate` under the method's inference hook (None stays None)."""
    if evaluate is None:
        return None

    def call(epoch: int, step: int, where: str) -> None:
        with method.inference(family.model):
            evaluate(epoch, step, where)

    return call


def optimise(accelerator, wrapped, method: Method, ctx: TaskContext, cfg: RunConfig, run: RunDir, collate,
             batch_loss, mid_task=None) -> None:
    """The gradient loop every model family shares: AdamW on `method.trainable`, linear
    warm-up then cosine, gradient clipping, a NaN check. `mid_task(epoch, step, where)`
    evaluates inside the task (`where`: "epoch e" or "step s"): after each full epoch
    (1-based) with `eval.every_epoch`, and every `eval.every_steps` optimizer steps; never
    after the last step (that point is the task's row) and never twice at one step. Only
    the method's parameters require gradients meanwhile; every parameter's flag is put back afterwards."""
    model = ctx.model
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in before:
        p.requires_grad_(False)
    params = list(dict.fromkeys(method.trainable(model)))
    if not params:
        raise RetainError(f"Method {method.name!r} gives the optimiser no parameters to train.")
    for p in params:
        p.requires_grad_(True)
    try:
        _steps(accelerator, wrapped, method, ctx, cfg, run, collate, batch_loss, params, mid_task)
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def _steps(accelerator, wrapped, method, ctx, cfg, run, collate, batch_loss, params, mid_task) -> None:
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
    every = cfg.eval.every_steps if mid_task is not None else 0
    by_epoch = mid_task is not None and cfg.eval.every_epoch

    def evaluate(epoch: int, step: int, where: str) -> None:
        wrapped.eval()
        mid_task(epoch, step, where)
        wrapped.train()

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
            if every and step % every == 0 and step < total:  # the last step is evaluated as the task's row
                evaluate(epoch, step, f"step {step}")
        epoch += 1
        if by_epoch and step < total and not (every and step % every == 0):
            evaluate(epoch, step, f"epoch {epoch}")
    progress.close()
    wrapped.eval()
