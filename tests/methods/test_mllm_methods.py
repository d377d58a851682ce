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


def test_olora_penalty_zero_when_orthogonal_and_grows_with_overlap():
    from retain.methods.olora import orthogonality_penalty

    eye = torch.eye(6)
    old, new = eye[:2], eye[2:4]
    assert float(orthogonality_penalty(new, [old])) == 0.0
    overlaps = []
    for angle in (0.1, 0.5, 1.0):  # rotate the new rows towards the old ones
        rotated = torch.cos(torch.tensor(angle)) * new + torch.sin(torch.tensor(angle)) * old
        overlaps.append(float(orthogonality_penalty(rotated, [old])))
    assert 0 < overlaps[0] < overlaps[1] < overlaps[2]
    # by hand: |A_old A_new^T| summed = 2 sin(angle) for the rotation above
    assert overlaps[2] == pytest.approx(2 * np.sin(1.0), rel=1e-5)


def test_olora_trains_only_the_new_adapter_with_all_active(mllm):
    method = create_method("olora", family="mllm")
    method.setup(mllm)
    splits = [split(4, "a"), split(4, "b")]
    method.before_task(context(mllm, splits, 0))
    assert float(method.loss({}, None, context(mllm, splits, 0))) == 0.0  # nothing earlier
    method.before_task(context(mllm, splits, 1))
    assert list(mllm.model.base_model.active_adapters) == ["task0", "task1"]
    names = {n for n, p in mllm.named_parameters() if any(p is q for q in method.trainable(mllm))}
    assert any(".task1." in n for n in names) and not any(".task0." in n for n in names)
    assert float(method.loss({}, None, context(mllm, splits, 1))) > 0  # random A's overlap


def test_sefe_marks_the_top_two_percent_merges_and_penalises_only_them(mllm):
    from retain.methods.routing import delta_weight, lora_layers

    method = create_method("sefe", family="mllm")
    method.setup(mllm)
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in mllm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    layers = lora_layers(mllm.model)
    deltas = {n: delta_weight(layer, "default").detach().clone() for n, layer in layers}
    batch = mllm.training_batch(None, ["What is 2 plus 3?"], ["5"])
    batch.pop("labels")
    with torch.no_grad():
        before = mllm.model(**batch).logits
    ctx = context(mllm, [split(2, "a")], 0)
    method.after_task(ctx)
    with torch.no_grad():  # the update moved into the weights: same function, fresh adapter
        assert torch.allclose(mllm.model(**batch).logits, before, atol=1e-4)
    for n, layer in layers:
        mask, d = method.masks[n], deltas[n]
        assert int(mask.sum()) == max(1, round(0.02 * d.numel()))
        assert d.abs()[mask].min() >= d.abs()[~mask].max()  # exactly the largest entries
        assert float(delta_weight(layer, "default").abs().max()) == 0.0
    with torch.no_grad():
        for n, p in mllm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    expected = sum(float((delta_weight(layer, "default")[method.masks[n]] ** 2).sum()) for n, layer in layers)
    assert float(method.loss({}, None, ctx)) == pytest.approx(expected, rel=1e-5)
    # moving the update only off the marked entries leaves the penalty unchanged
    n0, layer0 = layers[0]
    full = delta_weight(layer0, "default").detach()
    off = full * (~method.masks[n0])
    assert float((off[method.masks[n0]] ** 2).sum()) == 0.0


def test_moelora_router_sums_to_one_and_one_expert_is_lora():
    from retain.methods.moelora import MoELoRALinear

    torch.manual_seed(0)
    base = torch.nn.Linear(12, 10)
    layer = MoELoRALinear(base, r=8, alpha=16, experts=4)
    torch.nn.init.normal_(layer.lora_router.weight)
    x = torch.randn(3, 5, 12)
    g = layer.gates(x)
    assert g.shape == (3, 5, 4) and torch.allclose(g.sum(-1), torch.ones(3, 5), atol=1e-6)
    assert torch.allclose(layer(x), base(x))  # B = 0 at the start: a no-op
    torch.nn.init.normal_(layer.lora_B)
    by_hand = base(x) + 2.0 * sum(g[..., e:e + 1] * (x @ layer.lora_A[e].T @ layer.lora_B[e].T) for e in range(4))
    assert torch.allclose(layer(x), by_hand, atol=1e-5)
    single = MoELoRALinear(base, r=4, alpha=8, experts=1)
    torch.nn.init.normal_(single.lora_B)
    lora = base(x) + 2.0 * (x @ single.lora_A[0].T @ single.lora_B[0].T)
    assert torch.allclose(single(x), lora, atol=1e-5)


def test_moelora_injection_is_a_no_op_until_trained(mllm):
    method = create_method("moelora", family="mllm")
    batch = mllm.training_batch(None, ["What is 2 plus 3?"], ["5"])
    batch.pop("labels")
    with torch.no_grad():
        before = mllm.model(**batch).logits
        method.setup(mllm)
        assert torch.allclose(mllm.model(**batch).logits, before, atol=1e-5)
    names = [n for n, p in mllm.named_parameters() if any(p is q for q in method.trainable(mllm))]
    assert any("lora_router" in n for n in names) and all("language_model" in n or "projector" in n for n in names)


def separable_tasks():
    dark = InstructionSplit([np.full((8, 8, 3), 5 + k, np.uint8) for k in range(6)],
                            [f"Alpha alpha question {k}?" for k in range(6)], ["a"] * 6)
    bright = InstructionSplit([np.full((8, 8, 3), 240 - k, np.uint8) for k in range(6)],
                              [f"Beta beta query number {k}!" for k in range(6)], ["b"] * 6)
    return [dark, bright]


@pytest.mark.parametrize("name", ["disco", "hide", "modalprompt", "clmoe"])
def test_routing_sends_held_out_items_to_their_own_task(mllm, name):
    method = create_method(name, family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    for k in range(2):
        method.before_task(context(mllm, splits, k))
    held_out = [np.full((8, 8, 3), 12, np.uint8), np.full((8, 8, 3), 230, np.uint8)]
    assert mllm.router.assign(mllm, held_out, ["Alpha alpha question 99?", "Beta beta query number 99!"]) == [0, 1]


def test_hide_fuses_lower_layers_and_routes_the_top_one(mllm):
    from retain.methods.hide import layer_index
    from retain.methods.routing import delta_weight, lora_layers

    method = create_method("hide", family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    for k in range(2):
        method.before_task(context(mllm, splits, k))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in mllm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    layers = lora_layers(mllm.model)
    top = max(layer_index(n) for n, _ in layers)
    _, low = next((n, m) for n, m in layers if layer_index(n) < top)
    _, high = next((n, m) for n, m in layers if layer_index(n) == top)
    x = torch.randn(2, low.base_layer.in_features)
    with torch.no_grad():
        mean_delta = (delta_weight(low, "task0") + delta_weight(low, "task1")) / 2
        expert = delta_weight(high, "task1")
        with method.routed(1):
            fused, routed = low(x), high(x)
        assert torch.allclose(fused, low.base_layer(x) + x @ mean_delta.T, atol=1e-5)
        assert torch.allclose(routed, high.base_layer(x) + x @ expert.T, atol=1e-5)
    assert low.scaling == {"task0": 2.0, "task1": 2.0} and high.scaling == low.scaling  # restored after routing
    assert list(mllm.model.base_model.active_adapters) == ["task1"]  # restored to the training state


def test_modalprompt_feeds_the_active_tasks_prompts_and_trains_only_them(mllm):
    method = create_method("modalprompt", {"length": 4}, family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    for k in range(2):
        method.before_task(context(mllm, splits, k))
    bank = method.bank
    assert [tuple(p.shape) for p in bank.tasks] == [(4, 32), (4, 32)] and bank.active == 1
    assert method.trainable(mllm) == [bank.tasks[1]] and method.lr_scale == 50.0
    batch = mllm.training_batch([splits[1].images[0]], [splits[1].questions[0]], ["b"])
    ids = batch["input_ids"][0]
    slots = (ids >= bank.first_id) & (ids < bank.first_id + 4)
    assert int(slots.sum()) == 4  # the prompt tokens are in the prompt
    embedding = mllm.model.get_input_embeddings()
    with method.routed(0):
        seen = embedding(batch["input_ids"])[0][slots]
        assert torch.equal(seen, bank.tasks[0].detach())
    assert torch.equal(embedding(batch["input_ids"])[0][slots], bank.tasks[1].detach())
    for p in mllm.parameters():
        p.requires_grad_(False)
    bank.tasks[1].requires_grad_(True)
    labels = batch.pop("labels")
    logits = mllm.model(**batch).logits[:, :-1]
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                      ignore_index=-100).backward()
    assert bank.tasks[1].grad is not None and bank.tasks[1].grad.abs().sum() > 0
    assert bank.tasks[0].grad is None


def test_clmoe_dual_momentum_keeps_what_the_task_used(mllm):
    from retain.methods.clmoe import blend
    from retain.methods.moelora import moe_layers

    old, new = torch.zeros(3, 2), torch.ones(3, 2)
    assert torch.allclose(blend(old, new, torch.tensor([0.1, 0.9, 0.5])),
                          torch.tensor([[0.9, 0.9], [0.1, 0.1], [0.5, 0.5]]))
    method = create_method("clmoe", {"experts": 4, "r": 8, "usage_items": 4}, family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    ctx = context(mllm, splits, 0)
    method.before_task(ctx)
    layers = moe_layers(mllm.model)
    with torch.no_grad():
        for _, layer in layers:
            layer.lora_task_bias[0].copy_(torch.tensor([6.0, 0.0, 0.0, 0.0]))  # the task relies on expert 0
            layer.lora_A.add_(1.0)  # "training" moved every expert
    start = {n: method.start[n][0].clone() for n, _ in layers}
    trained = {n: layer.lora_A.detach().clone() for n, layer in layers}
    method.after_task(ctx)
    for n, layer in layers:
        A = layer.lora_A.detach()
        assert torch.allclose(A[0], 0.1 * start[n][0] + 0.9 * trained[n][0], atol=1e-6)
        assert torch.allclose(A[1:], 0.9 * start[n][1:] + 0.1 * trained[n][1:], atol=1e-6)
    x = torch.randn(2, layers[0][1].base.in_features)
    method.before_task(context(mllm, splits, 1))
    with method.routed(0):
        g0 = layers[0][1].gates(x)
    with method.routed(1):
        g1 = layers[0][1].gates(x)
    assert torch.allclose(g0.sum(-1), torch.ones(2)) and g0[:, 0].min() > 0.9 and torch.allclose(g1, torch.full_like(g1, 0.25))
