"""The method registry: every built-in method imported (each registers itself with
`@register`), methods outside the package loaded as plugins, a method created by name,
and a config's method list expanded into its sweep variants (timm's `create_model`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import get_origin, get_type_hints

import yaml

from retain.errors import RetainError, suggest
from retain.methods import (  # noqa: F401  (each import registers its method)
    adapter,
    clmoe,
    disco,
    ewc,
    finetune,
    flyp,
    hide,
    l2sp,
    ldifs,
    linear_probe,
    lora_ft,
    lp_ft,
    modalprompt,
    moelora,
    olora,
    replay,
    sefe,
    wings,
    wise_ft,
    zero_shot,
)
from retain.methods.base import METHODS, Method


def create_method(name: str, args: dict | None = None, family: str | None = None) -> Method:
    """Instantiate registered method `name` with options `args` (unknown ones are errors);
    with `family`, a method that does not apply to that model family is an error."""
    from retain.config import from_dict

    if name not in METHODS:
        raise RetainError(f"Unknown method {name!r}.{suggest(name, METHODS)} Available: {', '.join(sorted(METHODS))}.")
    cls = METHODS[name]
    if family is not None and family not in cls.families:
        fits = sorted(n for n, c in METHODS.items() if family in c.families)
        raise RetainError(f"Method {name!r} applies to {' and '.join(cls.families)} models, not to this {family} "
                          f"model. Methods for {family} models: {', '.join(fits)}.")
    return cls(from_dict(args or {}, cls.Options, prefix=f"method_args.{name}."))


def load_plugins(paths: list[str]) -> list[str]:
    """Import method files outside the package (config key `plugins`); each registers its
    methods with @register. Returns the names they registered. A file is imported once per
    process, so a second call with the same file registers nothing again. The built-in
    methods are registered first (by this module's imports): a name clash is the plugin's."""
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
            spec.loader.exec_module(module)
        except RetainError as e:
            del sys.modules[module_name]
            raise RetainError(f"plugins: {path}: {e}") from e
        except Exception as e:
            del sys.modules[module_name]
            raise RetainError(f"plugins: importing {path} failed: {type(e).__name__}: {e}") from e
    return sorted(set(METHODS) - before)


def options_dict(method: Method) -> dict:
    """A method's resolved options, as written into a run's config dump."""
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
    return typ in (list, tuple, "list", "tuple") or get_origin(typ) in (list, tuple)


def _label_value(value) -> str:
    """A value as YAML prints it, floats without a trailing .0 (100.0 -> 100, 1e-05 -> 1e-05)."""
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).splitlines()[0]
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value).replace("/", "_")
