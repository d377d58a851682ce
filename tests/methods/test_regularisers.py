"""Regularisers against direct computations of their published formulas."""

import copy

import numpy as np
import pytest
import torch

from retain.data.task import ImageSplit, Task
from retain.errors import RetainError
from retain.methods import create_method
from retain.methods.base import TaskContext
from retain.methods.ewc import diagonal_fisher
from retain.methods.l2sp import l2sp_penalty
from retain.methods.ldifs import default_taps, ldifs_distance
from retain.methods.wise_ft import interpolate_
from retain.registry import load_dual_encoder
from retain.models.classifier import ImageClassifier


def test_default_taps_match_the_paper_for_a_12_block_vit():
    assert default_taps(12) == (0, 3, 6, 9, 12)
    assert default_taps(4) == (0, 1, 2, 3, 4)


def _ldifs_by_loops(cur, fro, mode):
    """R = mean_b (1/L) sum_l mean_{t,d} (n(phi) - n(phi0))^2, written with explicit loops."""
    B, L = cur[0].shape[0], len(cur)
    total = 0.0
    for b in range(B):
        acc = 0.0
        for c, f in zip(cur, fro):
            x, y = c[b].double(), f[b].double()  # (T, D)
            if mode == "channel":
                x = x / x.norm(dim=1, keepdim=True)
                y = y / y.norm(dim=1, keepdim=True)
            else:
                x = x / x.norm(dim=0, keepdim=True)
                y = y / y.norm(dim=0, keepdim=True)
            T, D = x.shape
            acc += sum(float((x[t, d] - y[t, d]) ** 2) for t in range(T) for d in range(D)) / (T * D)
        total += acc / L
    return total / B


@pytest.mark.parametrize("mode", ["channel", "token"])
def test_ldifs_distance_equals_formula(mode):
    g = torch.Generator().manual_seed(0)
    cur = [torch.randn(3, 5, 4, generator=g) for _ in range(3)]
    fro = [torch.randn(3, 5, 4, generator=g) for _ in range(3)]
    assert float(ldifs_distance(cur, fro, mode)) == pytest.approx(_ldifs_by_loops(cur, fro, mode), rel=1e-5)
    assert float(ldifs_distance(cur, cur, mode)) == pytest.approx(0.0, abs=1e-12)


def test_two_normalisations_differ():
    g = torch.Generator().manual_seed(1)
    cur = [torch.randn(2, 6, 3, generator=g)]
    fro = [torch.randn(2, 6, 3, generator=g)]
    assert float(ldifs_distance(cur, fro, "channel")) != pytest.approx(float(ldifs_distance(cur, fro, "token")))


def test_default_is_the_reference_codes_normalisation_at_the_papers_alpha():
    """omegafragger/ldifs_code normalises (B, T, D) taps over dim 1 (tokens); retain's default does too,
    with the paper's alpha, and the two axes differ by about D/T for unit-norm features."""
    from retain.methods.ldifs import PAPER_ALPHA, LDIFSOptions

    opts = LDIFSOptions()
    assert opts.normalize == "token" and opts.alpha == PAPER_ALPHA == 10.0
    g = torch.Generator().manual_seed(2)
    cur = [torch.randn(2, 6, 3, generator=g)]
    fro = [torch.randn(2, 6, 3, generator=g)]
    assert float(ldifs_distance(cur, fro)) == pytest.approx(_ldifs_by_loops(cur, fro, "token"), rel=1e-5)
    # T = 17, D = 192 (mini-CLIP's taps): independent directions give 2/T against 2/D per entry
    cur = [torch.randn(64, 17, 192, generator=g, dtype=torch.float64)]
    fro = [torch.randn(64, 17, 192, generator=g, dtype=torch.float64)]
    ratio = float(ldifs_distance(cur, fro, "token") / ldifs_distance(cur, fro, "channel"))
    assert ratio == pytest.approx(192 / 17, rel=0.05)


def test_l2sp_penalty_equals_half_squared_distance():
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    a = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert float(l2sp_penalty(p, a)) == pytest.approx(0.5 * (1 + 4 + 4))


def test_ewc_fisher_of_logistic_regression_by_hand():
    # For logits = W x, d log p(y|x) / dW = (onehot(y) - softmax(W x)) x^T.
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2, bias=False)
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, 1, 0])

    def ll(i):
        return torch.log_softmax(lin(x[i:i + 1]), -1)[0, y[i]]

    fisher = diagonal_fisher([lin.weight], ll, 4)[0]
    with torch.no_grad():
        p = torch.softmax(x @ lin.weight.T, -1)
        expected = torch.zeros(2, 3)
        for i in range(4):
            g = torch.outer(torch.nn.functional.one_hot(y[i], 2).float() - p[i], x[i])
            expected += g ** 2
        expected /= 4
    torch.testing.assert_close(fisher, expected)


def test_wise_ft_endpoints_and_midpoint():
    model = torch.nn.Linear(2, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    tuned = {k: v.clone() for k, v in model.state_dict().items()}

    m0 = copy.deepcopy(model)
    interpolate_(m0, start, 0.0)
    torch.testing.assert_close(m0.weight, start["weight"])
    m1 = copy.deepcopy(model)
    interpolate_(m1, start, 1.0)
    torch.testing.assert_close(m1.weight, tuned["weight"])
    mh = copy.deepcopy(model)
    interpolate_(mh, start, 0.5)
    torch.testing.assert_close(mh.weight, start["weight"] + 0.5)


def _task(n=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    split = ImageSplit(rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), rng.integers(0, classes, n))
    return Task("toy", ["cat", "dog", "bird"][:classes], {"train": split, "val": split, "test": split})


def _ctx(model, task):
    return TaskContext(task=task, index=0, train=task.split("train"), model=model, tasks=[task],
                       train_splits=[task.split("train")], device=torch.device("cpu"), seed=0, batch_size=4)


def test_ldifs_cache_equals_running_the_frozen_model(tiny_clip_dir):
    enc = load_dual_encoder(str(tiny_clip_dir))
    task = _task()
    model = ImageClassifier(enc, [task])
    cached, live = create_method("ldifs"), create_method("ldifs", {"cache_frozen": False})
    for m in (cached, live):
        m.setup(model)
        m.before_task(_ctx(model, task))
    with torch.no_grad():  # move the model away from its anchor
        for p in model.encoder.vision.parameters():
            p.add_(0.01 * torch.randn_like(p))
    idx = torch.tensor([3, 0, 7])
    pixels = enc.preprocess(task.split("train").images[idx.numpy()])
    out = model(pixels, ["toy"] * 3, taps=cached.taps)
    batch = {"index": idx, "pixel_values": pixels}
    first = cached.loss(batch, out, None)  # computes and stores the anchor features
    assert cached.filled[idx].all() and not cached.filled[[1, 2]].any()
    with torch.no_grad():  # poison the frozen copy: a second call must read the cache
        for p in cached.frozen.vision.parameters():
            p.mul_(0)
    again = cached.loss(batch, out, None)
    r_live = live.loss(batch, out, None)
    assert float(r_live.detach()) > 0
    torch.testing.assert_close(first, r_live)
    torch.testing.assert_close(again, r_live)
    assert cached.taps == (0, 1, 2, 3, 4)


def test_method_registry_errors():
    with pytest.raises(RetainError, match="Did you mean 'ldifs'"):
        create_method("ldif")
    with pytest.raises(RetainError, match="method_args.ldifs.alpa"):
        create_method("ldifs", {"alpa": 3})
    assert create_method("ldifs").opts.alpha == 10.0


def test_wise_ft_hooks_alpha_zero_restores_the_start(tiny_clip_dir):
    enc = load_dual_encoder(str(tiny_clip_dir))
    task = _task()
    model = ImageClassifier(enc, [task])
    start = {k: v.clone() for k, v in model.state_dict().items()}
    method = create_method("wise_ft", {"alpha": 0.0})
    method.before_task(_ctx(model, task))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    method.after_task(_ctx(model, task))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, start[k])


def test_replay_buffer_is_bounded_and_shared_equally():
    method = create_method("replay", {"buffer_size": 30, "replay_fraction": 0.5})
    method.setup(None)
    tasks = [_task(n=40, seed=s) for s in range(3)]
    for t in tasks:
        t.name = f"toy{tasks.index(t)}"
    for k, t in enumerate(tasks):
        ctx = TaskContext(task=t, index=k, train=t.split("train"), model=None, tasks=tasks,
                          train_splits=[x.split("train") for x in tasks], device=torch.device("cpu"),
                          seed=k, batch_size=8)
        method.after_task(ctx)
        counts = torch.bincount(method.buffer[:, 0], minlength=k + 1)
        assert len(method.buffer) <= 30
        assert counts.tolist() == [30 // (k + 1)] * (k + 1)
    # the buffer survives a resume
    again = create_method("replay")
    again.load_state_dict(method.state_dict())
    torch.testing.assert_close(again.buffer, method.buffer)


def test_ldifs_penalty_is_zero_at_the_first_step_of_every_task_through_the_trainer(tmp_path, tiny_clip_dir,
                                                                                  monkeypatch):
    """Each task starts with its anchor equal to the model: the first penalty is exactly 0;
    after a step the features moved and the penalty is not 0."""
    from retain.config import load_config
    from retain.families.dual_encoder import run_method
    from retain.methods.ldifs import LDIFS

    seen: dict[int, list[float]] = {}
    loss = LDIFS.loss

    def recording(self, batch, outputs, ctx):
        value = loss(self, batch, outputs, ctx)
        seen.setdefault(ctx.index, []).append(float(value.detach()))
        return value

    monkeypatch.setattr(LDIFS, "loss", recording)
    cfg = load_config(None, [f"model={tiny_clip_dir}", "sequence=[digits, textile]", "probes=[]",
                             f"output_dir={tmp_path}", "train.lr=1e-3", "train.batch_size=16",
                             "train.warmup_steps=1", "train.max_steps=3", "train.train_limit=32", "eval.limit=16"])
    run_method(cfg, "ldifs")
    assert sorted(seen) == [0, 1] and all(len(v) >= 2 for v in seen.values()), seen
    assert [v[0] for v in seen.values()] == [0.0, 0.0]
    assert all(v[-1] > 0 for v in seen.values())
