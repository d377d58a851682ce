"""The dual-encoder (CLIP-style) model interface.

One class serves every backend: Hugging Face `CLIPModel` checkpoints (any
`openai/clip-*` id or a local folder), `SiglipModel` checkpoints (SigLIP, Zhai et al., 2023)
and retain's own mini-CLIP (a `CLIPVisionModel` image tower beside a sentence-transformers
text tower). The rest of retain talks to `encode_image`, `encode_text`, `image_forward`
(features plus the block outputs that LDIFS taps, Mukhoti et al., 2023), `zero_shot_head`,
and for scores `zero_shot_logits`, `class_probabilities` and `contrastive_loss`.

CLIP's zero-shot head is a softmax over scale * cosine; SigLIP's is a sigmoid per class of
scale * cosine + bias. Both rank classes by the cosine, so accuracy does not care which;
the probabilities (a calibration study's confidences) and the contrastive loss do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retain.errors import RetainError
from retain.losses import contrastive_loss as softmax_contrastive_loss

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RETAIN_CONFIG = "retain_dual_encoder.json"


class DualEncoder(nn.Module):
    """An image tower and a text tower projected into one embedding space.

    Args:
        vision: a `CLIPVisionModel` (embeddings, pre-LayerNorm, encoder, post-LayerNorm).
        visual_projection: linear map from the pooled image state to the embedding.
        text: a text transformer returning `last_hidden_state` (and `pooler_output`).
        text_projection: linear map from the pooled text state to the embedding.
        tokenizer: the text tower's tokenizer.
        text_pooling: "eos" (CLIP: the model's pooler output) or "mean" (masked mean,
            sentence-transformers style).
        logit_scale: log of the contrastive temperature's inverse.
        logit_bias: None for CLIP's softmax head; SigLIP's learnt bias for its sigmoid head
            (zero-shot logits are exp(logit_scale) * cosine + logit_bias, each class a sigmoid).
        pad_to: pad every text to this many tokens (SigLIP, trained so: its text tower pools the
            last position); None pads to the batch's longest, as CLIP.
    """

    def __init__(self, vision, visual_projection, text, text_projection, tokenizer,
                 text_pooling: str = "eos", logit_scale: float = float(np.log(1 / 0.07)),
                 image_mean=CLIP_MEAN, image_std=CLIP_STD, logit_bias: float | None = None,
                 pad_to: int | None = None):
        super().__init__()
        if text_pooling not in ("eos", "mean"):
            raise RetainError(f"text_pooling must be 'eos' or 'mean', not {text_pooling!r}.")
        self.vision = vision
        self.visual_projection = visual_projection
        self.text = text
        self.text_projection = text_projection
        self.tokenizer = tokenizer
        self.text_pooling = text_pooling
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        # a parameter beside the scale (so a checkpoint keeps it); absent for CLIP, whose state is unchanged
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(float(logit_bias)))
        self.pad_to = pad_to
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    # ---- shapes --------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.vision.config.image_size)

    @property
    def embed_dim(self) -> int:
        if isinstance(self.visual_projection, nn.Identity):  # SigLIP: the pooled state is the embedding
            return int(self.vision.config.hidden_size)
        return int(self.visual_projection.out_features)

    @property
    def head_kind(self) -> str:
        """`softmax` (CLIP: one distribution over the classes) or `sigmoid` (SigLIP: a probability per class)."""
        return "softmax" if self.logit_bias is None else "sigmoid"

    @property
    def num_blocks(self) -> int:
        return int(self.vision.config.num_hidden_layers)

    # ---- images --------------------------------------------------------------------
    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) images -> normalised float (N, 3, S, S) at the tower's size."""
        x = torch.as_tensor(images)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, C, H, W)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)
        x = x.to(self.image_mean.device)
        return (x - self.image_mean) / self.image_std

    def image_forward(self, pixel_values: torch.Tensor, taps: tuple[int, ...] = ()
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Projected (unnormalised) image features and the tapped hidden states.

        Tap 0 is the embedding output after the pre-LayerNorm; tap k is the output of
        block k (1-based), before the final LayerNorm and projection. Each tap is (B, T, D).
        """
        out = self.vision(pixel_values=pixel_values, output_hidden_states=bool(taps))
        feats = self.visual_projection(out.pooler_output)
        tapped = [out.hidden_states[k] for k in taps] if taps else []
        return feats, tapped

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (N, E)."""
        return F.normalize(self.image_forward(pixel_values)[0], dim=-1)

    # ---- text ----------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.pad_to:  # SigLIP: every text the same length, as in training (HF's zero-shot pipeline does so)
            enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.pad_to,
                                 return_tensors="pt")
            return {k: v.to(self.logit_scale.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        max_len = min(getattr(self.tokenizer, "model_max_length", 77), 77)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len,
                             return_tensors="pt")
        return {k: v.to(self.logit_scale.device) for k, v in enc.items()
                if k in ("input_ids", "attention_mask")}

    def text_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected (unnormalised) text features from token ids."""
        out = self.text(input_ids=input_ids, attention_mask=attention_mask)
        if self.text_pooling == "mean":
            pooled = mean_pool(out.last_hidden_state, attention_mask)
        else:
            pooled = out.pooler_output
        return self.text_projection(pooled)

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings (N, E)."""
        chunks = [F.normalize(self.text_forward(**self.tokenize(texts[i:i + batch_size])), dim=-1)
                  for i in range(0, len(texts), batch_size)]
        return torch.cat(chunks)

    @torch.no_grad()
    def zero_shot_head(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        """(C, E) class embeddings: each class's template embeddings averaged, renormalised."""
        prompts = [t.format(c) for c in class_names for t in templates]
        emb = self.encode_text(prompts).view(len(class_names), len(templates), -1)
        return F.normalize(emb.mean(1), dim=-1)

    # ---- scores ----------------------------------------------------------------------
    def zero_shot_logits(self, image_embeddings: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """(N, C) zero-shot logits of L2-normalised image embeddings against a (C, E) head:
        exp(logit_scale) * cosine, plus the logit bias for SigLIP."""
        logits = image_embeddings @ head.T * self.logit_scale.exp().to(image_embeddings)
        return logits if self.logit_bias is None else logits + self.logit_bias.to(image_embeddings)

    def class_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """What `zero_shot_logits` mean as probabilities: a softmax over the classes (CLIP) or a
        sigmoid per class (SigLIP, where the classes need not sum to one)."""
        return logits.softmax(-1) if self.logit_bias is None else logits.sigmoid()

    def contrastive_loss(self, image_features: torch.Tensor, text_features: torch.Tensor,
                         caption_of_item: torch.Tensor) -> torch.Tensor:
        """The image-text loss this model was pre-trained with, over a batch whose items may share
        captions (`retain.losses.contrastive_loss`'s arguments): CLIP's softmax InfoNCE, or SigLIP's
        sigmoid loss (every image-caption pair a binary question, its label +1 for the item's own
        caption and -1 for the others), summed over pairs and divided by the images, as big_vision."""
        if self.logit_bias is None:
            return softmax_contrastive_loss(image_features, text_features, caption_of_item, self.logit_scale)
        img = F.normalize(image_features, dim=-1)
        txt = F.normalize(text_features, dim=-1)
        logits = self.zero_shot_logits(img, txt)  # (B, U)
        signs = 2 * F.one_hot(caption_of_item, txt.shape[0]).to(logits) - 1
        return -F.logsigmoid(signs * logits).sum() / img.shape[0]

    # ---- persistence ---------------------------------------------------------------
    def save(self, directory: str | Path, spec: dict) -> None:
        """Write weights (safetensors), the build spec and the tokenizer to `directory`."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        self.tokenizer.save_pretrained(str(directory / "tokenizer"))
        (directory / RETAIN_CONFIG).write_text(json.dumps(spec, indent=2, sort_keys=True))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens (sentence-transformers pooling): (B, T, D), (B, T) -> (B, D)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def run_layers(layers, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT-style encoder layers over (B, T, D) hidden states with a (B, T) padding mask."""
    ext = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    for layer in layers:
        hidden = layer(hidden, attention_mask=ext)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    return hidden


def build_from_spec(spec: dict) -> DualEncoder:
    """An untrained DualEncoder with the architecture `spec` describes (mini-CLIP)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

    vision = CLIPVisionModel(CLIPVisionConfig(**spec["vision"]))
    text_cfg = AutoConfig.for_model(**spec["text_config"])
    text = AutoModel.from_config(text_cfg, add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    embed = int(spec["embed_dim"])
    return DualEncoder(vision, nn.Linear(vision.config.hidden_size, embed, bias=False),
                       text, nn.Linear(text_cfg.hidden_size, embed, bias=False), tokenizer,
                       text_pooling=spec.get("text_pooling", "mean"))
