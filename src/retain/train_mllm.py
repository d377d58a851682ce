"""The continual trainer for LLaVA-style MLLMs, on the same loop as the dual-encoder one.

For each task of the Sequence (instruction tasks, or classification datasets posed as EMT
questions, see `retain.data.instruct`): the method's `before_task`, gradient steps on the
answer tokens, `after_task`, then an evaluation point: every sequence task scored with its
scorer and every `eval.emt_tasks` dataset with EMT (one row of the accuracy matrix; row 0
is measured before any training). With `eval.every_epoch`, an evaluation point also follows every epoch, which
is EMT's fine-tuning study. Checkpoints hold the parameters the method trains, so
`--resume` continues a killed run from its last finished task.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import torch

from retain import metrics, zoo
from retain.config import RunConfig, to_dict
from retain.data import load_task
from retain.data.instruct import load_instruction_task, task_name
from retain.errors import RetainError
from retain.eval.emt import EMT_TEMPLATE, evaluate_emt
from retain.eval.instruct import evaluate_instruction
from retain.methods.base import Method, TaskContext, create_method, options_dict
from retain.progress import say, time_left
from retain.rundir import RunDir, run_path
from retain.tracking import Tracker
from retain.train import delta_summary, make_accelerator, optimise, seed_everything

TRAIN_MODES = ("rule", "likelihood")
DEFAULT_ENCODERS = {"mini-llava": "mini-clip", "mini-llava-wings": "mini-clip"}


def check_config(cfg: RunConfig) -> None:
    if not cfg.sequence:
        raise RetainError("The config's `sequence` is empty: name at least one task to train on.")
    names = [task_name(s) for s in cfg.sequence]
    if len(set(names)) != len(names):
        raise RetainError(f"The sequence names a task twice ({names}): give every task its own name.")
    if cfg.probes:
        raise RetainError("`probes` are zero-shot probes of dual encoders; an MLLM run evaluates held-out datasets "
                          "with EMT: move them to eval.emt_tasks and set probes: [].")
    if cfg.eval.emt_mode not in TRAIN_MODES:
        raise RetainError(f"eval.emt_mode {cfg.eval.emt_mode!r} is not available in training runs: use "
                          f"{' or '.join(TRAIN_MODES)} (the LLM judge is for `retain eval`).")
    if cfg.eval.judge_url:  # a refused key fails here, before any model is loaded
        from retain.llm import check_key

        check_key(cfg.eval.judge_url, cfg.eval.judge_key_env, url_trusted=False, setting="eval.judge_url")


def run_mllm_method(cfg: RunConfig, method_name: str, resume: bool = False, label: str | None = None) -> dict:
    """Train `method_name` through `cfg.sequence` on an MLLM, evaluate, return results.json's content."""
    from retain.models.mllm import load_mllm

    method = create_method(method_name, cfg.method_args.get(method_name), family="mllm")
    check_config(cfg)
    run = RunDir(run_path(cfg, method_name, label))
    resolved = {**to_dict(cfg), "family": "mllm", "method": method_name, "method_options": options_dict(method)}
    status = run.prepare(resolved, resume)
    if status == "done":
        say(f"[{method_name}] already finished in {run.path}; nothing recomputed")
        return run.results()

    accelerator, names = make_accelerator(cfg, run)
    seed_everything(cfg.seed)
    template = cfg.eval.emt_template or EMT_TEMPLATE
    with accelerator.main_process_first():  # one process converts data and builds the zoo model
        tasks = [load_instruction_task(s, template) for s in cfg.sequence]
        held_out = {n: load_task(n) for n in cfg.eval.emt_tasks if n not in [t.name for t in tasks]}
        mllm = load_mllm(cfg.model, trust_remote_code=cfg.trust_remote_code)
    mllm.model.to(accelerator.device)
    method.setup(mllm)
    limit = cfg.train.train_limit or None
    train_splits = [t.split("train").subset(limit, seed=cfg.seed) for t in tasks]
    for t, split in zip(tasks, train_splits):
        check_lengths(mllm, t.name, split)
    evaluator = Evaluator(mllm, cfg, tasks, held_out, template)

    state = run.load_state() if status == "resume" else None
    data = {t.name: t.fingerprint for t in [*tasks, *held_out.values()]}
    if state is not None:
        run.check_data(state, data)
    if state and state["done_tasks"] > 0:
        params, method_state = run.load_checkpoint(state["done_tasks"] - 1)
        method.load_state_dict(method_state)  # first: it may recreate the adapters the weights belong to
        _load_parameters(mllm, params, run)
        say(f"[{method_name}] resuming after task {state['done_tasks']} of {len(tasks)} from {run.path}")
    if state is not None:  # drop the epoch points of a task that did not finish
        state["points"] = [p for p in state["points"] if p["task_index"] < state["done_tasks"]]
    else:
        point, records = evaluator.point(-1, 0, "zero-shot")
        state = {"done_tasks": 0, "rows": [evaluator.row(point)], "points": [point], "seconds": [], "data": data,
                 "trained_parameters": [], "encoder_zero_shot": _encoder_zero_shot(cfg, evaluator.emt_sources(),
                                                                                   accelerator)}
        if accelerator.is_main_process:
            run.write_records("row-0", records)
            run.save_state(state)
    tracker = Tracker(accelerator, names, cfg.name, method_name, resolved, step=state.get("tracker_step", 0))

    first = state["done_tasks"]  # time left is estimated from tasks trained in this process
    for k in range(state["done_tasks"], len(tasks)):
        start = time.time()
        task_seed = cfg.seed + 1000 * (k + 1)
        seed_everything(task_seed)
        ctx = TaskContext(task=tasks[k], index=k, train=train_splits[k], model=mllm, tasks=tasks,
                          train_splits=train_splits, device=accelerator.device, seed=task_seed,
                          batch_size=cfg.train.batch_size, tracker=tracker)
        method.before_task(ctx)

        def on_epoch(epoch: int, k=k) -> None:
            point, records = evaluator.point(k, epoch, f"{tasks[k].name} epoch {epoch}")
            state["points"].append(point)
            if accelerator.is_main_process:
                run.write_records(f"task-{k + 1}-epoch-{epoch}", records)
                run.save_state(state)

        if method.trains:
            wrapped = accelerator.prepare(mllm.model)  # again per task: a method may add adapters
            optimise(accelerator, wrapped, method, ctx, cfg, run, _collate(ctx.train, tasks[k].name),
                     lambda batch, ctx=ctx, wrapped=wrapped: batch_loss(mllm, wrapped, method, batch, ctx),
                     on_epoch=on_epoch if cfg.eval.every_epoch else None)
            trained = {id(p) for p in method.saved_parameters(mllm)}
            names = [n for n, p in mllm.named_parameters() if id(p) in trained]
            state["trained_parameters"] = sorted(set(state["trained_parameters"]) | set(names))
        method.after_task(ctx)
        point, records = evaluator.point(k, cfg.train.epochs, f"after {tasks[k].name}")
        state["rows"].append(evaluator.row(point))
        state["points"].append(point)
        state["seconds"].append(round(time.time() - start, 2))
        state["done_tasks"], state["tracker_step"] = k + 1, tracker.step
        names_in_sequence = {t.name for t in tasks}
        tracker.log({"task_index": k + 1, **{(f"eval/{n}" if n in names_in_sequence else f"probe/{n}"): a
                                             for n, a in point["accuracy"].items() if a is not None}})
        if accelerator.is_main_process:
            run.write_records(f"row-{k + 1}", records)
            named = dict(mllm.named_parameters())
            run.commit_task(k, {n: named[n] for n in state["trained_parameters"]}, method.state_dict(), state)
            run.log(f"task {k + 1}/{len(tasks)} {tasks[k].name}: row {np.round(np.asarray(state['rows'][-1], dtype=float), 4).tolist()}")
        accelerator.wait_for_everyone()
        say(f"[{method_name}] after task {k + 1}/{len(tasks)} ({tasks[k].name}): "
            + ", ".join(f"{n} {'unscored' if a is None else f'{a:.3f}'}" for n, a in point["accuracy"].items())
            + time_left(state["seconds"][-(k + 1 - first):], len(tasks) - k - 1))
        if os.environ.get("RETAIN_KILL_AFTER_TASK") == str(k + 1):  # used by the resume test
            os.kill(os.getpid(), signal.SIGKILL)

    results = assemble_results(cfg, method_name, [t.name for t in tasks], state, label=label)
    tracker.log_metrics(results)
    tracker.finish()
    if accelerator.is_main_process:
        from retain.intervals import evidence

        results.update(evidence(run.path, results))  # 95% intervals, from the per-item records
        run.write_results(results)
        run.log(f"finished: {results['metrics']}")
    accelerator.wait_for_everyone()
    return results


def _collate(split, name: str):
    def collate(indices):
        idx = list(indices)
        return {"index": torch.tensor(idx), "images": [split.images[i] for i in idx],
                "questions": [split.questions[i] for i in idx], "answers": [split.answers[i] for i in idx],
                "task": name}

    return collate


def batch_loss(mllm, wrapped, method: Method, batch: dict, ctx: TaskContext) -> torch.Tensor:
    """The loss of one batch: the answer-token cross-entropy plus the method's extra terms."""
    batch = method.extend_batch(batch, ctx)
    images = batch["images"]
    if any(i is None for i in images) and not all(i is None for i in images):
        raise RetainError(f"A training batch of task {ctx.task.name!r} mixes image and text-only items.")
    inputs = mllm.training_batch(None if images[0] is None else images, batch["questions"], batch["answers"])
    outputs = wrapped(**inputs)
    return method.task_loss(batch, outputs, ctx) + method.loss(batch, outputs, ctx)


def check_lengths(mllm, name: str, split) -> None:
    """Every training item must fit the LLM's context with room for the image tokens."""
    config = getattr(mllm.model.config, "text_config", mllm.model.config)
    context = getattr(config, "max_position_embeddings", None)
    if not context:
        return
    tok = mllm.tokenizer
    q = tok(list(split.questions), add_special_tokens=False)["input_ids"]
    a = tok(list(split.answers), add_special_tokens=False)["input_ids"]
    first = next((i for i in split.images if i is not None), None)
    # the chat template and the image tokens around an empty question
    overhead = {False: len(mllm._encode(None, [mllm.chat_prompt("", False)], "right")["input_ids"][0])}
    if first is not None:
        overhead[True] = len(mllm._encode([first], [mllm.chat_prompt("", True)], "right")["input_ids"][0])
    for i, (qi, ai) in enumerate(zip(q, a)):
        need = len(qi) + len(ai) + 1 + overhead[split.images[i] is not None]
        if need > context:
            raise RetainError(f"Item {i} of task {name!r} needs about {need} tokens, more than the model's context "
                              f"of {context}: shorten its answer ({split.answers[i][:60]!r}...) or drop the item.")


class Evaluator:
    """Every sequence task with its own scorer, and the held-out `eval.emt_tasks` with EMT."""

    def __init__(self, mllm, cfg: RunConfig, tasks: list, held_out: dict, template: str):
        self.mllm, self.cfg, self.tasks, self.held_out, self.template = mllm, cfg, tasks, held_out, template
        self.judge = None
        if any(t.scorer == "judge" for t in tasks):
            e = cfg.eval
            if not (e.judge_url and e.judge_model):
                names = [t.name for t in tasks if t.scorer == "judge"]
                raise RetainError(f"{names} are scored by an LLM judge: set eval.judge_url and eval.judge_model "
                                  f"(the key is read from ${e.judge_key_env}).")
            from retain.eval.judge import LLMJudge
            from retain.llm import ChatClient
            from retain.paths import cache_dir

            client = ChatClient(e.judge_url, e.judge_model, api_key_env=e.judge_key_env,
                                cache_dir=str(cache_dir("judge")), url_trusted=False)
            client.probe()  # a dead endpoint stops the run here, before any training
            self.judge = LLMJudge(client)

    def emt_sources(self) -> dict:
        """The classification datasets evaluated with EMT, by name."""
        return {**{t.name: t.source for t in self.tasks if t.scorer == "emt"}, **self.held_out}

    def point(self, task_index: int, epoch: int, label: str) -> tuple[dict, list[dict]]:
        acc, counts, unscored, records = {}, {}, {}, []
        limit = self.cfg.eval.limit or None
        for name, task in self.emt_sources().items():
            r = evaluate_emt(self.mllm, task, self.cfg.eval.emt_mode, limit=limit, template=self.template)
            acc[name], counts[name] = r.accuracy, r.counts
            records += [{**rec, "task": name} for rec in r.records]
        for task in self.tasks:
            if task.scorer != "emt":
                r = evaluate_instruction(self.mllm, task, limit=limit, judge=self.judge)
                if r.halted:
                    from retain.llm import EndpointDown

                    raise EndpointDown(f"{r.halted} The run stopped while evaluating {label!r}; the tasks finished "
                                       "before are checkpointed and the judged items cached: rerun with --resume.")
                acc[task.name] = r.score
                unscored[task.name] = sum(rec["score"] is None for rec in r.records)
                records += [{**rec, "task": task.name} for rec in r.records]
        order = [t.name for t in self.tasks] + [n for n in self.held_out]
        point = {"label": label, "task_index": task_index, "epoch": epoch,
                 "accuracy": {n: acc[n] for n in order}, "counts": counts}
        if any(unscored.values()):  # the score of such a cell covers the scored items only
            point["unscored"] = {n: k for n, k in unscored.items() if k}
        return point, records

    def row(self, point: dict) -> list[float]:
        return [point["accuracy"][t.name] for t in self.tasks]


def _encoder_zero_shot(cfg: RunConfig, sources: dict, accelerator) -> dict | None:
    """The vision encoder's own zero-shot accuracy on every evaluated dataset (EMT's reference)."""
    name = cfg.eval.encoder or DEFAULT_ENCODERS.get(cfg.model)
    if not name:
        return None
    from retain.eval.classification import zero_shot
    from retain.models import load_dual_encoder

    with accelerator.main_process_first():
        encoder = load_dual_encoder(name, trust_remote_code=cfg.trust_remote_code).to(accelerator.device)
    return {n: zero_shot(encoder, t, limit=cfg.eval.limit or None).accuracy for n, t in sources.items()}


def _load_parameters(mllm, params: dict, run: RunDir) -> None:
    named = dict(mllm.named_parameters())
    missing = sorted(set(params) - set(named))
    if missing:
        raise RetainError(f"The checkpoint in {run.path} holds parameters this model does not have ({missing[:3]}); "
                          "it was written by another model or method: delete the run directory to start over.")
    with torch.no_grad():
        for n, v in params.items():
            named[n].copy_(v.to(named[n].device, named[n].dtype))


def assemble_results(cfg: RunConfig, method_name: str, names: list[str], state: dict, label: str | None = None) -> dict:
    A = np.asarray(state["rows"], dtype=float)  # an unscored cell (None) is NaN here, None in results.json
    first, last = state["points"][0]["accuracy"], state["points"][-1]["accuracy"]
    held_out = [n for n in first if n not in names]
    return {
        "family": "mllm",
        "method": method_name,
        "label": label or method_name,
        "model": cfg.model,
        "seed": cfg.seed,
        "sequence": names,
        "probes": held_out,
        "accuracy_matrix": _none_for_nan(A.tolist()),
        "metrics": _none_for_nan(metrics.summary(A)),
        "final_task_accuracy": _none_for_nan(dict(zip(names, A[-1].tolist()))),
        "unscored": {p["label"]: p["unscored"] for p in state["points"] if p.get("unscored")},
        "model_build": zoo.build_info(cfg.model),
        "evaluation": {"emt_mode": cfg.eval.emt_mode, "datasets": list(first), "curve": state["points"],
                "encoder": cfg.eval.encoder or DEFAULT_ENCODERS.get(cfg.model),
                "encoder_zero_shot": state.get("encoder_zero_shot")},
        "concept_forgetting": {"emt": delta_summary({n: first[n] for n in held_out}, {n: last[n] for n in held_out})},
    }


def _none_for_nan(x):
    """NaN (an unscored cell, or a metric of one) as None, in nested lists and dicts."""
    if isinstance(x, dict):
        return {k: _none_for_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_none_for_nan(v) for v in x]
    return None if isinstance(x, float) and x != x else x
