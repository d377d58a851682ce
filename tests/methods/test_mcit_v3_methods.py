"""MCITlib v3's methods on a tiny LLaVA: SMoLoRA, MR-LoRA, KeepLoRA, task arithmetic and
TIES merging, and DoRA adapters; each method's defining property, and resume."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from retain.errors import RetainError
from retain.methods import create_method
from retain.methods.lora import delta_weight, lora_layers
from test_mllm_methods import HELD_OUT, context, lora_merged, separable_tasks, split


@pytest.fixture
def mllm(tiny_llava_dir):
    from retain.registry import load_mllm

    torch.manual_seed(0)
    return load_mllm(str(tiny_llava_dir))


def fresh(tiny_llava_dir):
    from retain.registry import load_mllm

    return load_mllm(str(tiny_llava_dir))


def randomise(mllm, pattern: str, std: float = 0.3, seed: int = 2) -> None:
    """'Training': every parameter whose name holds `pattern` drawn anew."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in mllm.named_parameters():
            if pattern in n:
                p.normal_(0, std)


def answer(mllm, k: int) -> list[float]:
    image, question = HELD_OUT[k]
    return mllm.loglik(image, question, ["a", "b", "yes it is"])


# ---- DoRA ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lora_ft", "disco"])
def test_dora_trains_the_magnitude_vectors(mllm, name):
    """A DoRA run trains PEFT's magnitude vectors (the per-task methods: the current task's only)."""
    method = create_method(name, {"dora": True, "r": 4, "alpha": 8}, family="mllm")
    method.setup(mllm)
    splits = [split(4, "a"), split(4, "b")]
    for k in range(2 if name == "disco" else 1):
        method.before_task(context(mllm, splits, k))
    params = method.trainable(mllm)
    names = {n for n, p in mllm.named_parameters() if any(p is q for q in params)}
    magnitudes = {n for n in names if "lora_magnitude_vector" in n}
    assert magnitudes and len(magnitudes) == len(lora_layers(mllm.model))
    if name == "disco":
        assert all(".task1." in n for n in magnitudes)
    before = {n: p.detach().clone() for n, p in mllm.named_parameters() if n in magnitudes}
    for p in mllm.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(2):
        mllm.training_loss(splits[-1].images, splits[-1].questions, splits[-1].answers).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = dict(mllm.named_parameters())
    assert all(not torch.equal(after[n], before[n]) for n in magnitudes)


@pytest.mark.parametrize("name", ["sefe", "keeplora", "task_arithmetic", "ties", "hide"])
def test_methods_that_need_plain_updates_refuse_dora(name):
    with pytest.raises(RetainError, match=rf"Method '{name}' cannot use DoRA .*method_args\.{name}\.dora: false"):
        create_method(name, {"dora": True}, family="mllm")


@pytest.mark.parametrize("name", ["moelora", "clmoe", "modalprompt", "smolora"])
def test_methods_without_peft_adapters_have_no_dora_option(name):
    with pytest.raises(RetainError, match=rf"Unknown config key 'method_args\.{name}\.dora'"):
        create_method(name, {"dora": True}, family="mllm")


# ---- task arithmetic and TIES ----------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The density 1.0")  # PEFT says density 1 trims nothing: that is the point
def test_ties_merge_matches_a_hand_computation():
    from retain.methods.merging import ties_merge

    tau = torch.tensor([[0.3, 0.5, -0.4, 0.05, 0.0],
                        [0.3, -0.2, 0.6, 0.1, 0.01],
                        [-0.9, 0.1, 0.2, -0.7, 0.05]], dtype=torch.float64)
    # by hand, density 0.6: each row keeps its 3 largest |entries|
    #   trimmed: [0.3, 0.5, -0.4, 0, 0], [0.3, -0.2, 0.6, 0, 0], [-0.9, 0, 0.2, -0.7, 0]
    #   summed:  [-0.3, 0.3, 0.4, -0.7, 0] -> elected signs [-, +, +, -, +]
    #   (entry 0: two positives outvoted by one large negative: the sign follows the mass)
    #   disjoint means of the agreeing entries: [-0.9, 0.5, (0.6 + 0.2) / 2, -0.7, 0]
    merged = ties_merge(list(tau), scaling=1.0, density=0.6)
    assert merged.dtype == torch.float64
    assert torch.allclose(merged, torch.tensor([-0.9, 0.5, 0.4, -0.7, 0.0], dtype=torch.float64), atol=1e-15)
    scaled = ties_merge(list(tau), scaling=1.5, density=0.6)
    assert torch.allclose(scaled, 1.5 * merged, atol=1e-15)
    # density 1 trims nothing: entry 3 now also holds 0.1 (disagreeing) and entry 4 0.01 and 0.05
    full = ties_merge(list(tau), scaling=1.0, density=1.0)
    assert torch.allclose(full, torch.tensor([-0.9, 0.3, 0.4, -0.7, 0.03], dtype=torch.float64), atol=1e-15)


def ties_by_hand(tau: list[torch.Tensor], scaling: float, density: float) -> torch.Tensor:
    """TIES on float64 numpy: per-tensor top-k trim, sign of the sum, mean of the agreeing."""
    t = np.stack([x.detach().double().numpy() for x in tau])
    k = int(density * t[0].size)
    trimmed = np.zeros_like(t)
    for j, row in enumerate(t):
        keep = np.argsort(-np.abs(row).ravel(), kind="stable")[:k]
        flat = trimmed[j].reshape(-1)
        flat[keep] = row.ravel()[keep]
    sign = np.where(trimmed.sum(0) >= 0, 1.0, -1.0)
    agree = np.sign(trimmed) == sign
    merged = (trimmed * agree).sum(0) / np.maximum(agree.sum(0), 1)
    return torch.from_numpy(scaling * merged)


@pytest.mark.parametrize("name", ["task_arithmetic", "ties"])
def test_merging_answers_with_the_merge_of_the_task_adapters(mllm, name):
    method = create_method(name, family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    assert isinstance(method.inference(mllm), contextlib.nullcontext)  # before any task: the model as it came
    for k in range(2):
        method.before_task(context(mllm, splits, k))
        assert list(mllm.model.base_model.active_adapters) == [f"task{k}"]  # each task trains its own alone
    randomise(mllm, "lora_B")
    layers = lora_layers(mllm.model)
    tau = {n: [delta_weight(layer, f"task{k}").detach().double() for k in range(2)] for n, layer in layers}
    if name == "task_arithmetic":  # lambda 0.4 times the sum of the task vectors
        merged = {n: (0.4 * (t[0] + t[1])).float() for n, t in tau.items()}
    else:  # lambda 1, 20% kept
        merged = {n: ties_by_hand(t, 1.0, 0.2).float() for n, t in tau.items()}
    weights = {n: layer.base_layer.weight.detach().clone() for n, layer in layers}
    plain = [answer(mllm, j) for j in range(2)]
    with lora_merged(mllm, merged):
        expected = [answer(mllm, j) for j in range(2)]
    with method.inference(mllm):
        got = [answer(mllm, j) for j in range(2)]
    assert np.allclose(got, expected, atol=1e-4)
    assert not np.allclose(got, plain, atol=1e-2)  # the merge is not the last task's adapter
    assert [answer(mllm, j) for j in range(2)] == plain  # the context is gone on exit
    assert all(torch.equal(layer.base_layer.weight, weights[n]) for n, layer in layers)
    assert list(mllm.model.peft_config) == ["task0", "task1"]


# ---- MR-LoRA ----------------------------------------------------------------------------


def test_mrlora_keeps_each_expert_and_routes_items_to_their_own(mllm, tiny_llava_dir, monkeypatch):
    """Each task trains its own adapter and projector copy, which later tasks leave alone;
    the router, trained on a few items of each task, sends each held-out item to its task's
    expert, and inside the inference context the item is answered by that expert alone."""
    # lr 3e-3: the tiny random model must learn the letters from scratch in 10 epochs
    # (the reference's 5e-6 is for LLaVA-7B, which reads the routing prompt already)
    opts = {"r": 8, "alpha": 16, "router_samples": 4, "router_epochs": 10, "router_lr": 3e-3}
    method = create_method("mrlora", opts, family="mllm")
    method.setup(mllm)
    import retain.methods.mrlora as mrlora

    bars, real_bar = [], mrlora.bar  # the router's training shows a bar whose total is the steps it takes

    def recorded(**kw):
        seen = {**kw, "steps": 0}
        bars.append(seen)
        progress = real_bar(**kw)
        step = progress.update

        def update(n=1):
            seen["steps"] += n
            step(n)

        progress.update = update
        return progress

    monkeypatch.setattr(mrlora, "bar", recorded)
    projector = mllm.projector_parameters()
    initial = [p.detach().clone() for p in projector]
    splits = separable_tasks()
    kept, checkpointed = [], set()
    for k in range(2):
        ctx = context(mllm, splits, k)
        method.before_task(ctx)
        assert all(torch.equal(p, q) for p, q in zip(projector, initial))  # every expert starts from the model's
        names = {n for n, p in mllm.named_parameters() if any(p is q for q in method.trainable(mllm))}
        assert all(f"lora_A.task{k}." in n or f"lora_B.task{k}." in n or "projector" in n for n in names)
        saved = method.saved_parameters(mllm)  # what the engine checkpoints from this task on
        checkpointed |= {n for n, p in mllm.named_parameters() if any(p is q for q in saved)}
        randomise(mllm, f"lora_B.task{k}.", seed=k)
        randomise(mllm, "multi_modal_projector", std=0.05, seed=10 + k)
        experts = {n: p.detach().clone() for n, p in mllm.named_parameters() if ".task" in n}
        method.after_task(ctx)
        assert all(torch.equal(p, experts[n]) for n, p in mllm.named_parameters() if n in experts)  # router only
        with method.routed(k):
            kept.append([answer(mllm, j) for j in range(2)])
    with method.routed(0):  # task 1 changed neither task 0's adapter nor its projector
        assert [answer(mllm, j) for j in range(2)] == kept[0]
    # after each task: 4 items of each task so far, 10 epochs, batches of image items and of text items
    assert [b["desc"] for b in bars] == [f"MR-LoRA router ({4 * k} items, 10 epochs)" for k in (1, 2)]
    assert all(b["steps"] == b["total"] > 0 for b in bars), bars
    assert not np.allclose(kept[0], kept[1], atol=1e-2)
    images, questions = [im for im, _ in HELD_OUT], [q for _, q in HELD_OUT]
    assert method.router.assign(mllm, images, questions) == [0, 1]
    few = [(t, i) for t in range(2) for i in method.samples[t].tolist()]
    assert len(few) == 8 and method.router.assign(mllm, [splits[t].images[i] for t, i in few],
                                                  [splits[t].questions[i] for t, i in few]) == [t for t, _ in few]
    with method.inference(mllm):
        routed = [answer(mllm, j) for j in range(2)]
    assert routed == [kept[0][0], kept[1][1]]
    # resume: the adapters, the experts' projectors, the few-shot set and the router come back
    state = method.state_dict()
    saved = {n: p.detach().clone() for n, p in mllm.named_parameters() if n in checkpointed}
    other = fresh(tiny_llava_dir)
    again = create_method("mrlora", opts, family="mllm")
    again.setup(other)
    again.load_state_dict(state)
    named = dict(other.named_parameters())
    with torch.no_grad():
        for n, v in saved.items():
            named[n].copy_(v)
    again.before_task(context(other, splits, 1))  # what a resumed run calls first (names, splits)
    assert again.router.assign(other, images, questions) == [0, 1]
    with again.inference(other):
        assert [answer(other, j) for j in range(2)] == routed


# ---- KeepLoRA -----------------------------------------------------------------------------


def test_keeplora_subspace_algebra_by_hand():
    from retain.methods.keeplora import extend_subspace, residual_basis, weight_subspace

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    w = torch.from_numpy(u[:, :4] @ np.diag([3.0, 2.0, 1.0, 0.5]) @ v.T)  # (out 5, in 4)
    # sigma^2 = 9, 4, 1, 0.25 of 14.25: cumulative shares 0.632, 0.912, 0.982, 1
    for energy, k in ((0.6, 1), (0.95, 2), (0.99, 3)):  # fewer than `energy`, at least one
        m = weight_subspace(w, energy)
        assert m.shape == (k, 4) and torch.allclose(m.T @ m, torch.from_numpy(v[:, :k] @ v[:, :k].T), atol=1e-12)
    # the residual basis: orthogonal to M, the top directions of (I - M^T M) G^T
    g = torch.from_numpy(rng.normal(size=(3, 6)))  # (out 3, in 6)
    m = torch.from_numpy(np.linalg.qr(rng.normal(size=(6, 2)))[0].T)  # (2, 6), orthonormal rows
    a = residual_basis(g, m, 2)
    r = (np.eye(6) - m.numpy().T @ m.numpy()) @ g.numpy().T
    top = np.linalg.svd(r)[0][:, :2]
    assert a.dtype == torch.float64 and torch.allclose(a @ a.T, torch.eye(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a @ m.T, torch.zeros(2, 2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a.T @ a, torch.from_numpy(top @ top.T), atol=1e-12)
    assert torch.equal(residual_basis(g, m, 5)[3:], torch.zeros(2, 6, dtype=torch.float64))  # rank 3 at most
    # extending by energy: G^T = 3 e1 f1^T + 2 e2 f2^T + 1 e3 f3^T, ||G||^2 = 14, M = e1 (9/14 = 0.643 held)
    gt = np.zeros((4, 3))
    gt[0, 0], gt[1, 1], gt[2, 2] = 3.0, 2.0, 1.0
    g, e1 = torch.from_numpy(gt.T), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    assert torch.equal(extend_subspace(e1, g, 0.6), e1)  # 0.643 >= 0.6: nothing added
    grown = extend_subspace(e1, g, 0.9)  # + e2: 13/14 = 0.929
    assert torch.allclose(grown.abs(), torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=torch.float64))
    grown = extend_subspace(e1, g, 0.95)  # + e2 + e3: 14/14
    assert torch.allclose(grown.abs(), torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]],
                                                    dtype=torch.float64))


def test_keeplora_update_spares_the_kept_subspace(mllm, tiny_llava_dir):
    from retain.methods.keeplora import project_out

    method = create_method("keeplora", {"r": 4, "alpha": 1, "gradient_fraction": 0.5}, family="mllm")
    method.setup(mllm)
    splits = separable_tasks()
    ctx = context(mllm, splits, 0)
    layers = lora_layers(mllm.model)
    name, layer = layers[0]
    # the task's mean gradient of this layer, by hand: items 0, 2.5 -> 2, 5 (evenly spaced, half of 6), one batch
    weight = layer.base_layer.weight
    weight.requires_grad_(True)
    idx = [0, 2, 5]
    loss = mllm.training_loss([splits[0].images[i] for i in idx], [splits[0].questions[i] for i in idx],
                              [splits[0].answers[i] for i in idx])
    (grad,) = torch.autograd.grad(loss, [weight])
    weight.requires_grad_(False)
    m0 = method.subspaces[name].clone()
    method.before_task(ctx)
    a = layer.lora_A["default"].weight.detach()
    assert torch.allclose(a @ a.T, torch.eye(4), atol=1e-5)  # float32 SVD: orthonormal to ~1e-6
    assert float((a @ m0.T).abs().max()) < 1e-5
    u = torch.linalg.svd(project_out(grad.double(), m0.double()))[0][:, :4]
    assert torch.allclose(a.double().T @ a.double(), u @ u.T, atol=1e-4)
    params = method.trainable(mllm)
    assert not any(p is lyr.lora_A["default"].weight for _, lyr in layers for p in params)  # A is frozen
    assert all(any(p is lyr.lora_B["default"].weight for p in params) for _, lyr in layers)
    randomise(mllm, "lora_B")  # "trained"
    x = torch.randn(3, m0.shape[0]) @ m0  # inputs inside the kept subspace
    with torch.no_grad():
        assert torch.allclose(layer(x), layer.base_layer(x), atol=1e-5)
        y = torch.randn(3, m0.shape[1])
        assert not torch.allclose(layer(y), layer.base_layer(y), atol=1e-3)
    before = {n: lyr.base_layer.weight.detach().clone() + delta_weight(lyr, "default").detach() for n, lyr in layers}
    method.after_task(ctx)
    for n, lyr in layers:  # merged, the adapter zeroed, the subspace grown and still orthonormal
        assert torch.allclose(lyr.base_layer.weight, before[n], atol=1e-6)
        assert float(lyr.lora_B["default"].weight.detach().abs().max()) == 0.0
        m = method.subspaces[n]
        assert m.shape[0] >= m0.shape[0] if n == name else True
        assert torch.allclose(m @ m.T, torch.eye(m.shape[0]), atol=1e-4)
    assert method.subspaces[name].shape[0] > m0.shape[0]
    other = fresh(tiny_llava_dir)
    again = create_method("keeplora", {"r": 4, "alpha": 1}, family="mllm")
    again.setup(other)
    again.load_state_dict(method.state_dict())
    assert all(torch.equal(again.subspaces[n], method.subspaces[n]) for n in method.subspaces)


# ---- SMoLoRA ------------------------------------------------------------------------------


def test_smolora_layer_is_the_separable_mixture_by_hand():
    from retain.methods.smolora import Routes, SMoLoRALinear

    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5).double()
    routes = Routes()
    layer = SMoLoRALinear(base, r=8, alpha=16, experts=4, vu_dim=3, if_dim=2, dropout=0.0, routes=routes, index=0)
    layer.double()
    with torch.no_grad():
        for p in (layer.lora_B, layer.lora_fuse_vu.weight, layer.lora_fuse_if.weight):
            p.normal_()
        layer.lora_vu_router.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))  # VU expert = larger of z_vu[:2]
        layer.lora_if_router.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0]]))  # IF expert = larger of z_if
    z_vu = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], dtype=torch.float64)  # items: VU 0, VU 1
    z_if = torch.tensor([[0.1, 0.7], [0.6, 0.3]], dtype=torch.float64)  # items: IF 1, IF 0 (experts 3, 2)
    routes.features = (z_vu, z_if)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x)
        for b, (v, i) in enumerate(((0, 3), (1, 2))):
            s = 16 / 8
            u_vu = s * x[b] @ layer.lora_A[v].T @ layer.lora_B[v].T
            u_if = s * x[b] @ layer.lora_A[i].T @ layer.lora_B[i].T
            scores = torch.stack([u_vu @ layer.lora_fuse_vu.weight[0], u_if @ layer.lora_fuse_if.weight[0]], -1)
            w = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
            assert torch.allclose(got[b], base(x[b]) + w[:, :1] * u_vu + w[:, 1:] * u_if, atol=1e-12)
    routes.features = None
    routes.fixed = (1, 0)  # a routed group: VU expert 1, IF expert 0 (expert 2) for every row
    with torch.no_grad():
        fixed = layer(x)
    routes.fixed, routes.features = None, (z_vu[[1, 1]], z_if[[1, 1]])
    with torch.no_grad():
        assert torch.allclose(fixed, layer(x), atol=1e-12)


def test_smolora_routes_images_and_instructions_separately(mllm):
    """The VU experts follow the image alone and the IF experts the question alone; a task's
    gradient reaches only the experts its items picked; the routers take none; the model is
    unchanged until trained; inside the inference context each item gets its own routes."""
    method = create_method("smolora", {"r": 16, "alpha": 32}, family="mllm")
    before = answer(mllm, 0)
    method.setup(mllm)
    dark, bright = np.full((8, 8, 3), 10, np.uint8), np.full((8, 8, 3), 240, np.uint8)
    q1, q2 = "Alpha alpha question 1?", "Beta beta query number 2!"
    keys = method.router.assign(mllm, [dark, dark, bright], [q1, q2, q1])
    vu = [k[0::2] for k in keys]  # each layer's VU expert
    fi = [k[1::2] for k in keys]  # each layer's IF expert
    assert vu[0] == vu[1] and fi[0] == fi[2]  # same image: same VU experts; same question: same IF experts
    assert vu[0] != vu[2] and fi[0] != fi[1]  # and they do move with their own input
    with method.inference(mllm):
        assert np.allclose(answer(mllm, 0), before, atol=1e-5)  # B = 0: a no-op until trained
    # gradients: only the picked experts (and the fusion maps), never the routers
    ctx = context(mllm, separable_tasks(), 0)
    items = {"images": [dark, bright], "questions": [q1, q2], "answers": ["a", "b"]}
    method.extend_batch(items, ctx)
    randomise(mllm, "lora_B", std=0.1)
    params = method.trainable(mllm)
    for p in mllm.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    inputs = mllm.training_batch(items["images"], items["questions"], items["answers"])
    mllm.model(**inputs).loss.backward()
    picks = method.router.assign(mllm, items["images"], items["questions"])
    for k, layer in enumerate(method.layers):
        used = {picks[b][2 * k] for b in range(2)} | {layer.half + picks[b][2 * k + 1] for b in range(2)}
        touched = {e for e in range(layer.lora_B.shape[0]) if float(layer.lora_B.grad[e].abs().sum()) > 0}
        assert touched == used
        assert layer.lora_vu_router.weight.grad is None and layer.lora_if_router.weight.grad is None
    assert not any(p is layer.lora_vu_router.weight for layer in method.layers for p in params)
    # per-item training routes == each item answered in its own routed group
    with torch.no_grad():
        together = mllm.model(**inputs).logits
        for b in range(2):
            one = mllm.training_batch([items["images"][b]], [items["questions"][b]], [items["answers"][b]])
            with method.router.activate(picks[b]):
                alone = mllm.model(**{k: v for k, v in one.items() if k != "labels"}).logits[0]
            n = alone.shape[0]
            assert torch.allclose(together[b, :n], alone, atol=1e-4)


# ---- end to end -------------------------------------------------------------------------------


NEW = ["smolora", "mrlora", "keeplora", "task_arithmetic", "ties"]
TINY = {"smolora": {"r": 16, "alpha": 32}, "mrlora": {"r": 8, "alpha": 16, "router_samples": 4, "router_epochs": 2},
        "keeplora": {"r": 4, "alpha": 1}}


def test_new_methods_run_a_sequence_and_resume(tmp_path, tiny_llava_dir):
    """Two tasks through the CLI for every new method (DoRA through lora_ft), one of them killed
    after its first task and resumed: the resumed run ends as the uninterrupted one."""
    from test_cli import results, retain, tiny_config

    def config(path, methods):
        path.mkdir(parents=True, exist_ok=True)
        return tiny_config(path, tiny_llava_dir, sequence=["digit-read", "textile-inspect"], probes=[], methods=methods,
                           train={"lr": 1e-3, "batch_size": 4, "warmup_steps": 1, "epochs": 1, "train_limit": 8},
                           eval={"limit": 4, "emt_tasks": [], "max_new_tokens": 4},
                           method_args={**TINY, "lora_ft": {"dora": True}})

    retain("run", config(tmp_path / "a", [*NEW, "lora_ft"]), timeout=1200)
    for m in [*NEW, "lora_ft"]:
        A = np.asarray(results(tmp_path / "a", m)["accuracy_matrix"])
        assert A.shape == (3, 2) and ((A >= 0) & (A <= 1)).all()
    resumed = ["mrlora", "keeplora"]  # the ones with state beyond their parameters (few-shot set, subspaces)
    for m in resumed:
        cfg = config(tmp_path / f"b-{m}", [m])
        killed = retain("run", cfg, kill_after=1, check=False)
        assert killed.returncode != 0
        retain("run", cfg, "--resume")
        a, b = results(tmp_path / "a", m), results(tmp_path / f"b-{m}", m)
        assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["evaluation"]["curve"] == b["evaluation"]["curve"]
