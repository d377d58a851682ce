"""Sweeps: a list for a method option that is not list-typed runs each value as its own run."""

from __future__ import annotations

import json

import pytest
import yaml

from retain.config import load_config
from retain.methods import Variant, expand_methods
from retain.errors import RetainError


def expand(*overrides, path=None):
    return expand_methods(load_config(path, list(overrides)))


def test_scalar_options_keep_the_plain_method_name():
    assert expand("methods=[finetune,ldifs]", "method_args.ldifs.alpha=10") == [
        Variant("finetune", "finetune", {}),
        Variant("ldifs", "ldifs", {"alpha": 10}),
    ]


def test_list_on_a_float_option_is_a_sweep_in_list_order():
    got = expand("methods=[finetune,ldifs]", "method_args.ldifs.alpha=[10,100.0,0.5,1e-05]")
    assert [v.label for v in got] == ["finetune", "ldifs-alpha-10", "ldifs-alpha-100", "ldifs-alpha-0.5",
                                      "ldifs-alpha-1e-05"]
    assert [v.args for v in got[1:]] == [{"alpha": 10}, {"alpha": 100.0}, {"alpha": 0.5}, {"alpha": 1e-05}]
    assert all(v.method == "ldifs" for v in got[1:])


def test_list_on_a_list_option_is_a_plain_value():
    got = expand("methods=[ldifs]", "method_args.ldifs.taps=[0,3,6]", "method_args.ldifs.alpha=100")
    assert got == [Variant("ldifs", "ldifs", {"taps": [0, 3, 6], "alpha": 100})]


def test_two_swept_options_give_the_product_in_written_order():
    got = expand("methods=[ldifs]", "method_args.ldifs.alpha=[10,100]", "method_args.ldifs.taps=[0,2]",
                 "method_args.ldifs.normalize=[channel,token]")
    assert [v.label for v in got] == [
        "ldifs-alpha-10-normalize-channel", "ldifs-alpha-10-normalize-token",
        "ldifs-alpha-100-normalize-channel", "ldifs-alpha-100-normalize-token",
    ]
    assert got[-1].args == {"alpha": 100, "taps": [0, 2], "normalize": "token"}


def test_empty_sweep_is_an_error_naming_the_key():
    with pytest.raises(RetainError, match=r"method_args\.ldifs\.alpha"):
        expand("methods=[ldifs]", "method_args.ldifs.alpha=[]")


def test_sweep_from_a_yaml_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"methods": ["ldifs", "finetune"], "method_args": {"ldifs": {"alpha": [10, 100]}}}))
    got = expand(path=path)
    assert [(v.method, v.label, v.args) for v in got] == [
        ("ldifs", "ldifs-alpha-10", {"alpha": 10}),
        ("ldifs", "ldifs-alpha-100", {"alpha": 100}),
        ("finetune", "finetune", {}),
    ]


def test_bad_sweep_value_fails_before_any_training(tmp_path, capsys):
    from retain.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"methods": ["ldifs"], "output_dir": str(tmp_path / "runs"),
                                    "method_args": {"ldifs": {"alpha": [10, "much"]}}}))
    assert main(["run", str(path)]) == 2
    assert "method_args.ldifs.alpha" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_sweep_runs_each_value_in_its_own_run_directory(tmp_path, tiny_clip_dir):
    from retain.cli import main

    cfg = {
        "name": "sweep",
        "model": str(tiny_clip_dir),
        "sequence": ["digits"],
        "probes": ["animal-mnist"],
        "methods": ["ldifs"],
        "method_args": {"ldifs": {"alpha": [1.0, 1000]}},
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "train": {"lr": 1e-3, "batch_size": 16, "warmup_steps": 1, "max_steps": 2, "train_limit": 32},
        "eval": {"limit": 20, "probe_limit": 20, "linear_probe": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--quiet", "run", str(path)]) == 0
    group = tmp_path / "runs" / "sweep"
    labels, alphas = [], []
    for label, alpha in (("ldifs-alpha-1", 1.0), ("ldifs-alpha-1000", 1000.0)):
        res = json.loads((group / label / "results.json").read_text())
        assert res["method"] == "ldifs"
        labels.append(res["label"])
        stored = yaml.safe_load((group / label / "config.yaml").read_text())
        assert stored["method"] == "ldifs" and stored["method_args"]["ldifs"]["alpha"] == alpha
        alphas.append(stored["method_options"]["alpha"])
    assert labels == ["ldifs-alpha-1", "ldifs-alpha-1000"]
    assert alphas == [1.0, 1000.0]
    assert not (group / "ldifs").exists()
