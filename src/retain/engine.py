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

Sharded training comes from `accelerate launch --config_file configs/accelerate/<x>.yaml`
(docs/guide/gpu.md): the module, optimizer and loader of a task are prepared together (as
FSDP2 and DeepSpeed require), a step is one optimizer step over `train.batch_size` items
whatever `train.gradient_accumulation` splits it into, evaluation between tasks runs on the
sharded model (FSDP2 gathers its root for the duration, each layer gathers itself as it
runs), and checkpoints hold whole tensors.
Before the row-0 evaluation the run's memory is estimated (`retain.memory`), printed, kept in
memory.json, and a run that cannot fit the device is refused.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from retain.config import RunConfig, to_dict
from retain.errors import RetainError
from retain.intervals import evidence
from retain.io import write_json
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

    def memory_stacks(self, trained_names: list[str]) -> list:
        """The transformer stacks a training item runs through (`retain.memory.Stack`), for the
        activation part of the memory estimate; `trained_names` name the trained parameters."""
        return []

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
    """The Accelerator of a run (mixed precision, gradient accumulation, DDP, the run's
    trackers) and the tracker names; a launch that contradicts the config is refused."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin

    tc = cfg.train
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launched in ("fp16", "bf16") and launched != tc.mixed_precision:
        raise RetainError(f"accelerate was launched with mixed precision {launched} but the config says "
                          f"train.mixed_precision={tc.mixed_precision}, which retain passes on: set "
                          f"train.mixed_precision={launched}, or launch with --mixed_precision {tc.mixed_precision}.")
    names = trackers(cfg.report_to)
    # a step ends after exactly gradient_accumulation micro-batches, never early at the end of the
    # loader: the loop uses whole windows only (see `_steps`)
    plugin = GradientAccumulationPlugin(num_steps=tc.gradient_accumulation, sync_with_dataloader=False)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, gradient_accumulation_plugin=plugin,
                              log_with=names or None, project_dir=str(run.path / "tracking"),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    check_distributed(accelerator, cfg)
    return accelerator, names


def check_distributed(accelerator, cfg: RunConfig) -> None:
    """Refuse a launch that would run otherwise than it asks: processes that each run alone,
    FSDP or DeepSpeed asked for but not set up (accelerate sets them up on GPUs only), FSDP1,
    or a DeepSpeed config whose gradient accumulation disagrees with the run's."""
    from accelerate.utils import DistributedType

    state, kind = accelerator.state, accelerator.state.distributed_type
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:
        raise RetainError(f"{world} processes were launched but accelerate set each up alone (no GPU found, and "
                          "not told to use the CPU), so each would train its own copy: on a machine without GPUs "
                          "set ACCELERATE_USE_CPU=true for the launch (see docs/guide/gpu.md).")
    for flag, want, what in (("ACCELERATE_USE_FSDP", DistributedType.FSDP, "FSDP"),
                             ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED, "DeepSpeed")):
        if os.environ.get(flag, "false").lower() == "true" and kind != want:
            raise RetainError(f"The launch asks for {what} but accelerate set up {kind.value} "
                              f"({accelerator.device.type}): accelerate runs {what} on GPUs only, so this would "
                              "train unsharded copies. Launch it on GPUs, or with configs/accelerate/ddp.yaml on "
                              "CPUs (docs/guide/gpu.md).")
    if kind == DistributedType.FSDP and state.fsdp_plugin.fsdp_version != 2:
        raise RetainError("retain needs FSDP2 (fsdp_version: 2 in the accelerate config, as "
                          "configs/accelerate/fsdp.yaml): it evaluates and re-prepares the same model between "
                          "tasks, which FSDP1's wrapper modules do not allow.")
    if kind == DistributedType.DEEPSPEED:
        steps = state.deepspeed_plugin.deepspeed_config.get("gradient_accumulation_steps", "auto")
        if steps not in ("auto", cfg.train.gradient_accumulation):
            raise RetainError(f"The DeepSpeed config sets gradient_accumulation_steps {steps} but "
                              f"train.gradient_accumulation is {cfg.train.gradient_accumulation}: leave it out of "
                              "the accelerate/DeepSpeed config (or 'auto'); retain sets it from the run's config.")


def enable_gradient_checkpointing(module: torch.nn.Module, model_name: str) -> int:
    """Gradient checkpointing (non-reentrant; transformers' `activation_checkpointing_enable`,
    formerly `gradient_checkpointing_enable`) on every outermost transformers model inside
    `module` that supports it (the LM and vision tower of an MLLM, a dual encoder's towers);
    the number of models it was enabled on. A module with none is refused."""
    from transformers import PreTrainedModel

    models = [m for m in module.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]
    outer = [m for m in models if not any(o is not m and any(c is m for c in o.modules()) for o in models)]
    if not outer:
        raise RetainError(f"train.gradient_checkpointing: {model_name} holds no transformers model that supports "
                          "gradient checkpointing (supports_gradient_checkpointing); set it to false.")
    for m in outer:
        if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.2 renamed it
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return len(outer)


def check_memory(accelerator, family: Family, method: Method, cfg: RunConfig, run: RunDir,
                 known: frozenset | None = None) -> frozenset | None:
    """Estimate the run's memory per process (`retain.memory`), say it, keep it in memory.json,
    and refuse (train.memory_check) a run that cannot fit the device. Returns the trained
    parameters it counted (their ids), None when the method names them only once a task
    starts; nothing is redone when they are `known` already."""
    from retain import memory

    try:
        trained = list(dict.fromkeys(method.trainable(family.model)))
    except (LookupError, AttributeError, RetainError):  # per-task parameters, created by before_task
        return None
    ids = frozenset(id(p) for p in trained)
    if not trained or ids == known:
        return known
    names = [n for n, p in family.model.named_parameters() if id(p) in ids]
    est = memory.estimate(family.module, trained, family.memory_stacks(names), cfg.train, memory.layout_of(accelerator))
    say("\n".join(est.lines()))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes) or 1)
    budget, where = memory.device_budget(accelerator.device, local_processes=local)
    if accelerator.is_main_process:
        write_json(run.path / "memory.json", {**est.to_dict(), "device": where, "device_free_bytes": budget})
    if cfg.train.memory_check:
        memory.check_fits(est, budget, where, resident=memory.resident_bytes(family.module, accelerator.device))
    return ids


@contextlib.contextmanager
def whole(module: torch.nn.Module | None):
    """Evaluate a sharded model: FSDP2 gathers the parameters of its root (the layers gather
    their own in their forward) for the duration, so an evaluator may call a part of the model
    directly, as `generate` does (the image features before the first forward). Nothing to do
    for an unsharded model."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        FSDPModule = ()
    if not isinstance(module, FSDPModule):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def whole_tensors(module: torch.nn.Module | None, tensors_of) -> dict[str, torch.Tensor]:
    """The tensors `tensors_of()` returns, as whole CPU tensors to save: FSDP2's sharded
    DTensors gathered, and under ZeRO-3 every partitioned parameter of `module` gathered while
    `tensors_of` runs. Every process must call it (the gathers are collective)."""
    partitioned = [p for p in module.parameters() if hasattr(p, "ds_id")] if module is not None else []
    gather = contextlib.nullcontext()
    if partitioned:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)
    out = {}
    with gather:
        for k, t in tensors_of().items():
            t = t.detach()
            if hasattr(t, "full_tensor"):  # a DTensor shard
                t = t.full_tensor()
            t = t.contiguous().cpu()
            out[k] = t.clone() if partitioned else t  # ZeRO-3 takes its gathered storage back on exit
    return out


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
    if cfg.train.gradient_checkpointing and method.trains:
        enable_gradient_checkpointing(family.module, cfg.model)
    estimated = check_memory(accelerator, family, method, cfg, run) if method.trains else None
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
        if method.trains and k == first:  # once the task set the method up: the parameters it really trains
            estimated = check_memory(accelerator, family, method, cfg, run, known=estimated)
        if method.trains:
            prepared = {}  # per task (a method may have added adapters): the module as accelerate wrapped it
            optimise(accelerator, family.module, method, ctx, cfg, run, family.collate(ctx),
                     lambda batch, ctx=ctx: family.batch_loss(prepared["module"], method, batch, ctx),
                     mid_task=_inferring(method, family, family.mid_task(ctx, state, run, accelerator)),
                     on_prepare=lambda module: prepared.update(module=module))
            prepared.clear()
            accelerator.free_memory()  # the task's optimizer, scheduler and loader go with it
            family.trained(state, method)
        method.after_task(ctx)
        with method.inference(family.model), whole(family.module):
            records, values = family.point(k, state)
        state["seconds"].append(round(time.time() - start, 2))
        state["done_tasks"], state["tracker_step"] = k + 1, tracker.step
        sequence = {t.name for t in tasks}
        tracker.log({"task_index": k + 1, **{(f"eval/{n}" if n in sequence else f"probe/{n}"): v
                                             for n, v in values.items() if v is not None}})
        row = state["rows"][-1]
        model_state = whole_tensors(family.module, lambda: family.checkpoint(state))  # on every process: collective
        method_state = whole_tensors(family.module, method.state_dict)
        if accelerator.is_main_process:
            run.write_records(f"row-{k + 1}", records)
            run.commit_task(k, model_state, method_state, state)
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
        with method.inference(family.model), whole(family.module):
            evaluate(epoch, step, where)

    return call


def optimise(accelerator, module, method: Method, ctx: TaskContext, cfg: RunConfig, run: RunDir, collate,
             batch_loss, mid_task=None, on_prepare=None) -> None:
    """The gradient loop every model family shares: AdamW on `method.trainable`, linear
    warm-up then cosine, gradient clipping, a NaN check. `module` is prepared by accelerate
    together with the optimizer and the loader (FSDP2 and DeepSpeed need them together);
    `on_prepare(wrapped)` receives what it became (the DDP, FSDP or DeepSpeed wrapper) before
    the first `batch_loss(batch)`, which must run through it. `mid_task(epoch, step, where)`
    evaluates inside the task (`where`: "epoch e" or "step s"): after each full epoch
    (1-based) with `eval.every_epoch`, and every `eval.every_steps` optimizer steps; never
    after the last step (that point is the task's row) and never twice at one step. Only
    the method's parameters require gradients meanwhile; every parameter's flag is put back afterwards."""
    model = ctx.model
    before = {n: p.requires_grad for n, p in model.named_parameters()}  # by name: FSDP2 swaps in new parameters
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(dict.fromkeys(method.trainable(model)))
    if not params:
        raise RetainError(f"Method {method.name!r} gives the optimiser no parameters to train.")
    for p in params:
        p.requires_grad_(True)
    try:
        _steps(accelerator, module, method, ctx, cfg, run, collate, batch_loss, params, mid_task, on_prepare)
    finally:
        for n, p in model.named_parameters():
            if n in before:
                p.requires_grad_(before[n])


def _steps(accelerator, module, method, ctx, cfg, run, collate, batch_loss, params, mid_task, on_prepare) -> None:
    tc = cfg.train
    k = tc.gradient_accumulation
    micro = max(1, tc.batch_size // (accelerator.num_processes * k))  # items per process per micro-batch
    n, name = len(ctx.train), ctx.task.name
    loader = torch.utils.data.DataLoader(range(n), batch_size=micro, shuffle=True, collate_fn=collate,
                                         drop_last=n > micro, generator=torch.Generator().manual_seed(ctx.seed))
    optimizer = torch.optim.AdamW(params, lr=tc.lr * method.lr_scale, weight_decay=tc.weight_decay)
    if accelerator.state.deepspeed_plugin is not None:  # DeepSpeed clips itself: give it train.grad_clip
        accelerator.state.deepspeed_plugin.fill_match("gradient_clipping", must_match=False,
                                                      gradient_clipping=tc.grad_clip)
    wrapped, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    if on_prepare is not None:
        on_prepare(wrapped)
    live = [p for group in optimizer.param_groups for p in group["params"]]  # FSDP2's shards, not the originals
    if getattr(accelerator, "is_fsdp2", False) and not all(hasattr(p, "full_tensor") for p in live):
        raise RetainError(f"Method {method.name!r} added parameters to the model after FSDP sharded it (before task "
                          f"{ctx.index + 1}, {name!r}); FSDP would neither shard nor synchronise them. Run it with "
                          "configs/accelerate/ddp.yaml or a DeepSpeed config.")
    per_epoch = len(loader) // k  # whole steps only: the last micro-batches of an epoch that make no step are left
    if per_epoch == 0:
        raise RetainError(f"Task {name!r} has {n} training items: {len(loader)} micro-batch(es) of {micro} per "
                          f"process, fewer than the {k} one step accumulates (train.gradient_accumulation). Lower "
                          "train.gradient_accumulation or train.batch_size, or train on more items.")
    total = tc.epochs * per_epoch
    if tc.max_steps:
        if total < tc.max_steps:  # a cap nobody sees is a setting nobody documented: say it, and log it
            capped = (f"[{method.name}] {name}: {total} steps ({tc.epochs} epoch(s) of {per_epoch} batches), fewer "
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
        used, losses = 0, []
        for batch in loader:
            if step >= total or used == per_epoch * k:
                break
            used += 1
            with accelerator.accumulate(wrapped):  # DDP/FSDP sync and the optimizer step only on a window's last
                loss = batch_loss(batch)
                value = loss.item()  # one device sync per micro-batch, for the check, the bar and the trackers
                if not math.isfinite(value):
                    raise RetainError(
                        f"The loss became {value} at step {step + 1} of task {name!r} "
                        f"(method {method.name!r}, lr {tc.lr}). Lower train.lr or check the data. "
                        f"Every finished task is kept in {run.path}; start a run with the fixed config under another name."
                    )
                accelerator.backward(loss)  # divided by k: the window's gradient is the mean over its items
                if accelerator.sync_gradients and tc.grad_clip:
                    accelerator.clip_grad_norm_(live, tc.grad_clip)
                optimizer.step()  # accelerate's optimizer steps and zeroes only when the window is complete
                optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            if not accelerator.sync_gradients:
                continue
            schedule.step()
            step += 1
            value, losses = sum(losses) / len(losses), []
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
