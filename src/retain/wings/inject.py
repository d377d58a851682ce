"""WINGS's learners injected into a Hugging Face LLaVA-style model by hooks, no model code copied.

Per decoder layer: a visual LoRRA learner (features: the projected image tokens), a
textual one (features: the text token embeddings) and a router. The hooks:

- on the multimodal model: remember which positions hold image tokens and the padding mask;
- on the language model: keep the input embeddings of every position seen so far (the
  learners' features; generation appends each new token's embedding);
- on each decoder layer: keep its input (the residual);
- on each layer's attention: h = residual + attention output; add
  w_v * visual(h) + w_t * textual(h) to the attention output, so the layer continues with
  h' = h + w_v * visual + w_t * textual as WINGS has it.

Masks are causal: a position attends to image (visual) or text (textual) features at or
before it, never to padding; a custom 4D attention mask (option scoring's prefix tree)
replaces the causal one, so the learners see what the main attention sees. An input without an image skips the visual learner. The
router reads a length-free summary of the main attention's probabilities per token: the
mass on image tokens, on text before the first image and on text after it (averaged over
heads), so it works for any sequence length. The main attention runs in eager mode so
that its probabilities are available.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from retain.errors import RetainError
from retain.hf import unwrapped
from retain.wings.lorra import LearnerRouter, LoRRA

SUMMARY_FEATURES = 3


class LayerLearners(nn.Module):
    def __init__(self, dim: int, heads: int, rank: int):
        super().__init__()
        self.visual = LoRRA(dim, heads, rank)
        self.textual = LoRRA(dim, heads, rank)
        self.router = LearnerRouter(SUMMARY_FEATURES)


class Wings(nn.Module):
    """The learners of every decoder layer and the bookkeeping the hooks share."""

    def __init__(self, layers: int, dim: int, heads: int, rank: int):
        super().__init__()
        self.layers = nn.ModuleList(LayerLearners(dim, heads, rank) for _ in range(layers))
        self.rank = rank
        self.handles: list = []
        self._reset()

    def _reset(self) -> None:
        self.features = None  # (B, S, d) input embeddings of every position so far
        self.is_image = None  # (B, S) bool
        self.valid = None  # (B, S) bool: not padding
        self.pending_image = None  # image positions of the next language-model call
        self.pending_mask = None
        self.allowed = None  # (B, T, S) bool: which keys each new position may see, from a custom 4D mask
        self.residual: dict[int, torch.Tensor] = {}

    # ---- hooks -------------------------------------------------------------------
    def on_multimodal(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        image_id = getattr(module.config, "image_token_id", None)
        if image_id is None:
            image_id = getattr(module.config, "image_token_index", None)
        self.pending_image = None if ids is None or image_id is None else ids == image_id
        self.pending_mask = kwargs.get("attention_mask")

    def on_language_model(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return
        # the language model's cache argument: `past_key_values`, renamed `cache` in newer transformers
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        fresh = cache is None or cache.get_seq_length() == 0 or self.features is None
        b, t, _ = embeds.shape
        image = self.pending_image if self.pending_image is not None and self.pending_image.shape == (b, t) \
            else torch.zeros(b, t, dtype=torch.bool, device=embeds.device)
        if fresh:
            self.features, self.is_image = embeds, image
        else:
            self._expand_batch(b)
            self.features = torch.cat([self.features, embeds], 1)
            self.is_image = torch.cat([self.is_image, image], 1)
        s = self.features.shape[1]
        mask = self.pending_mask
        self.valid = mask[:, -s:].bool() if mask is not None and mask.dim() == 2 and mask.shape[1] >= s \
            else torch.ones(b, s, dtype=torch.bool, device=embeds.device)
        # a custom 4D mask (option scoring's prefix tree: 0 where a query may look) replaces the causal one
        self.allowed = mask[:, 0] == 0 if mask is not None and mask.dim() == 4 and mask.shape[-2:] == (t, s) else None
        self.pending_image = None

    def _expand_batch(self, b: int) -> None:
        """Follow a cache expanded per row (`batch_repeat_interleave`, as option scoring does)."""
        kept = self.features.shape[0]
        if kept == b:
            return
        if b % kept:
            raise RetainError(f"WINGS kept features for a batch of {kept} but the cached step has {b} rows.")
        self.features = self.features.repeat_interleave(b // kept, 0)
        self.is_image = self.is_image.repeat_interleave(b // kept, 0)

    def on_layer(self, index: int):
        def hook(module, args, kwargs):
            self.residual[index] = args[0] if args else kwargs["hidden_states"]
        return hook

    def on_attention(self, index: int):
        def hook(module, args, kwargs, output):
            attn_out, weights = output[0], output[1] if len(output) > 1 else None
            if self.features is None or index not in self.residual:
                return output
            h = self.residual.pop(index) + attn_out
            extra = self.learners_output(index, h, weights)
            return (attn_out + extra.to(attn_out.dtype), *output[1:])
        return hook

    # ---- the learners --------------------------------------------------------------
    def masks(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, S) visual and textual masks for the last t positions."""
        s = self.features.shape[1]
        if self.allowed is not None and self.allowed.shape[1] == t:
            causal = self.allowed
        else:
            query = torch.arange(s - t, s, device=self.features.device)[:, None]
            key = torch.arange(s, device=self.features.device)[None, :]
            causal = (key <= query)[None] & self.valid[:, None, :]
        image = self.is_image[:, None, :]
        return causal & image, causal & ~image

    def summary(self, weights: torch.Tensor | None, t: int) -> torch.Tensor:
        """(B, T, 3): attention mass on image tokens, on text before the first image, on text after."""
        b, s = self.is_image.shape
        if weights is None:
            raise RetainError("WINGS's router needs the attention probabilities: load the model with "
                              "attn_implementation='eager' (inject_wings sets it).")
        dtype = torch.promote_types(weights.dtype, torch.float32)  # at least float32; float64 stays float64
        p = weights.to(dtype).mean(1)[..., -s:]  # (B, T, S)
        image = self.is_image.to(dtype)
        first = torch.where(self.is_image.any(1), self.is_image.to(dtype).argmax(1), torch.full((b,), s,
                            device=image.device))
        before = (torch.arange(s, device=image.device)[None] < first[:, None]).to(dtype) * (1 - image)
        after = (1 - image) * (1 - before)
        return torch.stack([(p * image[:, None]).sum(-1), (p * before[:, None]).sum(-1),
                            (p * after[:, None]).sum(-1)], -1)

    def learners_output(self, index: int, h: torch.Tensor, weights) -> torch.Tensor:
        learners = self.layers[index]
        t = h.shape[1]
        visual_mask, textual_mask = self.masks(t)
        w = learners.router(self.summary(weights, t)).to(h.dtype)
        feats = self.features.to(h.dtype)
        out = w[..., 1:2] * learners.textual(h, feats, textual_mask)
        if bool(self.is_image.any()):  # text-only input skips the visual learner
            out = out + w[..., 0:1] * learners.visual(h, feats, visual_mask)
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def decoder_layers(language_model) -> list:
    layers = getattr(language_model, "layers", None)
    if layers is None:
        raise RetainError(f"{type(language_model).__name__} has no `layers`: WINGS needs a Llama/Qwen2-style decoder.")
    return list(layers)


def inject_wings(model, rank: int = 64) -> Wings:
    """Add WINGS's learners to a LLaVA-style Hugging Face model (in place); returns them.

    The learners are registered as `model.wings`, so they save and load with the model's
    parameters; `model` is switched to eager attention.
    """
    base = unwrapped(model)
    multimodal = base.model
    lm = multimodal.language_model
    config = lm.config
    heads = config.num_attention_heads
    layers = decoder_layers(lm)
    wings = Wings(len(layers), config.hidden_size, heads, rank).to(next(lm.parameters()).device)
    base.add_module("wings", wings)
    base.stateful_hooks = True  # the hooks keep features from call to call: option scoring runs whole prompts
    base.set_attn_implementation("eager")
    wings.handles.append(multimodal.register_forward_pre_hook(wings.on_multimodal, with_kwargs=True))
    wings.handles.append(lm.register_forward_pre_hook(wings.on_language_model, with_kwargs=True))
    for i, layer in enumerate(layers):
        wings.handles.append(layer.register_forward_pre_hook(wings.on_layer(i), with_kwargs=True))
        wings.handles.append(layer.self_attn.register_forward_hook(wings.on_attention(i), with_kwargs=True))
    return wings


def save_wings_model(model, processor, folder) -> None:
    """Save a model with injected learners as a plain Hugging Face folder (loadable by any
    LLaVA code) plus wings.safetensors / wings.json, which `load_mllm` injects back."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    base = unwrapped(model)
    wings = getattr(base, "wings", None)
    if wings is None:
        raise RetainError("This model has no WINGS learners to save.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    del base._modules["wings"]
    try:
        base.save_pretrained(folder, safe_serialization=True)
    finally:
        base.add_module("wings", wings)
    processor.save_pretrained(folder)
    save_file({k: v.detach().contiguous() for k, v in wings.state_dict().items()}, str(folder / "wings.safetensors"))
    (folder / "wings.json").write_text(json.dumps({"rank": wings.rank}))
