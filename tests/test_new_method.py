"""docs/new_method.md's example method, read out of the page: its penalty against the formula,
an end-to-end run as a plugin, and the errors a plugin can meet."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_cli import ROOT, results, retain, tiny_config

from retain.data.task import ImageSplit, Task
from retain.errors import RetainError
from retain.methods import METHODS, TaskContext, create_method, load_plugins
from retain.registry import load_dual_encoder
from retain.models.classifier import ImageClassifier


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory) -> Path:
    page = (ROOT / "docs" / "new_method.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    path = tmp_path_factory.mktemp("plugin") / "embedding_distill.py"
    path.write_text(code)
    return path


def test_penalty_equals_its_formula(plugin_file, tiny_clip_dir):
    assert "embedding_distill" in load_plugins([str(plugin_file)]) or "embedding_distill" in METHODS
    rng = np.random.default_rng(0)
    split = ImageSplit(rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8), rng.integers(0, 2, 6))
    task = Task("toy", ["cat", "dog"], {"train": split, "val": split, "test": split})
    model = ImageClassifier(load_dual_encoder(str(tiny_clip_dir)), [task])
    method = create_method("embedding_distill", {"weight": 3.0})
    method.before_task(TaskContext(task=task, index=0, train=split, model=model, tasks=[task], train_splits=[split],
                                   device=torch.device("cpu"), seed=0, batch_size=6))
    pixels = model.encoder.preprocess(split.images)
    with torch.no_grad():
        before = model.encoder.image_forward(pixels)[0].clone()
        assert float(method.loss({"pixel_values": pixels}, model(pixels, ["toy"] * 6), None)) == pytest.approx(0, abs=1e-10)
        for p in model.encoder.vision.parameters():
            p.add_(0.05 * torch.randn_like(p))
        outputs = model(pixels, ["toy"] * 6)
    a, b = outputs["features"].double().numpy(), before.double().numpy()
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    expected = 3.0 * np.mean(np.sum((a - b) ** 2, axis=1))
    assert expected > 1e-4
    # the loss is float32: a - b loses eps32 * |a| / |a - b| (~1e-5 relative here) to cancellation
    assert float(method.loss({"pixel_values": pixels}, outputs, None)) == pytest.approx(expected, rel=1e-4)
    assert F.normalize(outputs["features"], dim=-1).shape == (6, model.encoder.image_forward(pixels)[0].shape[1])


def test_plugin_runs_end_to_end(tmp_path, plugin_file, tiny_clip_dir):
    cfg = tiny_config(tmp_path, tiny_clip_dir, methods=["embedding_distill"], sequence=["digits"],
                      plugins=[str(plugin_file)], method_args={"embedding_distill": {"weight": 10.0}})
    out = retain("run", cfg).stdout
    assert "embedding_distill" in out
    res = results(tmp_path, "embedding_distill")
    assert np.asarray(res["accuracy_matrix"]).shape == (2, 1)
    run = tmp_path / "runs" / "tiny" / "embedding_distill"
    assert (run / "report.html").exists()
    assert "weight: 10.0" in (run / "config.yaml").read_text()  # its options are recorded like a built-in's


def test_plugin_errors_name_the_file(tmp_path):
    with pytest.raises(RetainError, match="is not a Python file"):
        load_plugins([str(tmp_path / "missing.py")])
    broken = tmp_path / "broken.py"
    broken.write_text("import retain\nraise RuntimeError('half written')\n")
    with pytest.raises(RetainError, match=r"importing .*broken.py failed: RuntimeError: half written"):
        load_plugins([str(broken)])
    clash = tmp_path / "clash.py"
    clash.write_text("from retain.methods import Method, register\n\n@register\nclass Mine(Method):\n    name = 'ldifs'\n")
    with pytest.raises(RetainError, match=r"clash.py: method 'ldifs' is already registered"):
        load_plugins([str(clash)])
