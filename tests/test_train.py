"""Every registered method through the real trainer on a tiny model, and the properties each must keep."""

import numpy as np
import pytest
import torch

from retain.config import load_config
from retain.methods import METHODS
from retain.registry import load_dual_encoder
from retain.schedule import warmup_cosine
from retain.families.dual_encoder import run_method


def tiny(tmp_path, model, **over):
    base = [f"model={model}", "sequence=[digits, textile]", "probes=[animal-mnist]", f"output_dir={tmp_path}",
            "train.lr=1e-3", "train.batch_size=16", "train.warmup_steps=1", "train.max_steps=2",
            "train.train_limit=32", "eval.limit=32", "eval.probe_limit=32"]
    return load_config(None, base + [f"{k}={v}" for k, v in over.items()])


@pytest.mark.parametrize("method", sorted(n for n, c in METHODS.items() if "dual_encoder" in c.families))
def test_every_method_runs_through_the_trainer(tmp_path, tiny_clip_dir, method):
    cfg = tiny(tmp_path, tiny_clip_dir)
    res = run_method(cfg, method)
    A = np.asarray(res["accuracy_matrix"])
    assert A.shape == (3, 2)
    assert set(res["metrics"]) == {"MFT", "MFN", "MAA", "BWT", "forgetting", "forward_transfer"}
    zs = res["concept_forgetting"]["zero_shot"]
    if method == "zeroshot":  # no training: every row is the pre-trained model
        assert (A == A[0]).all() and zs["delta"] == {"animal-mnist": 0.0}
    if method in ("finetune", "ldifs", "flyp"):
        assert (A[1:] != A[0]).any()


def test_linear_probe_changes_heads_only(tmp_path, tiny_clip_dir):
    from safetensors.torch import load_file

    cfg = tiny(tmp_path, tiny_clip_dir, sequence="[digits]")
    run_method(cfg, "linear_probe")
    state = load_file(str(tmp_path / "run" / "linear_probe" / "checkpoints" / "after-task-1" / "model.safetensors"))
    enc = load_dual_encoder(str(tiny_clip_dir))
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(state[f"encoder.{k}"], v)
    from retain.data import load_task

    task = load_task("digits")  # the probe starts from the zero-shot head and must have moved it
    zero_shot = enc.zero_shot_head(task.class_names, task.templates) * enc.logit_scale.exp()
    assert state["heads.digits"].shape == zero_shot.shape
    assert (state["heads.digits"] - zero_shot).abs().max() > 1e-3


def test_warmup_then_cosine_schedule():
    assert warmup_cosine(0, 4, 10) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 10) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 10) == pytest.approx(1.0)
    assert warmup_cosine(7, 4, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 4, 10) == pytest.approx(0.0)
