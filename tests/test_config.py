"""Configuration: precedence, coercion, unknown keys with suggestions."""

import pytest

from retain.config import load_config
from retain.errors import RetainError


def test_precedence_cli_over_file_over_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: fromfile\ntrain:\n  lr: 1e-4\n  epochs: 3\n")
    cfg = load_config(f, ["train.lr=0.5", "methods=[ldifs, wise_ft]"])
    assert cfg.name == "fromfile" and cfg.train.lr == 0.5 and cfg.train.epochs == 3
    assert cfg.methods == ["ldifs", "wise_ft"] and cfg.train.weight_decay == 0.1  # default kept


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e-5\n")
    assert load_config(f).train.lr == 1e-5


@pytest.mark.parametrize("text, message", [
    ("trian: {lr: 1}\n", "Did you mean 'train'"),
    ("train: {epochz: 1}\n", "train.epochz"),
    ("train: {epochs: 1.5}\n", "whole number"),
    ("train: {lr: fast}\n", "must be a number"),
    ("eval: {linear_probe: 3}\n", "true or false"),
    ("- a\n- b\n", "must hold a mapping"),
    ("train: [1\n", "not valid YAML"),
    ("train: {lr: -1}\n", r"'train.lr' must be > 0, got -1"),
    ("train: {lr: 0}\n", r"'train.lr' must be > 0, got 0"),
    ("train: {lr: .nan}\n", r"'train.lr' must be > 0, got nan"),
    ("train: {batch_size: 0}\n", r"'train.batch_size' must be > 0"),
    ("eval: {limit: -5}\n", r"'eval.limit' must be >= 0"),
    ("seeds: [1, b]\n", r"'seeds\[1\]' must be a number, got 'b'"),
    ("train: {mixed_precision: fp8}\n", r"must be one of no, fp16, bf16, got 'fp8'. Did you mean 'fp16'"),
])
def test_malformed_configs(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(RetainError, match=message):
        load_config(f)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(RetainError, match="key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(RetainError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


def test_a_run_from_before_a_new_key_is_the_same_run():
    from retain.rundir import _differences

    stored = {"seed": 0, "eval": {"limit": 10}}
    defaults = {"seed": 0, "eval": {"limit": 1000, "judge_url": ""}}
    assert _differences(stored, {"seed": 0, "eval": {"limit": 10, "judge_url": ""}}, defaults=defaults) == []
    diff = _differences(stored, {"seed": 0, "eval": {"limit": 10, "judge_url": "http://x"}}, defaults=defaults)
    assert diff == ["eval.judge_url: '<absent>' there, 'http://x' now"]
    assert _differences(stored, {"seed": 1, "eval": {"limit": 10}}, defaults=defaults) == ["seed: 0 there, 1 now"]


def test_override_list_of_hub_datasets_with_options():
    # YAML cannot read hf:x?label=y inside [...]; the override splits such a list on commas
    cfg = load_config(None, ["sequence=[hf:uoft-cs/cifar100?label=fine_label, digits]", "probes=[]"])
    assert cfg.sequence == ["hf:uoft-cs/cifar100?label=fine_label", "digits"] and cfg.probes == []
    with pytest.raises(RetainError, match="Override 'method_args={a: \\[1}': the value is not valid YAML"):
        load_config(None, ["method_args={a: [1}"])


@pytest.mark.parametrize("method, options, message", [
    ("ldifs", {"normalize": "foo"}, r"'method_args.ldifs.normalize' must be one of token, channel, got 'foo'"),
    ("ldifs", {"alpha": -1}, r"'method_args.ldifs.alpha' must be >= 0"),
    ("wise_ft", {"alpha": 1.5}, r"'method_args.wise_ft.alpha' must be >= 0 and <= 1"),
    ("replay", {"buffer_size": -1}, r"'method_args.replay.buffer_size' must be >= 0"),
])
def test_method_options_are_checked_when_read(method, options, message):
    from retain.methods import create_method

    with pytest.raises(RetainError, match=message):
        create_method(method, options)
