"""Every model retain loads by name, in one table (timm's `create_model` / `list_models`).

A name is one of:

- a zoo model (`list_models()`: mini-clip, mini-llava, mini-llava-wings), built from its
  recipe by `retain.zoo` on first use, then cached;
- `hf:<hub id>` (e.g. `hf:openai/clip-vit-base-patch32`, `hf:llava-hf/llava-1.5-7b-hf`);
- the path of a local model folder.

The table says each zoo model's family and the dual encoder that scores the zero-shot
column of its EMT tables. This is the only module that calls the zoo: the zoo builds
from the model classes, never through here, so no import runs in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retain import zoo
from retain.errors import RetainError, suggest
from retain.models import DualEncoder, load_dual_encoder_from, load_retain_folder
from retain.models.dual_encoder import RETAIN_CONFIG
from retain.models.mllm import MLLM, load_mllm_from

FAMILIES = ("dual_encoder", "mllm")
# Contrastive image-text model types: the dual-encoder family (which loads CLIP and SigLIP and refuses the others by name).
DUAL_ENCODER_TYPES = ("clip", "siglip", "siglip2", "chinese_clip")


@dataclass(frozen=True)
class ZooModel:
    family: str
    """`dual_encoder` or `mllm`"""
    encoder: str | None = None
    """the dual encoder whose zero-shot accuracy EMT reports beside this MLLM (its own image tower)"""


MODELS: dict[str, ZooModel] = {  # built by retain.zoo from the recipe of the same name
    "mini-clip": ZooModel("dual_encoder"),
    "mini-llava": ZooModel("mllm", encoder="mini-clip"),
    "mini-llava-wings": ZooModel("mllm", encoder="mini-clip"),
}


def list_models(family: str | None = None) -> list[str]:
    """The zoo's model names, sorted; only those of `family` when given."""
    return sorted(n for n, m in MODELS.items() if family in (None, m.family))


def model_family(name: str, declared: str = "auto", trust_remote_code: bool = False) -> str:
    """`dual_encoder` or `mllm`: as declared, or decided from the table or the model's config."""
    if declared != "auto":
        if declared not in FAMILIES:
            raise RetainError(f"Unknown model family {declared!r}: use auto, {' or '.join(FAMILIES)}.")
        return declared
    if name in MODELS:
        return MODELS[name].family
    if not name.startswith("hf:") and (Path(name) / RETAIN_CONFIG).exists():
        return "dual_encoder"
    _check_name(name, "model")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name[3:] if name.startswith("hf:") else name,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RetainError(f"Could not read the config of {name!r} to tell its family ({e}); set "
                          "`family: dual_encoder` or `family: mllm` in the config.") from e
    return "dual_encoder" if config.model_type in DUAL_ENCODER_TYPES else "mllm"


def default_encoder(name: str) -> str | None:
    """The dual encoder that scores EMT's zero-shot column for MLLM `name` (None outside the zoo)."""
    return MODELS[name].encoder if name in MODELS else None


def build_info(name: str) -> dict | None:
    """Which build of zoo model `name` a run used: recipe hash and weights' sha256 (None for a
    model outside the zoo, or one not built)."""
    return zoo.build_info(name) if name in MODELS else None


def zoo_folder(name: str, build: bool = True, progress: bool = True) -> Path:
    """The cache folder of zoo model `name`, built first when `build` and not built yet."""
    if name not in MODELS:
        raise RetainError(f"{name!r} is not a zoo model; the zoo has {list_models()}.{suggest(name, MODELS)}")
    return zoo.ensure(name, progress=progress) if build else zoo.model_dir(name)


def base_llm(name: str) -> str | None:
    """The folder of the causal LM that zoo MLLM `name` was built on (None outside the zoo)."""
    if name not in MODELS or MODELS[name].family != "mllm":
        return None
    from retain.zoo.llava_parts import smollm2_dir

    return str(smollm2_dir())


def text_tower_dir() -> str:
    """The offline MiniLM sentence encoder (mini-CLIP's text tower) as a local folder."""
    from retain.zoo.mini_clip import text_tower_dir as minilm

    return minilm()


def load_dual_encoder(name: str, trust_remote_code: bool = False, progress: bool = True) -> DualEncoder:
    """Load a CLIP-style model.

    Args:
        name: `mini-clip` (built from offline assets on first use, then cached), a
            Hugging Face id as `hf:openai/clip-vit-base-patch32`, or a local folder
            holding a retain model or a `CLIPModel` or `SiglipModel` checkpoint.
        trust_remote_code: passed to `from_pretrained`; off unless the user asks.
        progress: show the zoo build's progress bar.
    """
    if name in MODELS:
        _check_family(name, "dual_encoder")
        return load_retain_folder(zoo.ensure(name, progress=progress))
    _check_name(name, "dual encoder", example="hf:openai/clip-vit-base-patch32")
    hub = name.startswith("hf:")
    return load_dual_encoder_from(name[3:] if hub else name, hub=hub, trust_remote_code=trust_remote_code)


def load_mllm(name: str, trust_remote_code: bool = False, dtype=None) -> MLLM:
    """Load a LLaVA-style MLLM: a zoo name (`mini-llava`, `mini-llava-wings`), `hf:<hub id>`
    (e.g. `hf:llava-hf/llava-1.5-7b-hf`) or a saved model folder; `dtype` as `from_pretrained`."""
    if name in MODELS:
        _check_family(name, "mllm")
        return load_mllm_from(str(zoo.ensure(name)), trust_remote_code=trust_remote_code, dtype=dtype)
    _check_name(name, "MLLM", example="hf:llava-hf/llava-1.5-7b-hf")
    hub = name.startswith("hf:")
    return load_mllm_from(name[3:] if hub else name, hub=hub, trust_remote_code=trust_remote_code, dtype=dtype)


def _check_family(name: str, family: str) -> None:
    if MODELS[name].family != family:
        words = {"dual_encoder": "dual encoder", "mllm": "MLLM"}
        raise RetainError(f"{name!r} is a zoo {words[MODELS[name].family]}, not a {words[family]}: use one of "
                          f"{list_models(family)}, hf:<hub id> or a model folder.")


def _check_name(name: str, what: str, example: str = "hf:<hub id>") -> None:
    """A hub id or an existing folder; anything else is refused with the names that exist."""
    if name.startswith("hf:") or Path(name).is_dir():
        return
    raise RetainError(f"Unknown {what} {name!r}: use a zoo model ({', '.join(list_models())}), "
                      f"'hf:<hub id>' (e.g. {example}) or the path of a local model folder.{suggest(name, MODELS)}")
