"""The continual-learning methods on MLLMs: each one's defining property on a tiny LLaVA."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from retain.data.instruct import InstructionSplit, InstructionTask
from retain.methods import TaskContext, create_method
from retain.methods.lora import delta_weight, lora_layers


@pytest.fixture
def mllm(tiny_llava_dir):
    from retain.registry import load_mllm

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
    # by hand from the raw factors: (alpha / r) B A on the marked entries, squared, summed
    scale = method.opts.alpha / method.opts.r
    expected = sum(float(((scale * layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
                          [method.masks[n]].double() ** 2).sum()) for n, layer in layers)
    assert expected > 0 and float(method.loss({}, None, ctx)) == pytest.approx(expected, rel=1e-5)
    # an update off the marked entries costs nothing: zero the rows of B whose output rows
    # hold a marked entry; the update stays (the other rows), the penalty is exactly zero
    with torch.no_grad():
        for n, layer in layers:
            layer.lora_B["default"].weight[method.masks[n].any(1)] = 0
    assert all(float(delta_weight(layer, "default").abs().sum()) > 0 for _, layer in layers)
    assert float(method.loss({}, None, ctx)) == 0.0
    # one marked row back: penalised by exactly its marked entries
    n0, layer0 = layers[0]
    row = int(method.masks[n0].any(1).nonzero()[0])
    with torch.no_grad():
        layer0.lora_B["default"].weight[row] = 0.1
    on = (scale * layer0.lora_B["default"].weight[row] @ layer0.lora_A["default"].weight)[method.masks[n0][row]]
    assert float((on ** 2).sum()) > 0
    assert float(method.loss({}, None, ctx)) == pytest.approx(float((on.double() ** 2).sum()), rel=1e-5)


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
    assert method.router.assign(mllm, held_out, ["Alpha alpha question 99?", "Beta beta query number 99!"]) == [0, 1]


HELD_OUT = [(np.full((8, 8, 3), 12, np.uint8), "Alpha alpha question 99?"),  # routed to task 0
            (np.full((8, 8, 3), 230, np.uint8), "Beta beta query number 99!")]  # routed to task 1
OPTIONS = ["a", "b", "yes it is"]


@contextlib.contextmanager
def lora_merged(mllm, deltas: dict):
    """The model with adapters off and `deltas` (layer name -> weight update) added by hand."""
    layers = dict(lora_layers(mllm.model))
    saved = {n: layers[n].base_layer.weight.detach().clone() for n in deltas}
    with torch.no_grad():
        for n, d in deltas.items():
            layers[n].base_layer.weight += d
    try:
        with mllm.model.disable_adapter():
            yield
    finally:
        with torch.no_grad():
            for n, w in saved.items():
                layers[n].base_layer.weight.copy_(w)


def by_hand(layer, adapter: str) -> torch.Tensor:
    return layer.scaling[adapter] * layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight


def only_task(name: str, method, mllm, k: int):
    """The model answering as task k alone, built without the method's routing code."""
    if name == "disco":  # task k's adapter only
        return lora_merged(mllm, {n: by_hand(layer, f"task{k}") for n, layer in lora_layers(mllm.model)})
    if name == "hide":  # lower layers: the mean of the tasks' updates; top layer: task k's
        from retain.methods.hide import layer_index

        layers = lora_layers(mllm.model)
        top = max(layer_index(n) for n, _ in layers)
        return lora_merged(mllm, {n: by_hand(layer, f"task{k}") if layer_index(n) == top
                                  else (by_hand(layer, "task0") + by_hand(layer, "task1")) / 2 for n, layer in layers})
    if name == "clmoe":  # task k's task-level gate bias in every layer

        @contextlib.contextmanager
        def task_bias():
            from retain.methods.moelora import moe_layers

            layers = [layer for _, layer in moe_layers(mllm.model)]
            was = [layer.active_task for layer in layers]
            for layer in layers:
                layer.active_task = k
            try:
                yield
            finally:
                for layer, t in zip(layers, was):
                    layer.active_task = t

        return task_bias()
    if name == "modalprompt":  # task k's prompt vectors at the placeholder tokens

        @contextlib.contextmanager
        def prompts():
            was, method.bank.active = method.bank.active, k
            try:
                yield
            finally:
                method.bank.active = was

        return prompts()
    raise AssertionError(name)


def answers(mllm, k: int, prefix: str = "") -> tuple[list[float], list[str]]:
    image, question = HELD_OUT[k]
    return mllm.loglik(image, prefix + question, OPTIONS), mllm.generate([image], [prefix + question], max_new_tokens=4)


@pytest.mark.parametrize("name", ["disco", "hide", "modalprompt", "clmoe"])
def test_routed_items_are_answered_by_their_own_tasks_parts(mllm, name):
    """After two tasks, inside the method's inference context an item routed to task k gets
    exactly the answers of the model with only task k's adapter (prompt, gate bias); outside
    it the model answers as training left it."""
    method = create_method(name, {"length": 4} if name == "modalprompt" else {}, family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    for k in range(2):
        method.before_task(context(mllm, splits, k))
    torch.manual_seed(2)
    with torch.no_grad():  # "trained": every adapter and prompt moved, each task's gate bias favours its experts
        for n, p in mllm.named_parameters():
            if "lora_B" in n or "retain_prompts" in n:
                p.normal_(0, 0.3)
        if name == "clmoe":
            from retain.methods.moelora import moe_layers

            for _, layer in moe_layers(mllm.model):
                layer.lora_task_bias[0].copy_(torch.tensor([8.0, 0, 0, 0] + [0] * (layer.experts - 4)))
                layer.lora_task_bias[1].copy_(torch.tensor([0, 0, 0, 8.0] + [0] * (layer.experts - 4)))
    assert method.router.assign(mllm, *map(list, zip(*HELD_OUT))) == [0, 1]
    prefix = "".join(f"<|retain_prompt_{i}|>" for i in range(4)) + " " if name == "modalprompt" else ""
    expected = []
    for k in range(2):
        with only_task(name, method, mllm, k):
            expected.append([answers(mllm, j, prefix) for j in range(2)])
    plain = [answers(mllm, j) for j in range(2)]
    with method.inference(mllm):
        routed = [answers(mllm, j) for j in range(2)]
        both = mllm.generate([im for im, _ in HELD_OUT], [q for _, q in HELD_OUT], max_new_tokens=4)
    for k in range(2):
        own, other = expected[k][k], expected[1 - k][k]  # item k as task k, and as the other task
        assert np.allclose(routed[k][0], own[0], atol=1e-4) and routed[k][1] == own[1]
        assert not np.allclose(own[0], other[0], atol=1e-2)  # the tasks' parts answer differently
    assert both == [routed[0][1][0], routed[1][1][0]]  # one call, items of two tasks, each its own
    assert [answers(mllm, j) for j in range(2)] == plain  # the context is gone on exit
    assert not np.allclose(plain[0][0], routed[0][0], atol=1e-2)


def test_hide_fuses_lower_layers_and_routes_the_top_one(mllm):
    from retain.methods.hide import layer_index

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
    items = {"images": [splits[1].images[0]], "questions": [splits[1].questions[0]], "answers": ["b"]}
    items = method.extend_batch(items, context(mllm, splits, 1))  # what the trainer trains on
    batch = mllm.training_batch(items["images"], items["questions"], items["answers"])
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
