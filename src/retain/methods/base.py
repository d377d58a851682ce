"""The method interface and its registry.

A method is one short class with hooks the continual trainer calls (DESIGN.md):
`setup`, `trainable`, `before_task`, `extend_batch`, `loss`, `after_task`, and
`state_dict`/`load_state_dict` for what it must carry across a resume. Options are a
dataclass declared next to the method; configs name a method by its registry name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, get_type_hints

import torch
import yaml

from retain.errors import RetainError, suggest

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make `cls` available as `method: <cls.name>` in configs."""
    if cls.name in METHODS:
        from retain.errors import RetainError

        raise RetainError(f"method {cls.name!r} is already registered (a built-in method or another plugin): "
                          "give yours another name.")
    METHODS[cls.name] = cls
    return cls


def load_plugins(paths: list[str]) -> list[str]:
    """Import method files outside the package (config key `plugins`); each registers its
    methods with @register. Returns the names they registered. A file is imported once per
    process, so a second call with the same file registers nothing again."""
    import importlib.util
    import sys
    from pathlib import Path

    from retain.errors import RetainError

    before = set(METHODS)
    for item in paths:
        path = Path(item).expanduser().resolve()
        if not path.is_file() or path.suffix != ".py":
            raise RetainError(f"plugins: {item!r} is not a Python file (give the path of a .py file that defines a method).")
        module_name = f"retain_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
        if module_name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            import retain.methods  # noqa: F401  (built-in methods first: a clash is then the plugin's)

            spec.loader.exec_module(module)
        except RetainError as e:
            del sys.modules[module_name]
            raise RetainError(f"plugins: {path}: {e}") from e
        except Exception as e:
            del sys.modules[module_name]
            raise RetainError(f"plugins: importing {path} failed: {type(e).__name__}: {e}") from e
    return sorted(set(METHODS) - before)


@dataclass
class NoOptions:
    """A method without options."""


@dataclass
class TaskContext:
    """What a hook may look at: the task being trained and the run around it."""

    task: Any  # retain.data.Task
    index: int  # position of the task in the sequence (0-based)
    train: Any  # retain.data.ImageSplit actually trained on
    model: Any  # the unwrapped ImageClassifier
    tasks: list  # every task of the sequence
    train_splits: list  # the training split of every task, in sequence order
    device: torch.device
    seed: int
    batch_size: int
    tracker: Any = None  # retain.tracking.Tracker: per-step losses go to the run's experiment trackers


class Method:
    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    trains: ClassVar[bool] = True
    """False for methods with no gradient steps (zero-shot, linear probe)"""
    taps: tuple[int, ...] = ()
    """vision blocks whose hidden states the trainer should return in outputs["taps"]"""
    lr_scale: float = 1.0
    """the method's learning rate as a multiple of train.lr (soft prompts want a larger one)"""
    families: ClassVar[tuple[str, ...]] = ("dual_encoder",)
    """model families the method applies to: dual_encoder (CLIP-style), mllm (LLaVA-style)"""

    def __init__(self, options=None):
        self.opts = options if options is not None else self.Options()

    def setup(self, model) -> None:
        """Called once with the unwrapped model before the first task."""

    def trainable(self, model) -> list[torch.nn.Parameter]:
        """Parameters the optimiser updates: for a dual encoder the image tower, its
        projection and the heads; for an MLLM its LoRA adapters and projector."""
        if is_mllm(model):
            return mllm_trainable(model)
        enc = model.encoder
        return [*enc.vision.parameters(), *enc.visual_projection.parameters(), *model.heads.parameters()]

    def saved_parameters(self, model) -> list[torch.nn.Parameter]:
        """MLLM runs: the parameters a checkpoint must hold (what the method changes)."""
        return self.trainable(model)

    def before_task(self, ctx: TaskContext) -> None:
        """Called before the task's first step (store anchors, fit a probe, ...)."""

    def extend_batch(self, batch: dict, ctx: TaskContext) -> dict:
        """Add items to a training batch (replay)."""
        return batch

    def text_inputs(self, batch: dict, ctx: TaskContext) -> dict | None:
        """Captions the model should also encode in its forward (FLYP)."""
        return None

    def task_loss(self, batch: dict, outputs, ctx: TaskContext) -> torch.Tensor:
        if is_mllm(ctx.model):
            return outputs.loss
        from retain.models.classifier import classification_loss

        return classification_loss(outputs, batch["labels"])

    def loss(self, batch: dict, outputs: dict, ctx: TaskContext) -> torch.Tensor | float:
        """Extra terms added to the task loss (regularisers)."""
        return 0.0

    def after_task(self, ctx: TaskContext) -> None:
        """Called after the task's last step, before its evaluation (consolidate, merge)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors this method must keep across a resume (saved as safetensors)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned (on --resume)."""


def is_mllm(model) -> bool:
    from retain.models.mllm import MLLM

    return isinstance(model, MLLM)


def mllm_trainable(model) -> list[torch.nn.Parameter]:
    """An MLLM's LoRA parameters (all adapters) and its projector."""
    return [p for n, p in model.named_parameters() if "lora_" in n] + model.projector_parameters()


class MLLMMethod(Method):
    """Base of the methods for LLaVA-style models: `model` in the hooks is a
    `retain.models.mllm.MLLM`, batches hold images, questions and answers, and the task
    loss is the cross-entropy on the answer tokens."""

    families = ("mllm",)

    def trainable(self, model) -> list[torch.nn.Parameter]:
        return model.projector_parameters()


def create_method(name: str, args: dict | None = None, family: str | None = None) -> Method:
    """Instantiate registered method `name` with options `args` (unknown ones are errors);
    with `family`, a method that does not apply to that model family is an error."""
    import retain.methods  # noqa: F401  (registers every method)
    from retain.config import from_dict

    if name not in METHODS:
        raise RetainError(f"Unknown method {name!r}.{suggest(name, METHODS)} Available: {', '.join(sorted(METHODS))}.")
    cls = METHODS[name]
    if family is not None and family not in cls.families:
        fits = sorted(n for n, c in METHODS.items() if family in c.families)
        raise RetainError(f"Method {name!r} applies to {' and '.join(cls.families)} models, not to this {family} "
                          f"model. Methods for {family} models: {', '.join(fits)}.")
    return cls(from_dict(args or {}, cls.Options, prefix=f"method_args.{name}."))


def parameter_snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def options_dict(method: Method) -> dict:
    return dataclasses.asdict(method.opts)


@dataclass
class Variant:
    """One run of a method: its registry name, its run-directory label and its (scalar) options."""

    method: str
    label: str
    args: dict


def expand_methods(cfg) -> list[Variant]:
    """`cfg.methods` with their sweeps expanded, in config order, values in list order.

    An option is swept when its value is a list and the method's Options declare it
    otherwise than as a list; several swept options of one method give their Cartesian
    product. A method without a swept option keeps its name as its label."""
    import itertools

    import retain.methods  # noqa: F401  (registers every method)
    from retain.config import _coerce

    out = []
    for name in cfg.methods:
        args = cfg.method_args.get(name)
        if not isinstance(args, dict):  # none, or not a mapping: create_method says what is wrong
            out.append(Variant(name, name, {} if args is None else args))
            continue
        hints = _option_types(METHODS.get(name))
        swept = [k for k, v in args.items() if isinstance(v, list) and k in hints and not _is_list_type(hints[k])]
        for k in swept:
            if not args[k]:
                raise RetainError(f"method_args.{name}.{k} is an empty list: a sweep needs at least one value.")
        lists = [[_coerce(v, hints[k], f"method_args.{name}.{k}") for v in args[k]] for k in swept]
        for values in itertools.product(*lists):
            label = "-".join([name, *(f"{k}-{_label_value(v)}" for k, v in zip(swept, values))])
            out.append(Variant(name, label, {**args, **dict(zip(swept, values))}))
    return out


def _option_types(method_cls) -> dict:
    """Declared types of a method's options ({} for an unknown method: create_method names it)."""
    opts = getattr(method_cls, "Options", None)
    if opts is None or not dataclasses.is_dataclass(opts):
        return {}
    try:
        return get_type_hints(opts)
    except Exception:  # unresolvable annotations: read them as written
        return {f.name: f.type for f in dataclasses.fields(opts)}


def _is_list_type(typ) -> bool:
    from typing import get_origin

    return typ in (list, tuple, "list", "tuple") or get_origin(typ) in (list, tuple)


def _label_value(value) -> str:
    """A value as YAML prints it, floats without a trailing .0 (100.0 -> 100, 1e-05 -> 1e-05)."""
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).splitlines()[0]
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value).replace("/", "_")
