"""Model wrappers, loaded by name: `mini-clip`, `hf:<hub id>`, or a local folder."""

from __future__ import annotations

import json
from pathlib import Path

from retain.errors import RetainError
from retain.models.dual_encoder import RETAIN_CONFIG, DualEncoder, build_from_spec

__all__ = ["DualEncoder", "default_device", "load_dual_encoder", "model_family"]


def default_device():
    """Where `retain eval`, `retain study` and `retain mine` put models: $RETAIN_DEVICE when set
    (cpu, cuda, cuda:1, mps), else the first GPU when there is one, else the CPU. (`retain run`
    places models through accelerate instead.)"""
    import os

    import torch

    name = os.environ.get("RETAIN_DEVICE", "").strip()
    if name:
        try:
            return torch.device(name)
        except RuntimeError as e:
            raise RetainError(f"RETAIN_DEVICE={name!r} is not a device torch knows (use cpu, cuda, cuda:1, mps).") from e
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

FAMILIES = ("dual_encoder", "mllm")
DUAL_ENCODER_TYPES = ("clip", "siglip", "siglip2", "chinese_clip")


def model_family(name: str, declared: str = "auto", trust_remote_code: bool = False) -> str:
    """`dual_encoder` or `mllm`: as declared, or decided from the zoo name or the model's config."""
    if declared != "auto":
        if declared not in FAMILIES:
            raise RetainError(f"Unknown model family {declared!r}: use auto, {' or '.join(FAMILIES)}.")
        return declared
    if name == "mini-clip":
        return "dual_encoder"
    if name in ("mini-llava", "mini-llava-wings"):
        return "mllm"
    path = Path(name)
    if not name.startswith("hf:") and (path / RETAIN_CONFIG).exists():
        return "dual_encoder"
    if not name.startswith("hf:") and not path.is_dir():
        raise RetainError(f"Unknown model {name!r}: use mini-clip, mini-llava, hf:<hub id> or a local model folder.")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name[3:] if name.startswith("hf:") else name,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RetainError(f"Could not read the config of {name!r} to tell its family ({e}); set "
                          "`family: dual_encoder` or `family: mllm` in the config.") from e
    return "dual_encoder" if config.model_type in DUAL_ENCODER_TYPES else "mllm"


def load_dual_encoder(name: str, trust_remote_code: bool = False, progress: bool = True) -> DualEncoder:
    """Load a CLIP-style model.

    Args:
        name: `mini-clip` (built from offline assets on first use, then cached), a
            Hugging Face id as `hf:openai/clip-vit-base-patch32`, or a local folder
            holding a retain model or a `CLIPModel` checkpoint.
        trust_remote_code: passed to `from_pretrained`; off unless the user asks.
        progress: show the zoo build's progress bar.
    """
    if name in ("mini-clip",):
        from retain import zoo

        return load_retain_folder(zoo.ensure(name, progress=progress))
    path = Path(name)
    if not name.startswith("hf:") and path.is_dir():
        if (path / RETAIN_CONFIG).exists():
            return load_retain_folder(path)
        return _load_hf_clip(str(path), trust_remote_code)
    if name.startswith("hf:"):
        return _load_hf_clip(name[3:], trust_remote_code)
    raise RetainError(
        f"Unknown model {name!r}: use 'mini-clip', 'hf:<hub id>' (e.g. "
        "hf:openai/clip-vit-base-patch32) or the path of a local model folder."
    )


def load_retain_folder(directory: str | Path) -> DualEncoder:
    """Load a DualEncoder saved by `DualEncoder.save` (safetensors only, no pickle)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    spec = json.loads((directory / RETAIN_CONFIG).read_text())
    spec = dict(spec, tokenizer_dir=str(directory / "tokenizer"))
    model = build_from_spec(spec)
    missing, unexpected = model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise RetainError(
            f"The model in {directory} does not match its spec (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}): rebuild it with `retain zoo build`."
        )
    return model.eval()


def _load_hf_clip(model_id: str, trust_remote_code: bool) -> DualEncoder:
    from transformers import AutoTokenizer, CLIPModel

    try:
        clip = CLIPModel.from_pretrained(model_id, use_safetensors=True,
                                         trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RetainError(
            f"Could not load the CLIP model {model_id!r}: {e}. A hub id needs network access "
            "(or a copy in the Hugging Face cache); a local folder needs config.json, "
            "model.safetensors and the tokenizer files."
        ) from e
    mean, std = _image_stats(model_id)
    model = DualEncoder(clip.vision_model, clip.visual_projection, clip.text_model,
                        clip.text_projection, tokenizer, text_pooling="eos",
                        logit_scale=float(clip.logit_scale.item()), image_mean=mean, image_std=std)
    return model.eval()


def _image_stats(model_id: str):
    from retain.models.dual_encoder import CLIP_MEAN, CLIP_STD

    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(model_id)
        return tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:  # no preprocessor_config.json: CLIP's own statistics
        return CLIP_MEAN, CLIP_STD
