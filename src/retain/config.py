"""Typed run configuration: dataclass defaults < YAML preset < `key=value` overrides.

Unknown keys are errors that suggest the nearest known key. The resolved config, with
the seed and library versions, is written into every run directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from retain.errors import RetainError, suggest


@dataclass
class TrainConfig:
    lr: float = 1e-5
    """peak learning rate of AdamW (LDIFS default 1e-5)"""
    weight_decay: float = 0.1
    """AdamW weight decay"""
    batch_size: int = 128
    """items per optimisation step (over all processes)"""
    warmup_steps: int = 500
    """linear warm-up steps, then cosine decay to zero"""
    epochs: int = 1
    """passes over each task's training split"""
    max_steps: int = 0
    """cap on steps per task (0: no cap)"""
    grad_clip: float = 1.0
    """gradient-norm clipping"""
    train_limit: int = 0
    """use at most this many training items per task (0: all)"""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, fp16 or bf16"""


@dataclass
class EvalConfig:
    limit: int = 1000
    """test items per task (0: all)"""
    probe_limit: int = 1000
    """items per split for the linear probes (0: all)"""
    linear_probe: bool = True
    """also measure linear-probe accuracy on the concept-forgetting datasets"""
    emt_tasks: list = field(default_factory=list)
    """MLLM runs: classification datasets evaluated with EMT after every task (or epoch)"""
    emt_mode: str = "rule"
    """MLLM runs: EMT scoring, rule (generate + match) or likelihood (rank the class names)"""
    emt_template: str = ""
    """MLLM runs: EMT prompt with {noun} and {classes} (empty: the paper's template)"""
    encoder: str = ""
    """MLLM runs: the vision encoder as a dual encoder, for EMT's zero-shot column (mini-clip for mini-llava)"""
    judge_url: str = ""
    """MLLM runs: OpenAI-compatible base URL of the LLM judge, for tasks with scorer judge"""
    judge_model: str = ""
    """MLLM runs: the judge's model name at that endpoint"""
    judge_key_env: str = "OPENAI_API_KEY"
    """MLLM runs: the environment variable holding the judge's key (never written anywhere)"""
    every_epoch: bool = False
    """also evaluate after every epoch, not only after every task"""


@dataclass
class RunConfig:
    name: str = "run"
    """run name: the run directory is <output_dir>/<name>/<method>/"""
    model: str = "mini-clip"
    """mini-clip, mini-llava, hf:<hub id>, or a local model folder"""
    family: str = "auto"
    """dual_encoder (CLIP-style) or mllm (LLaVA-style); auto decides from the model"""
    sequence: list = field(default_factory=lambda: ["animal-mnist", "digits"])
    """the tasks trained one after another"""
    probes: list = field(default_factory=lambda: ["fashion-mnist", "easyvqa-shape", "easyvqa-color"])
    """concept-forgetting datasets, outside the sequence"""
    methods: list = field(default_factory=lambda: ["finetune"])
    """methods to run, each in its own run directory"""
    method_args: dict = field(default_factory=dict)
    """per-method options, e.g. {ldifs: {alpha: 10}}; a list for an option that is not list-typed is a sweep,
    one run per value (runs <method>-<option>-<value>/), e.g. {ldifs: {alpha: [10, 100]}}"""
    plugins: list = field(default_factory=list)
    """.py files of your own methods, imported before the methods are created (docs/new_method.md)"""
    seed: int = 0
    """random seed for everything"""
    seeds: list = field(default_factory=list)
    """repeat every method with each of these seeds (runs <method>/seed-<s>/; tables show the mean and its 95% t-interval)"""
    output_dir: str = "runs"
    """where run directories go"""
    report_to: list = field(default_factory=list)
    """experiment trackers to also send metrics to: tensorboard, wandb, mlflow (see retain.tracking)"""
    trust_remote_code: bool = False
    """allow models with custom code (off unless you ask)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict, cls=RunConfig, prefix: str = ""):
    """Build `cls` from a nested dict, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise RetainError(f"Config section {prefix or '<root>'!r} must be a mapping, got {type(data).__name__}.")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise RetainError(f"Unknown config key {full!r}.{suggest(key, names)} Known keys: {', '.join(prefix + n for n in names)}.")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(value, typ, prefix=f"{full}.")
        else:
            kwargs[key] = _coerce(value, typ, full)
    return cls(**kwargs)


def _coerce(value: Any, typ, key: str):
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise RetainError(f"Config key {key!r} must be true or false, got {value!r}.")
    if typ in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RetainError(f"Config key {key!r} must be a number, got {value!r}.")
        if typ is int and float(value) != int(value):
            raise RetainError(f"Config key {key!r} must be a whole number, got {value!r}.")
        return typ(value)
    if typ is str:
        if not isinstance(value, str):
            raise RetainError(f"Config key {key!r} must be a string, got {value!r}.")
        return value
    if typ is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise RetainError(f"Config key {key!r} must be a list, got {value!r}.")
        return value
    if typ is dict:
        if not isinstance(value, dict):
            raise RetainError(f"Config key {key!r} must be a mapping, got {value!r}.")
        return value
    return value


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls=RunConfig):
    """Defaults, then the YAML file at `path`, then `key=value` overrides (dotted keys), as `cls`."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise RetainError(f"Config file {path} does not exist.")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RetainError(f"Config file {path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise RetainError(f"Config file {path} must hold a mapping of keys to values.")
    for item in overrides:
        if "=" not in item:
            raise RetainError(f"Override {item!r} must look like key=value (e.g. train.lr=1e-4).")
        key, raw = item.split("=", 1)
        value = _override_value(item, raw)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RetainError(f"Override {item!r}: {part!r} is not a section.")
        node[parts[-1]] = value
    return from_dict(data, cls)


def _override_value(item: str, raw: str):
    """A YAML value; a [a,b] list whose items YAML cannot read unquoted (hf:x?label=y) is split on commas."""
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        if raw.startswith("[") and raw.endswith("]"):
            return [_override_value(item, part.strip()) for part in raw[1:-1].split(",") if part.strip()]
        if raw.startswith(("[", "{", "'", '"')):
            raise RetainError(f"Override {item!r}: the value is not valid YAML ({e}).") from e
        return raw


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
