"""The continual-learning methods on MLLMs: each one's defining property on a tiny LLaVA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retain.data.instruct import InstructionSplit, InstructionTask
from retain.methods import create_method
from retain.methods.base import TaskContext


@pytest.fixture
def mllm(tiny_llava_dir):
    from retain.models.mllm import load_mllm

    torch.manual_seed(0)
    return load_mllm(str(tiny_llava_dir))


def split(n, tag, image=True):
    imgs = [np.full((8, 8, 3), 10 * k, np.uint8) if image else None for k in range(n)]
    return InstructionSplit(imgs, [f"{tag} question {k}?" for k in range(n)], [f"{tag}{k}" for k in range(n)])


def context(mllm, splits, index, seed=0):
    tasks = [InstructionTask(f"t{k}", {"train": s, "test": s}, "exact") for k, s in enumerate(splits)]
    return TaskContext(task=tasks[index], index=index, train=splits[index], model=mllm, tasks=tasks,
                       train_splits=splits, device=torch.device("cpu"), seed=seed, batch_size=4)


def test_replay_mixes_earlier_items_of_the_same_kind(mllm):
    method = create_method("replay", {"buffer_size": 6, "replay_fraction": 0.5}, family="mllm")
    method.setup(mllm)
    splits = [split(10, "a"), split(10, "b")]
    method.before_task(context(mllm, splits, 0))
    method.after_task(context(mllm, splits, 0))
    assert len(method.buffer) == 6
    ctx = context(mllm, splits, 1)
    method.before_task(ctx)
    batch = {"index": torch.arange(4), "images": splits[1].images[:4], "questions": splits[1].questions[:4],
             "answers": splits[1].answers[:4], "task": "t1"}
    out = method.extend_batch(batch, ctx)
    assert len(out["questions"]) == 6 and out["questions"][:4] == batch["questions"]
    assert all(q.startswith("a question") for q in out["questions"][4:])
    assert all(a == f"a{q.split()[-1][:-1]}" for q, a in zip(out["questions"][4:], out["answers"][4:]))
    text = {**batch, "images": [None] * 4}  # a text-only batch takes no image items
    assert len(method.extend_batch(text, ctx)["questions"]) == 4


@pytest.mark.parametrize("name", ["l2sp", "ewc"])
def test_regularisers_anchor_the_adapters_and_projector(mllm, name):
    method = create_method(name, {"weight": 1.0}, family="mllm")
    method.setup(mllm)
    splits = [split(4, "a")]
    ctx = context(mllm, splits, 0)
    method.before_task(ctx)
    names = {n for n, p in mllm.named_parameters() if any(p is q for q in method.params)}
    assert names and all("lora_" in n or "multi_modal_projector" in n for n in names)
    if name == "ewc":
        method.opts.fisher_samples = 3
        method.after_task(ctx)
        assert len(method.fishers) == 1 and sum(f.sum() for f in method.fishers[0]) > 0
    assert float(method.loss({}, None, ctx)) == 0.0  # at the anchor
    with torch.no_grad():
        for p in method.params:
            p.add_(0.1)
    assert float(method.loss({}, None, ctx)) > 0.0
