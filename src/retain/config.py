"""Typed run configuration: dataclass defaults < YAML preset < `key=value` overrides.

Unknown keys are errors that suggest the nearest known key. Every value is checked when
the config is read, before any data or model loads: its type, its range where the field
declares one (`Annotated[float, POSITIVE]`), its choices where the type is a `Literal`,
and the items of a typed list (`list[int]`). Method options are dataclasses read the same
way. The resolved config, with the seed and library versions, is written into every run
directory.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import yaml

from retain.errors import RetainError, suggest


@dataclass(frozen=True)
class Range:
    """The numbers a config field accepts, declared in its type: `Annotated[float, POSITIVE]`."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def check(self, value, key: str) -> None:
        bounds = (self.gt, operator.gt), (self.ge, operator.ge), (self.lt, operator.lt), (self.le, operator.le)
        if any(bound is not None and not compare(value, bound) for bound, compare in bounds):  # NaN fails them all
            raise RetainError(f"Config key {key!r} must be {self}, got {value!r}.")

    def __str__(self) -> str:
        ops = (">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le)
        return " and ".join(f"{op} {bound:g}" for op, bound in ops if bound is not None)


POSITIVE = Range(gt=0)
NON_NEGATIVE = Range(ge=0)
FRACTION = Range(ge=0, le=1)


@dataclass
class TrainConfig:
    lr: Annotated[float, POSITIVE] = 1e-5
    """peak learning rate of AdamW (LDIFS default 1e-5)"""
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.1
    """AdamW weight decay"""
    batch_size: Annotated[int, POSITIVE] = 128
    """items per optimisation step (over all processes)"""
    warmup_steps: Annotated[int, NON_NEGATIVE] = 500
    """linear warm-up steps, then cosine decay to zero"""
    epochs: Annotated[int, POSITIVE] = 1
    """passes over each task's training split"""
    max_steps: Annotated[int, NON_NEGATIVE] = 0
    """cap on steps per task (0: no cap)"""
    grad_clip: Annotated[float, NON_NEGATIVE] = 1.0
    """gradient-norm clipping"""
    train_limit: Annotated[int, NON_NEGATIVE] = 0
    """use at most this many training items per task (0: all)"""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """accelerate mixed precision: no, fp16 or bf16 (autocast; bf16 also runs on CPU)"""
    gradient_accumulation: Annotated[int, POSITIVE] = 1
    """micro-batches per optimizer step: each process runs batch_size / (processes x this) items at a time; a step
    (max_steps, warmup_steps, eval.every_steps) is still one optimizer step over batch_size items"""
    gradient_checkpointing: bool = False
    """recompute each transformer layer's activations in the backward pass instead of keeping them (transformers'
    gradient_checkpointing_enable, non-reentrant): less memory, about one more forward pass of compute"""
    memory_check: bool = True
    """estimate the run's memory before it starts and refuse one that cannot fit the device (false: only report it)"""

    def __post_init__(self):
        k = self.gradient_accumulation
        if isinstance(k, int) and k > 1 and isinstance(self.batch_size, int) and self.batch_size % k:
            raise RetainError(f"train.batch_size {self.batch_size} is not a multiple of train.gradient_accumulation "
                              f"{k}: a step is {k} equal micro-batches of batch_size / {k} items; make batch_size a "
                              "multiple of it.")


@dataclass
class EvalConfig:
    limit: Annotated[int, NON_NEGATIVE] = 1000
    """test items per task (0: all)"""
    probe_limit: Annotated[int, NON_NEGATIVE] = 1000
    """items per split for the linear probes (0: all)"""
    linear_probe: bool = True
    """also measure linear-probe accuracy on the concept-forgetting datasets"""
    emt_tasks: list = field(default_factory=list)
    """MLLM runs: classification datasets evaluated with EMT after every task (or epoch)"""
    emt_mode: Literal["rule", "likelihood", "judge"] = "rule"
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
    synonyms: dict | str = field(default_factory=dict)
    """MLLM runs: more names per class for EMT's rule matcher, {class: [synonym, ...]} or a YAML file of that
    mapping; each class must be in an EMT dataset's label set"""
    every_epoch: bool = False
    """MLLM runs: also evaluate after every epoch, not only after every task"""
    every_steps: Annotated[int, NON_NEGATIVE] = 0
    """MLLM runs: also evaluate every this many optimizer steps within a task (0: never; EMT's fine-tuning curve)"""
    max_new_tokens: Annotated[int, POSITIVE] = 32
    """MLLM runs: the longest generated answer to an instruction task, in tokens (cut there, it is scored as it
    stands; EMT's rule mode keeps the paper's 16)"""

    def __post_init__(self):
        self.synonym_table()  # a malformed mapping or file fails when the config is read, before any model loads

    def synonym_table(self) -> dict[str, list[str]]:
        """`synonyms` as a mapping of class name to synonyms, read from the YAML file when it names one."""
        table, where = self.synonyms, "Config key 'eval.synonyms'"
        if isinstance(table, str):
            where = f"The synonyms file {table} (eval.synonyms)"
            table = read_yaml(Path(table), where)
        if not isinstance(table, dict):
            raise RetainError(f"{where} must map each class to its synonyms, got {table!r}.")
        out = {}
        for cls, names in table.items():
            names = [names] if isinstance(names, (str, int)) else names
            if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
                raise RetainError(f"{where}: the synonyms of class {cls!r} must be a list of names, got {names!r}.")
            out[str(cls)] = [str(n) for n in names]
        return out


@dataclass
class RunConfig:
    name: str = "run"
    """run name: the run directory is <output_dir>/<name>/<method>/"""
    model: str = "mini-clip"
    """mini-clip, mini-llava, hf:<hub id>, or a local model folder"""
    family: Literal["auto", "dual_encoder", "mllm"] = "auto"
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
    seeds: list[int] = field(default_factory=list)
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
    hints = get_type_hints(cls, include_extras=True)
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
    origin = get_origin(typ)
    if origin is Annotated:
        base, *marks = get_args(typ)
        value = _coerce(value, base, key)
        for mark in marks:
            if isinstance(mark, Range):
                mark.check(value, key)
        return value
    if origin is Literal:
        choices = get_args(typ)
        if value not in choices:
            raise RetainError(f"Config key {key!r} must be one of {', '.join(map(str, choices))}, got {value!r}."
                              f"{suggest(value, choices)}")
        return value
    if origin is list:
        (item,) = get_args(typ)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(_coerce(value, list, key))]
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


def read_yaml(path: Path, what: str):
    """The YAML document in file `path` ({} when empty); `what` names the file in the messages."""
    if not path.is_file():
        raise RetainError(f"{what} does not exist.")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RetainError(f"{what} is not valid YAML: {e}") from e


def load_config(path: str | Path | None = None, overrides: list[str] = (), cls=RunConfig):
    """Defaults, then the YAML file at `path`, then `key=value` overrides (dotted keys), as `cls`."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        data = read_yaml(path, f"Config file {path}")
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
