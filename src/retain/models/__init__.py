"""The model classes and their loaders from a folder or a hub id.

Names (`mini-clip`, `mini-llava`, `hf:<hub id>`, a folder) are resolved by
`retain.registry`, which builds zoo models on first use; this package only knows
how to read a saved model.
"""

from __future__ import annotations

import json
from pathlib import Path

from retain.errors import RetainError
from retain.models.dual_encoder import RETAIN_CONFIG, DualEncoder, build_from_spec

__all__ = ["DualEncoder", "default_device", "load_dual_encoder_from", "load_retain_folder"]


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


# What the dual-encoder family loads: retain's own folders and checkpoints of these model types.
SUPPORTED_DUAL_ENCODER_TYPES = ("clip", "siglip")


def load_dual_encoder_from(source: str, hub: bool = False, trust_remote_code: bool = False) -> DualEncoder:
    """A dual encoder from a local folder (retain's own, or a Hugging Face `CLIPModel` or
    `SiglipModel` checkpoint) or, with `hub`, from a Hugging Face hub id. Zoo names are the
    registry's (`retain.registry.load_dual_encoder`)."""
    if not hub and (Path(source) / RETAIN_CONFIG).exists():
        return load_retain_folder(source)
    return _load_hf_clip(source, trust_remote_code)


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
    from transformers import AutoConfig, AutoTokenizer, CLIPModel

    try:
        model_type = AutoConfig.from_pretrained(model_id, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError) as e:
        raise RetainError(
            f"Could not load the CLIP model {model_id!r}: {e}. A hub id needs network access "
            "(or a copy in the Hugging Face cache); a local folder needs config.json, "
            "model.safetensors and the tokenizer files."
        ) from e
    if model_type not in SUPPORTED_DUAL_ENCODER_TYPES:
        # CLIPModel would load it with freshly initialised towers and only warn.
        raise RetainError(
            f"{model_id!r} is a {model_type!r} model; the dual-encoder family loads "
            f"{', '.join(SUPPORTED_DUAL_ENCODER_TYPES)} checkpoints (model_type in config.json) and retain's own "
            "folders. SigLIP2 and Chinese-CLIP are not supported (their towers and zero-shot heads differ "
            "from CLIP's and SigLIP's)."
        )
    from transformers import SiglipModel

    try:
        cls = SiglipModel if model_type == "siglip" else CLIPModel
        pair = cls.from_pretrained(model_id, use_safetensors=True, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RetainError(
            f"Could not load the CLIP model {model_id!r}: {e}. A hub id needs network access "
            "(or a copy in the Hugging Face cache); a local folder needs config.json, "
            "model.safetensors and the tokenizer files."
        ) from e
    mean, std = _image_stats(model_id)
    if model_type == "siglip":
        return _siglip(pair, tokenizer, mean, std, model_id)
    model = DualEncoder(pair.vision_model, pair.visual_projection, pair.text_model,
                        pair.text_projection, tokenizer, text_pooling="eos",
                        logit_scale=float(pair.logit_scale.item()), image_mean=mean, image_std=std)
    return model.eval()


def _siglip(siglip, tokenizer, mean, std, model_id: str) -> DualEncoder:
    """SigLIP as a DualEncoder: its towers pool (the image tower by attention, the text tower at the
    last position through its head) straight into the embedding, so no projections; the sigmoid head's
    scale and bias; texts padded to the text tower's length, as SigLIP was trained."""
    from torch import nn

    if not siglip.config.vision_config.vision_use_head:
        raise RetainError(f"{model_id!r} is a SigLIP without its image tower's pooling head (vision_use_head: "
                          "false), so it gives no image embedding: use a full SiglipModel checkpoint.")
    model = DualEncoder(siglip.vision_model, nn.Identity(), siglip.text_model, nn.Identity(), tokenizer,
                        text_pooling="eos", logit_scale=float(siglip.logit_scale.item()), image_mean=mean,
                        image_std=std, logit_bias=float(siglip.logit_bias.item()),
                        pad_to=int(siglip.config.text_config.max_position_embeddings))
    return model.eval()


def _image_stats(model_id: str):
    from retain.models.dual_encoder import CLIP_MEAN, CLIP_STD

    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(model_id)
        return tuple(proc.image_mean), tuple(proc.image_std)
    except Exception:  # no preprocessor_config.json: CLIP's own statistics
        return CLIP_MEAN, CLIP_STD
