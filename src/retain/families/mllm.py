"""The MLLM family (LLaVA-style models) in the continual engine.

Tasks are instruction tasks, or classification datasets posed as EMT questions (see
`retain.data.instruct`); gradient steps train the answer tokens. An evaluation point
scores every sequence task with its scorer and every `eval.emt_tasks` dataset with EMT
(one row of the accuracy matrix; row 0 is measured before any training). With
`eval.every_epoch` a point also follows every epoch, and with `eval.every_steps` every k
optimizer steps (EMT's fine-tuning curve; a point records its task, epoch and step).
Checkpoints hold the parameters the method trains.
"""

from __future__ import annotations

import numpy as np
import torch

from retain import metrics
from retain.config import RunConfig
from retain.data import load_task
from retain.data.instruct import load_instruction_task, task_name
from retain.engine import Family, run_continual
from retain.errors import RetainError
from retain.eval.emt import EMT_TEMPLATE, evaluate_emt
from retain.eval.emt_match import check_synonyms
from retain.eval.instruct import evaluate_instruction
from retain.methods.base import Method, TaskContext
from retain.registry import build_info, default_encoder, load_dual_encoder, load_mllm
from retain.rundir import RunDir

TRAIN_MODES = ("rule", "likelihood")


class MLLMFamily(Family):
    name = "mllm"
    resolved = {"family": "mllm"}

    def check(self) -> None:
        cfg = self.cfg
        if not cfg.sequence:
            raise RetainError("The config's `sequence` is empty: name at least one task to train on.")
        names = [task_name(s) for s in cfg.sequence]
        if len(set(names)) != len(names):
            raise RetainError(f"The sequence names a task twice ({names}): give every task its own name.")
        if cfg.probes:
            raise RetainError("`probes` are zero-shot probes of dual encoders; an MLLM run evaluates held-out "
                              "datasets with EMT: move them to eval.emt_tasks and set probes: [].")
        if cfg.eval.emt_mode not in TRAIN_MODES:
            raise RetainError(f"eval.emt_mode {cfg.eval.emt_mode!r} is not available in training runs: use "
                              f"{' or '.join(TRAIN_MODES)} (the LLM judge is for `retain eval`).")
        if cfg.eval.judge_url:  # a refused key fails here, before any model is loaded
            from retain.llm import check_key

            check_key(cfg.eval.judge_url, cfg.eval.judge_key_env, url_trusted=False, setting="eval.judge_url")

    def load(self, accelerator, method: Method) -> None:
        cfg = self.cfg
        self.template = cfg.eval.emt_template or EMT_TEMPLATE
        with accelerator.main_process_first():  # one process converts data and builds the zoo model
            self.tasks = [load_instruction_task(s, self.template) for s in cfg.sequence]
            self.held_out = {n: load_task(n) for n in cfg.eval.emt_tasks if n not in [t.name for t in self.tasks]}
            emt_sets = {**{t.name: t.source.class_names for t in self.tasks if t.scorer == "emt"},
                        **{n: t.class_names for n, t in self.held_out.items()}}
            check_synonyms(cfg.eval.synonym_table(), emt_sets)  # a class in no label set stops before the model loads
            self.model = load_mllm(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.module = self.model.model
        self.module.to(accelerator.device)
        method.setup(self.model)
        limit = cfg.train.train_limit or None
        self.train_splits = [t.split("train").subset(limit, seed=cfg.seed) for t in self.tasks]
        # the longest training item in tokens (image tokens included), for the memory estimate
        self.longest = max([check_lengths(self.model, t.name, split) or 0
                            for t, split in zip(self.tasks, self.train_splits)], default=0)
        self.evaluator = Evaluator(self.model, cfg, self.tasks, self.held_out, self.template)

    def fingerprints(self) -> dict[str, str]:
        return {t.name: t.fingerprint for t in [*self.tasks, *self.held_out.values()]}

    def first_point(self, accelerator) -> tuple[dict, list[dict]]:
        point, records = self.evaluator.point(-1, 0, "zero-shot")
        zs = _encoder_zero_shot(self.cfg, self.evaluator.emt_sources(), accelerator)
        return {"done_tasks": 0, "rows": [self.evaluator.row(point)], "points": [point], "seconds": [],
                "trained_parameters": [], "encoder_zero_shot": zs}, records

    def restore(self, state: dict, checkpoint: tuple[dict, dict] | None, method: Method, run: RunDir) -> None:
        if checkpoint:
            method.load_state_dict(checkpoint[1])  # first: it may recreate the adapters the weights belong to
            _load_parameters(self.model, checkpoint[0], run)
        # drop the epoch points of a task that did not finish
        state["points"] = [p for p in state["points"] if p["task_index"] < state["done_tasks"]]

    def collate(self, ctx: TaskContext):
        return collate_items(ctx.train, ctx.task.name)

    def batch_loss(self, wrapped, method: Method, batch: dict, ctx: TaskContext) -> torch.Tensor:
        return batch_loss(self.model, wrapped, method, batch, ctx)

    def mid_task(self, ctx: TaskContext, state: dict, run: RunDir, accelerator):
        def evaluate(epoch: int, step: int, where: str) -> None:
            point, records = self.evaluator.point(ctx.index, epoch, f"{ctx.task.name} {where}", step=step)
            state["points"].append(point)
            if accelerator.is_main_process:
                run.write_records(f"task-{ctx.index + 1}-{where.replace(' ', '-')}", records)
                run.save_state(state)

        return evaluate

    def memory_stacks(self, trained_names: list[str]) -> list:
        from retain.memory import mllm_stacks, tokens_assumed

        config, profile = self.model.model.config, self.model.profile
        return mllm_stacks(config, trained_names, self.longest or tokens_assumed(config, 512),
                           language_model=profile.language_model, vision_tower=profile.vision_tower,
                           projector=profile.projector)

    def trained(self, state: dict, method: Method) -> None:
        trained = {id(p) for p in method.saved_parameters(self.model)}
        names = [n for n, p in self.model.named_parameters() if id(p) in trained]
        state["trained_parameters"] = sorted(set(state["trained_parameters"]) | set(names))

    def point(self, k: int, state: dict) -> tuple[list[dict], dict[str, float]]:
        point, records = self.evaluator.point(k, self.cfg.train.epochs, f"after {self.tasks[k].name}")
        state["rows"].append(self.evaluator.row(point))
        state["points"].append(point)
        return records, point["accuracy"]

    def checkpoint(self, state: dict) -> dict[str, torch.Tensor]:
        named = dict(self.model.named_parameters())
        return {n: named[n] for n in state["trained_parameters"]}

    def results(self, method_name: str, state: dict, label: str | None) -> dict:
        return assemble_results(self.cfg, method_name, [t.name for t in self.tasks], state, label=label)


def run_method(cfg: RunConfig, method_name: str, resume: bool = False, label: str | None = None) -> dict:
    """Train `method_name` through `cfg.sequence` on an MLLM, evaluate, return results.json's content."""
    return run_continual(MLLMFamily(cfg), method_name, resume=resume, label=label)


def collate_items(split, name: str):
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


def check_lengths(mllm, name: str, split) -> int | None:
    """Every training item must fit the LLM's context with room for the image tokens; the
    longest item's tokens (None when the LLM names no context)."""
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
    longest = 0
    for i, (qi, ai) in enumerate(zip(q, a)):
        need = len(qi) + len(ai) + 1 + overhead[split.images[i] is not None]
        if need > context:
            raise RetainError(f"Item {i} of task {name!r} needs about {need} tokens, more than the model's context "
                              f"of {context}: shorten its answer ({split.answers[i][:60]!r}...) or drop the item.")
        longest = max(longest, need)
    return longest


class Evaluator:
    """Every sequence task with its own scorer, and the held-out `eval.emt_tasks` with EMT."""

    def __init__(self, mllm, cfg: RunConfig, tasks: list, held_out: dict, template: str):
        self.mllm, self.cfg, self.tasks, self.held_out, self.template = mllm, cfg, tasks, held_out, template
        self.synonyms = cfg.eval.synonym_table()
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

    def point(self, task_index: int, epoch: int, label: str, step: int | None = None) -> tuple[dict, list[dict]]:
        acc, counts, unscored, records = {}, {}, {}, []
        limit = self.cfg.eval.limit or None
        for name, task in self.emt_sources().items():
            r = evaluate_emt(self.mllm, task, self.cfg.eval.emt_mode, limit=limit, template=self.template,
                             synonyms=self.synonyms)
            acc[name], counts[name] = r.accuracy, r.counts
            records += [{**rec, "task": name} for rec in r.records]
        for task in self.tasks:
            if task.scorer != "emt":
                r = evaluate_instruction(self.mllm, task, limit=limit, judge=self.judge,
                                         max_new_tokens=self.cfg.eval.max_new_tokens)
                if r.halted:
                    from retain.llm import EndpointDown

                    raise EndpointDown(f"{r.halted} The run stopped while evaluating {label!r}; the tasks finished "
                                       "before are checkpointed and the judged items cached: rerun with --resume.")
                acc[task.name] = r.score
                unscored[task.name] = sum(rec["score"] is None for rec in r.records)
                records += [{**rec, "task": task.name} for rec in r.records]
        order = [t.name for t in self.tasks] + [n for n in self.held_out]
        point = {"label": label, "task_index": task_index, "epoch": epoch, "step": step,
                 "accuracy": {n: acc[n] for n in order}, "counts": counts}
        if any(unscored.values()):  # the score of such a cell covers the scored items only
            point["unscored"] = {n: k for n, k in unscored.items() if k}
        return point, records

    def row(self, point: dict) -> list[float]:
        return [point["accuracy"][t.name] for t in self.tasks]


def _encoder_zero_shot(cfg: RunConfig, sources: dict, accelerator) -> dict | None:
    """The vision encoder's own zero-shot accuracy on every evaluated dataset (EMT's reference)."""
    name = cfg.eval.encoder or default_encoder(cfg.model)
    if not name:
        return None
    from retain.eval.classification import zero_shot

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
        "model_build": build_info(cfg.model),
        "evaluation": {"emt_mode": cfg.eval.emt_mode, "datasets": list(first), "curve": state["points"],
                "encoder": cfg.eval.encoder or default_encoder(cfg.model),
                "encoder_zero_shot": state.get("encoder_zero_shot")},
        "concept_forgetting": {"emt": metrics.delta_summary({n: first[n] for n in held_out}, {n: last[n] for n in held_out})},
    }


def _none_for_nan(x):
    """NaN (an unscored cell, or a metric of one) as None, in nested lists and dicts."""
    if isinstance(x, dict):
        return {k: _none_for_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_none_for_nan(v) for v in x]
    return None if isinstance(x, float) and x != x else x
