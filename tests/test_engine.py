"""The continual engine's own promises: memory that stays flat across tasks, and the model's
`requires_grad` flags as they were after a task's gradient steps."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import torch

from retain.config import load_config
from retain.engine import make_accelerator, optimise
from retain.methods.base import Method, TaskContext
from retain.rundir import RunDir


def live_optimizers() -> int:
    gc.collect()
    return sum(isinstance(o, torch.optim.Optimizer) for o in gc.get_objects())


def test_a_finished_tasks_optimizer_is_released(tmp_path, tiny_clip_dir, monkeypatch):
    """After each of four tasks, the optimizer states held are those of no task at all (each
    task's were released with it), not one more per task."""
    from retain.families.dual_encoder import run_method

    cfg = load_config(None, [f"model={tiny_clip_dir}", "sequence=[digits, textile, animal-mnist, fashion-mnist]",
                             "probes=[]", f"output_dir={tmp_path}", "train.batch_size=8", "train.max_steps=2",
                             "train.train_limit=16", "eval.limit=8", "eval.linear_probe=false"])
    held, commit = [], RunDir.commit_task

    def counting(self, task_index, *args, **kwargs):
        held.append(live_optimizers())
        commit(self, task_index, *args, **kwargs)

    monkeypatch.setattr(RunDir, "commit_task", counting)
    before = live_optimizers()
    run_method(cfg, "finetune")
    assert held == [before] * 4


class TrainsTheHead(Method):
    name = "trains_the_head"

    def trainable(self, model):
        return list(model.head.parameters())

    def task_loss(self, batch, outputs, ctx):
        return outputs.pow(2).mean()


def test_requires_grad_is_put_back_as_it_was(tmp_path):
    model = torch.nn.Module()
    model.body, model.head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    model.body.bias.requires_grad_(False)  # frozen before the task: must stay frozen
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    cfg = load_config(None, ["train.batch_size=4", "train.max_steps=2", "train.warmup_steps=0"])
    run = RunDir(tmp_path)
    accelerator, _ = make_accelerator(cfg, run)
    split = SimpleNamespace(x=torch.randn(8, 3))
    task = SimpleNamespace(name="toy")
    ctx = TaskContext(task=task, index=0, train=range(8), model=model, tasks=[task], train_splits=[split],
                      device=torch.device("cpu"), seed=0, batch_size=4)
    seen = []

    def loss(batch):
        seen.append({n: p.requires_grad for n, p in model.named_parameters()})
        return model.head(model.body(split.x[batch])).pow(2).mean()

    optimise(accelerator, model, TrainsTheHead(), ctx, cfg, run, lambda idx: torch.tensor(idx), loss)
    assert seen and seen[0] == {"body.weight": False, "body.bias": False, "head.weight": True, "head.bias": True}
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
