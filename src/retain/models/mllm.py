"""The MLLM (LLaVA-style) interface: generation, option log-likelihoods, answer-only loss.

One wrapper over Hugging Face `AutoModelForImageTextToText` models and their processors, so EMT,
continual instruction tuning and WINGS talk to any of them the same way:

- `generate(images, questions)`: batched greedy decoding, left-padded.
- `loglik(image, question, options)`: sum of the log-probabilities of each option's tokens
  after the prompt; the prompt (image included) is run once, then all options in one
  forward over its key/value cache as a prefix tree (`OptionTree`: shared first tokens run
  once, a tree attention mask, the cache never copied). A sum favours short options;
  `normalise` turns sums into the mean per token or per character (lm-eval-harness's
  acc_norm), `best_options` picks the best option under each.
- `training_batch` / `training_loss`: prompt and answer tokenised separately and joined,
  so the labels cover the answer tokens (and the end-of-turn token) exactly, nothing else.

What differs between the families (LLaVA, LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, InternVL,
Idefics3 / SmolVLM) is one table, `PROFILES`, keyed by `config.model_type`; docs/guide/models.md
says how each is handled.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from retain.errors import RetainError
from retain.hf import unwrapped

IGNORE = -100
# A prompt's first tokens shared by every row are run once per call when at least this many.
MIN_PREFIX = 4
# Processor outputs aligned with the tokens (one value per token): re-aligned when answers are appended.
TOKEN_ALIGNED = ("mm_token_type_ids", "token_type_ids")


# ---- the families -------------------------------------------------------------------------
# Pooled image features for routing (retain.methods.routing): (vision tower, image-processor output) -> (n, width).
def pooler_feature(vision, pixels: dict) -> torch.Tensor:
    """The tower's own pooled output (CLIP's: the class token after the post-LayerNorm)."""
    return vision(pixels["pixel_values"].to(vision.device, vision.dtype)).pooler_output


def first_view_feature(vision, pixels: dict) -> torch.Tensor:
    """LLaVA-NeXT: the pooled output of the first view (the whole image, resized), not of the tiles."""
    return vision(pixels["pixel_values"][:, 0].to(vision.device, vision.dtype)).pooler_output


def mean_feature(vision, pixels: dict) -> torch.Tensor:
    """The mean of the tower's last hidden states (InternViT has no pooled output)."""
    return vision(pixels["pixel_values"].to(vision.device, vision.dtype)).last_hidden_state.mean(1)


def grid_mean_feature(vision, pixels: dict) -> torch.Tensor:
    """Qwen2-VL: all images' patches come as one flat sequence; each image's (pre-merger) states averaged."""
    grid = pixels["image_grid_thw"].to(vision.device)
    hidden = vision(pixels["pixel_values"].to(vision.device, vision.dtype), grid_thw=grid).last_hidden_state
    return torch.stack([h.mean(0) for h in hidden.split(grid.prod(-1).tolist())])


def masked_mean_feature(vision, pixels: dict) -> torch.Tensor:
    """Idefics3 / SmolVLM: one view per image, its states averaged over the patches that hold image
    (an image padded to the batch's size has empty ones)."""
    values = pixels["pixel_values"].flatten(0, 1).to(vision.device, vision.dtype)  # (1, n, C, H, W) -> (n, C, H, W)
    mask = pixels["pixel_attention_mask"].flatten(0, 1).to(vision.device).bool()  # (n, H, W)
    p = vision.config.patch_size
    patches = mask.unfold(1, p, p).unfold(2, p, p).any(-1).any(-1)  # (n, H/p, W/p)
    hidden = vision(pixel_values=values, patch_attention_mask=patches).last_hidden_state  # (n, T, D)
    keep = patches.flatten(1).unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)


@dataclass(frozen=True)
class Profile:
    """What one MLLM family does its own way; everything else is the same for all."""

    name: str
    """the family's name in docs and messages"""
    image_text: str = "{image}\n"
    """an image in a user turn when the chat template takes string content ({image}: the processor's
    image token); a template that takes typed parts ({"type": "image"}) places the image itself"""
    projector: tuple[str, ...] = ("multi_modal_projector",)
    """parameter-name parts of the vision-to-language adapter (what `adapter` trains)"""
    language_model: str = "language_model"
    """the module that holds the LLM's decoder layers (LoRA's targets lie under it)"""
    vision_tower: str = "vision_tower"
    """the vision encoder's attribute on the inner model (`model.model.<this>`)"""
    routing_feature: Callable = pooler_feature
    """(vision tower, image-processor output) -> (n, width) pooled image features, for routing"""
    routing_pixels: dict = field(default_factory=dict)
    """image-processor options for routing features: one view per image, no tiles"""
    width: str = "hidden_size"
    """the vision config's attribute that is the width of `routing_feature`"""
    mrope: bool = False
    """multimodal rotary positions (M-RoPE): tokens after a cached prompt get explicit positions"""
    video: bool = False
    """its processor class carries a video processor (torchvision): loaded without one when torchvision is absent"""


_QWEN = dict(image_text="<|vision_start|>{image}<|vision_end|>", projector=("visual.merger",), vision_tower="visual",
             routing_feature=grid_mean_feature, mrope=True, video=True)
_IDEFICS = dict(projector=("connector",), language_model="text_model", vision_tower="vision_model",
                routing_feature=masked_mean_feature, routing_pixels={"do_image_splitting": False})
PROFILES: dict[str, Profile] = {
    "llava": Profile("LLaVA"),
    "llava_next": Profile("LLaVA-NeXT", projector=("multi_modal_projector", "image_newline"),
                          routing_feature=first_view_feature),
    "qwen2_vl": Profile("Qwen2-VL", width="embed_dim", **_QWEN),
    "qwen2_5_vl": Profile("Qwen2.5-VL", **_QWEN),
    "internvl": Profile("InternVL", routing_feature=mean_feature, routing_pixels={"crop_to_patches": False},
                        video=True),
    "idefics3": Profile("Idefics3 / SmolVLM", **_IDEFICS),
    "smolvlm": Profile("SmolVLM2", video=True, **_IDEFICS),
}
# A model type outside the table: LLaVA's conventions, the projector under any name it goes by.
OTHER = Profile("LLaVA-style", projector=("multi_modal_projector", "visual.merger", "mm_projector"))

# Where the vision-to-language adapter lives, and the LLM modules, in any family.
PROJECTOR_NAMES = tuple(dict.fromkeys([*OTHER.projector, *(n for p in PROFILES.values() for n in p.projector)]))
LANGUAGE_MODELS = tuple(dict.fromkeys(p.language_model for p in PROFILES.values()))


def profile_for(model_type: str | None) -> Profile:
    """The profile of `model_type` (config.json's); `OTHER` for a type outside the table."""
    return PROFILES.get(model_type or "", OTHER)


def lora_targets(language_models: tuple[str, ...]) -> str:
    """The PEFT regex of the attention and MLP projections (Llama, Qwen2, ...) under the given LLM modules."""
    under = language_models[0] if len(language_models) == 1 else f"({'|'.join(language_models)})"
    return rf".*{under}.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


# LoRA targets of every family: the LLM's attention and MLP projections.
LM_TARGETS = lora_targets(LANGUAGE_MODELS)


def cache_name(out) -> str:
    """The name a forward's output gives its key/value cache, to pass it back under: `cache` from
    transformers 5 (`past_key_values` is deprecated there, an error from 5.40), `past_key_values` before."""
    return "cache" if "cache" in out else "past_key_values"


def next_positions(model, enc: dict) -> torch.Tensor:
    """(B,) the position of the token after each unpadded prompt of `enc` in an M-RoPE model: one past
    the prompt's largest position (an image's tokens take fewer positions than they are tokens)."""
    if "image_grid_thw" not in enc:
        return enc["attention_mask"].sum(1)
    inner = unwrapped(model).model
    positions, _ = inner.get_rope_index(enc["input_ids"], mm_token_type_ids=enc["mm_token_type_ids"],
                                        image_grid_thw=enc["image_grid_thw"], attention_mask=enc["attention_mask"])
    return positions.amax(dim=(0, 2)) + 1  # positions: (3, B, T)


def without_video(cls):
    """Processor class `cls` with its video processor left out (that one needs torchvision, and retain
    gives no videos): it loads and saves the image processor and the tokenizer, under `cls`'s name."""
    attrs = cls.get_attributes()
    kept = [a for a in attrs if "video" not in a]

    def arguments(c, *args, **kwargs):  # None in the video processor's place of __init__
        loaded = iter(cls._get_arguments_from_pretrained.__func__(c, *args, **kwargs))
        return [next(loaded) if a in kept else None for a in attrs]

    return type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda c: list(kept)),
                                       "_get_arguments_from_pretrained": classmethod(arguments),
                                       "__module__": __name__})


def load_processor(ident: str, model_type: str, trust_remote_code: bool = False):
    """The processor of model folder or hub id `ident`. Where torchvision is not installed, a family
    whose processor carries a video processor gets its processor class without one."""
    import transformers
    from transformers.utils import is_torchvision_available

    profile = profile_for(model_type)
    if is_torchvision_available() or not profile.video:
        return transformers.AutoProcessor.from_pretrained(ident, trust_remote_code=trust_remote_code)
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    named = transformers.ProcessorMixin.get_processor_dict(ident)[0].get("processor_class")
    cls = getattr(transformers, named or "", None) or getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])
    if any("video" in a for a in cls.get_attributes()):
        cls = without_video(cls)
    try:
        return cls.from_pretrained(ident)
    except ImportError as e:
        raise RetainError(f"The {profile.name} processor of {ident!r} needs a package that is not installed ({e}): "
                          "install it.") from e


def to_pil(image):
    """uint8 (H, W, C) array, PIL image or image file path -> RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise RetainError(f"The image {image} cannot be read ({e}): replace or remove it.") from e
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr.astype(np.uint8)).convert("RGB")


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or in its own dtype when that is wider (a float64 model stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class OptionTree:
    """Options' token sequences as a prefix tree, for scoring them all in one forward.

    A node is a proper prefix of some option (its last token is fed to the model; the logits
    there predict the option's next token), so an option of L tokens passes through L - 1
    nodes and options that begin alike share theirs. `tokens[k]` and `depth[k]` (0 for a first
    token) place node k after the prompt; `ancestry[a, b]` says node a may attend to node b
    (b is a or one of its ancestors). Option j's score after its first token is the sum of
    log p(score_tokens[e] | score_nodes[e]) over the entries e with membership[e, j] = 1.
    """

    def __init__(self, ids: list[list[int]]):
        nodes: dict[tuple[int, ...], int] = {}
        parents: list[int] = []
        self.tokens: list[int] = []
        self.depth: list[int] = []
        entries: dict[tuple[int, int], int] = {}
        members: list[tuple[int, int]] = []  # (entry, option)
        for j, option in enumerate(ids):
            for k in range(len(option) - 1):
                prefix = tuple(option[:k + 1])
                if prefix not in nodes:
                    nodes[prefix] = len(self.tokens)
                    parents.append(nodes[prefix[:-1]] if k else -1)
                    self.tokens.append(option[k])
                    self.depth.append(k)
                entry = entries.setdefault((nodes[prefix], option[k + 1]), len(entries))
                members.append((entry, j))
        size = len(self.tokens)
        self.ancestry = torch.eye(size, dtype=torch.bool)
        for a in range(size):  # parents come before their children
            if parents[a] >= 0:
                self.ancestry[a] |= self.ancestry[parents[a]]
        self.score_nodes = [node for node, _ in entries]
        self.score_tokens = [token for _, token in entries]
        self.membership = torch.zeros(len(entries), len(ids))
        for e, j in members:
            self.membership[e, j] = 1


class MLLM:
    def __init__(self, model, processor, image_token: str = "<image>", system_prompt: str | None = None):
        self.model = model
        self.processor = processor
        self.image_token = image_token
        self.system_prompt = system_prompt
        self.profile = profile_for(getattr(getattr(model, "config", None), "model_type", None))
        self._typed_parts: dict[str, bool] = {}  # chat template -> whether it takes typed content parts
        self._router = None  # picks each item's adapters or prompts, inside `routing` only
        self._prefix = ""  # text put before every question, inside `routing` only

    @contextlib.contextmanager
    def routing(self, router, prefix: str = ""):
        """Answer through `router` for the duration (a routed method's `inference` context):
        `router.assign(mllm, images, questions)` picks a key per item once it is `ready()`,
        and each group of items is answered inside `router.activate(key)`; `prefix` goes
        before every question. Both are removed on exit."""
        was = self._router, self._prefix
        self._router, self._prefix = router, prefix
        try:
            yield
        finally:
            self._router, self._prefix = was

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- parameters (the trainer treats an MLLM like a module) ---------------------
    def parameters(self):
        return self.model.parameters()

    def named_parameters(self):
        return self.model.named_parameters()

    def projector_parameters(self) -> list[torch.nn.Parameter]:
        """The vision-to-language adapter's parameters (LLaVA's multi_modal_projector, Qwen2-VL's
        visual.merger, Idefics3's connector: the family's `Profile.projector`)."""
        names = self.profile.projector
        params = [p for n, p in self.model.named_parameters() if any(k in n for k in names)]
        if not params:
            raise RetainError(f"No projector found in {type(self.model).__name__}: expected a module named one of "
                              f"{names}.")
        return params

    @property
    def lora_targets(self) -> str:
        """The PEFT regex of this model's LLM attention and MLP projections."""
        return lora_targets((self.profile.language_model,))

    # ---- prompts -------------------------------------------------------------------
    def chat_prompt(self, question: str, image: bool = True) -> str:
        """The user turn (image first, then the question) in the model's chat template."""
        template = self._template()
        if template is None:
            return f"USER: {self._user_content(question, image, False)}\nASSISTANT:"
        messages = [{"role": "user", "content": self._user_content(question, image, self._takes_parts(template))}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self._text(self.system_prompt, template)})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  chat_template=template)

    def _template(self) -> str | None:
        return getattr(self.processor, "chat_template", None) or self.tokenizer.chat_template

    def _takes_parts(self, template: str) -> bool:
        """Whether `template` renders content given as typed parts ([{"type": "text", ...}]), as the
        templates of hub MLLMs do, rather than as one string (a plain LLM's template prints such a list)."""
        if template not in self._typed_parts:
            probe = "retain-typed-part-probe"
            try:
                turn = {"role": "user", "content": [{"type": "text", "text": probe}]}
                text = self.tokenizer.apply_chat_template([turn], tokenize=False, add_generation_prompt=True,
                                                          chat_template=template)
            except Exception:  # a template written for strings may fail on a list in any way (jinja, type)
                text = ""
            self._typed_parts[template] = probe in text and "'type'" not in text
        return self._typed_parts[template]

    def _user_content(self, question: str, image: bool, parts: bool):
        """A user turn: the image first, then the question; typed parts where the template takes them
        (it places the image), else one string with the image written in (`Profile.image_text`)."""
        question = self._prefix + question
        if parts:
            return [{"type": "image"}] * image + [{"type": "text", "text": question}]
        return self.profile.image_text.format(image=self.image_token) + question if image else question

    def _text(self, text: str, template: str):
        """A text-only turn's content in the form `template` takes."""
        return [{"type": "text", "text": text}] if self._takes_parts(template) else text

    def _encode(self, images, texts: list[str], padding_side: str) -> dict:
        self.tokenizer.padding_side = padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True, "padding_side": padding_side}
        if images is not None:
            kwargs["images"] = [to_pil(i) for i in images]
        enc = self.processor(**kwargs)
        return {k: v.to(self.device) for k, v in enc.items()}

    # ---- generation ----------------------------------------------------------------
    def generate(self, images, questions: list[str], max_new_tokens: int = 32, batch_size: int = 8) -> list[str]:
        """Greedy answers, one per (image, question); `images` may be None for text-only turns.
        With a router, each item is answered by the adapters the router picks for it."""
        if self._router is None or not self._router.ready():
            return self._generate(images, questions, max_new_tokens, batch_size)
        keys = self._router.assign(self, images, questions)
        out: list[str] = [""] * len(questions)
        for key in dict.fromkeys(keys):
            idx = [i for i, k in enumerate(keys) if k == key]
            with self._router.activate(key):
                got = self._generate(None if images is None else [images[i] for i in idx],
                                     [questions[i] for i in idx], max_new_tokens, batch_size)
            for i, g in zip(idx, got):
                out[i] = g
        return out

    @torch.no_grad()
    def _generate(self, images, questions: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
        out = []
        for s in range(0, len(questions), batch_size):
            qs = questions[s:s + batch_size]
            ims = None if images is None else images[s:s + batch_size]
            enc = self._encode(ims, [self.chat_prompt(q, ims is not None) for q in qs], "left")
            ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [o.strip() for o in out]

    # ---- option likelihoods --------------------------------------------------------
    def option_ids(self, options: list[str]) -> list[list[int]]:
        ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        empty = [o for o, i in zip(options, ids) if not i]
        if empty:
            raise RetainError(f"The option {empty[0]!r} has no tokens; options must be non-empty text.")
        return ids

    def loglik(self, image, question: str, options: list[str]) -> list[float]:
        """log p(option | image, question) for each option, the prompt computed once: the sum over
        the option's tokens (`option_ids`); `normalise` gives the per-token and per-character means."""
        return self.loglik_many([image], question, options)[0]

    def loglik_many(self, images, question: str, options: list[str], batch_size: int = 8) -> list[list[float]]:
        """`loglik` for every image with one question, `batch_size` images per forward."""
        if self._router is not None and self._router.ready():
            keys = self._router.assign(self, images, [question] * len(images))
            out: list[list[float]] = [[] for _ in images]
            for key in dict.fromkeys(keys):
                idx = [i for i, k in enumerate(keys) if k == key]
                with self._router.activate(key):
                    for i, scores in zip(idx, self._loglik_batches([images[i] for i in idx], question, options,
                                                                  batch_size)):
                        out[i] = scores
            return out
        return self._loglik_batches(images, question, options, batch_size)

    def _loglik_batches(self, images, question, options, batch_size) -> list[list[float]]:
        out, prefix = [], None  # the prompt's shared first tokens, run once for every batch of the call
        for s in range(0, len(images), batch_size):
            rows, prefix = self._loglik(images[s:s + batch_size], question, options, prefix)
            out += rows
        return out

    @torch.no_grad()
    def _loglik(self, images, question: str, options: list[str], prefix=None) -> tuple[list[list[float]], tuple]:
        """Option log-likelihoods for a batch of images (or [None]) and one question, and the shared prefix."""
        with_image = images[0] is not None
        n_items = len(images)
        enc = self._encode(images if with_image else None,
                           [self.chat_prompt(question, with_image)] * n_items, "left")
        if not bool(enc["attention_mask"].all()):  # images of different token counts: one at a time
            rows = []
            for im in images:
                got, prefix = self._loglik([im], question, options, prefix)
                rows += got
            return rows, prefix
        prefix = self._shared_prefix(enc, prefix)
        return self._option_scores(enc, options, prefix), prefix

    def _shared_prefix(self, enc: dict, prefix: tuple | None) -> tuple | None:
        """(k, ids, cache, name): the prompt's first k tokens, the same in every row and before any image,
        run once as a batch of one; `prefix` itself when it still applies. None where the prompt is not
        split: an M-RoPE model (its positions come from the whole prompt), a model whose hooks keep state
        from call to call (`stateful_hooks`, WINGS's learners), or fewer than MIN_PREFIX shared tokens."""
        if self.profile.mrope or getattr(unwrapped(self.model), "stateful_hooks", False):
            return None
        ids = enc["input_ids"]
        if prefix is not None and ids.shape[1] > prefix[0] and bool((ids[:, :prefix[0]] == prefix[1]).all()):
            return prefix
        shared = (ids == ids[:1]).all(0) & ~torch.isin(ids, self._image_token_ids()).any(0)
        k = min(int(shared.long().cumprod(0).sum()), ids.shape[1] - 1)  # the leading run, one token left over
        if k < MIN_PREFIX:
            return None
        out = self.model(input_ids=ids[:1, :k], attention_mask=enc["attention_mask"][:1, :k], use_cache=True,
                         **({"logits_to_keep": 1} if self._keeps_logits() else {}))
        name = cache_name(out)
        return k, ids[:1, :k], out[name], name

    def _image_token_ids(self) -> torch.Tensor:
        """Every id that stands for an image in the prompt (the config's and the processor's image token)."""
        config = getattr(self.model, "config", None)
        ids = {getattr(config, key, None) for key in ("image_token_id", "image_token_index")}
        ids.add(self.tokenizer.convert_tokens_to_ids(self.image_token))
        return torch.tensor(sorted(i for i in ids if isinstance(i, int) and i >= 0), dtype=torch.long,
                            device=self.device)

    @torch.no_grad()
    def _option_scores(self, enc: dict, options: list[str], prefix: tuple | None = None) -> list[list[float]]:
        """log p(option | prompt) for every (unpadded) encoded prompt of `enc` and every option.

        Two forwards whatever the number of options: the prompt (logits of its last position
        only; with `prefix` (`_shared_prefix`), its first tokens come from that cache, copied
        per row), then every option's tokens at once over the prompt's cache as a prefix tree
        (`OptionTree`): each tree node is one token, placed at its depth after the prompt,
        attending to the prompt and its own ancestors only, so options that share first tokens
        share their forward and the prompt's cache is never copied."""
        ids = self.option_ids(options)
        keep = {"logits_to_keep": 1} if self._keeps_logits() else {}
        if prefix is None:
            out = self.model(**enc, use_cache=True, **keep)
        else:
            k, _, cached, name = prefix
            cache = copy.deepcopy(cached)
            cache.batch_repeat_interleave(enc["input_ids"].shape[0])
            rest = {key: v[:, k:] if key == "input_ids" or key in TOKEN_ALIGNED else v for key, v in enc.items()}
            out = self.model(**rest, use_cache=True, **{name: cache}, **keep)
        first = at_least_float32(out.logits[:, -1]).log_softmax(-1)  # (B, V): predicts each option's first token
        scores = first[:, [i[0] for i in ids]].double().cpu()  # (B, n)
        tree = OptionTree(ids)
        if not tree.tokens:  # every option is one token long
            return scores.tolist()
        name = cache_name(out)
        n_items = enc["input_ids"].shape[0]
        dtype = next(p for p in self.model.parameters() if p.is_floating_point()).dtype
        if self._tree_attention():
            start = next_positions(self.model, enc)  # (B,) the position after each prompt
            allowed = torch.cat([enc["attention_mask"].bool()[:, None, :].expand(-1, len(tree.tokens), -1),
                                 tree.ancestry.to(enc["attention_mask"].device)[None].expand(n_items, -1, -1)], 2)
            mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
            mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            step = self.model(input_ids=torch.tensor(tree.tokens, device=self.device).repeat(n_items, 1),
                              attention_mask=mask[:, None], use_cache=True, **{name: out[name]},
                              position_ids=start[:, None] + torch.tensor(tree.depth, device=self.device))
            logp = at_least_float32(step.logits).log_softmax(-1)  # (B, nodes, V): node k predicts its children
            rest = logp[:, tree.score_nodes, tree.score_tokens].double().cpu()  # (B, scored)
            scores = scores + rest @ tree.membership.to(rest.dtype)  # (B, scored) @ (scored, n)
            return scores.tolist()
        return (scores + self._repeated_cache_scores(enc, out[name], name, ids)).tolist()

    def _keeps_logits(self) -> bool:
        """whether the model's forward takes `logits_to_keep` (the prompt's LM head on its last position only)"""
        import inspect

        return "logits_to_keep" in inspect.signature(unwrapped(self.model).forward).parameters

    def _tree_attention(self) -> bool:
        """whether the attention takes a custom 4D mask (eager and SDPA do; flash attention ignores it)"""
        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        text = getattr(getattr(self.model, "config", None), "text_config", None)
        impls = {impl, getattr(text, "_attn_implementation", impl)}
        return impls <= {"eager", "sdpa", None}

    def _repeated_cache_scores(self, enc: dict, cache, name: str, ids: list[list[int]]) -> torch.Tensor:
        """(B, n) log p of each option's tokens after its first: the prompt's cache repeated once per
        option and the options padded into one batch (for attention that takes no custom mask)."""
        n_items = enc["input_ids"].shape[0]
        n, longest = len(ids), max(map(len, ids))
        extra = {}
        if self.profile.mrope:  # the model would take the option tokens' positions from the whole mask
            start = next_positions(self.model, enc)  # (B,)
            steps = torch.arange(longest - 1, device=start.device)
            extra["position_ids"] = (start[:, None] + steps).repeat_interleave(n, 0)  # (B*n, L-1)
        pad = self.tokenizer.pad_token_id or 0
        tokens = torch.tensor([i + [pad] * (longest - len(i)) for i in ids], device=self.device).repeat(n_items, 1)
        mask = torch.tensor([[1] * len(i) + [0] * (longest - len(i)) for i in ids],
                            device=self.device).repeat(n_items, 1)  # (B*n, L): row b*n + j
        cache.batch_repeat_interleave(n)
        prompt_mask = enc["attention_mask"].repeat_interleave(n, 0)
        step = self.model(input_ids=tokens[:, :-1], attention_mask=torch.cat([prompt_mask, mask[:, :-1]], 1),
                          use_cache=True, **{name: cache}, **extra)
        logp = at_least_float32(step.logits).log_softmax(-1)  # position k predicts token k+1
        rest = (logp.gather(-1, tokens[:, 1:, None])[..., 0] * mask[:, 1:]).sum(1)
        return rest.double().cpu().view(n_items, n)

    # ---- conversations ---------------------------------------------------------------
    def conversation_prompt(self, turns: list[tuple[str, bool, str | None]]) -> str:
        """A multi-turn chat: (question, has image, answer or None for the turn to answer)."""
        template = self._template()
        if template is None:
            raise RetainError("Multi-turn scoring needs a chat template (the tokenizer or processor has none).")
        parts = self._takes_parts(template)
        messages = [] if self.system_prompt is None else [{"role": "system",
                                                            "content": self._text(self.system_prompt, template)}]
        for question, has_image, answer in turns:
            messages.append({"role": "user", "content": self._user_content(question, has_image, parts)})
            if answer is not None:
                messages.append({"role": "assistant", "content": self._text(answer, template)})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  chat_template=template)

    def loglik_conversation(self, turns: list[tuple[str, bool, str | None]], images: list, options: list[str]
                            ) -> list[float]:
        """log p(option | the conversation so far) for the last turn; `images` in turn order."""
        if sum(has for _, has, _ in turns) != len(images):
            raise RetainError(f"The conversation has {sum(h for _, h, _ in turns)} image turns but {len(images)} images.")
        self.tokenizer.padding_side = "left"
        kwargs = {"text": [self.conversation_prompt(turns)], "return_tensors": "pt", "padding_side": "left"}
        if images:
            kwargs["images"] = [to_pil(i) for i in images]
        enc = {k: v.to(self.device) for k, v in self.processor(**kwargs).items()}
        return self._option_scores(enc, options)[0]

    # ---- training ------------------------------------------------------------------
    def training_batch(self, images, questions: list[str], answers: list[str]) -> dict:
        """Model inputs with `labels` on the answer tokens (and end-of-turn) only, and every image
        input the processor gives (pixel values, image sizes or grids, pixel masks)."""
        end = self.tokenizer.eos_token or ""
        prompts = self._encode(images, [self.chat_prompt(q, images is not None) for q in questions], "right")
        rows, labels = [], []
        for k, answer in enumerate(answers):
            prompt = prompts["input_ids"][k][prompts["attention_mask"][k].bool()].tolist()
            ans = self.tokenizer(answer + end, add_special_tokens=False)["input_ids"]
            rows.append(prompt + ans)
            labels.append([IGNORE] * len(prompt) + ans)
        longest = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        batch = {
            "input_ids": torch.tensor([r + [pad] * (longest - len(r)) for r in rows], device=self.device),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows], device=self.device),
            "labels": torch.tensor([lab + [IGNORE] * (longest - len(lab)) for lab in labels], device=self.device),
        }
        for key, value in prompts.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if key in TOKEN_ALIGNED:  # one value per prompt token: the answer and the padding get 0 (text)
                kept = [value[k][prompts["attention_mask"][k].bool()].tolist() for k in range(len(answers))]
                value = torch.tensor([r + [0] * (longest - len(r)) for r in kept], device=self.device)
            batch[key] = value
        return batch

    def training_loss(self, images, questions: list[str], answers: list[str]) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of the batch."""
        batch = self.training_batch(images, questions, answers)
        labels = batch.pop("labels")
        logits = self.model(**batch).logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


# option lengths that a summed log-probability is divided by, per normalisation
LENGTHS = {
    "sum": lambda options, token_counts: [1] * len(options),
    "token": lambda options, token_counts: token_counts,
    "char": lambda options, token_counts: [len(o) for o in options],
}
NORMALISED = ("token", "char")


def normalise(scores, options: list[str], token_counts: list[int], how: str) -> np.ndarray:
    """Summed option log-probabilities (`MLLM.loglik*`, options on the last axis) under one
    length normalisation, in float64.

    - `sum`: as given, log p(option | prompt). Every token costs, so short options are favoured.
    - `token`: the mean log-probability per token, the sum over the option's token count;
      `token_counts` are `[len(i) for i in mllm.option_ids(options)]`, the tokens that were scored.
    - `char`: the sum over the option's length in characters (`len(option)`), lm-eval-harness's
      acc_norm. lm-eval scores the continuation " " + choice (its target delimiter) and divides
      by `len(choice)`, the space not counted; retain scores the option as is right after the
      prompt (no leading space) and divides by `len(option)`: the same characters counted.
    """
    if how not in LENGTHS:
        raise RetainError(f"Unknown option-score normalisation {how!r}: use one of {', '.join(LENGTHS)}.")
    scores = np.asarray(scores, dtype=np.float64)
    lengths = np.asarray(LENGTHS[how](options, token_counts), dtype=np.float64)
    if lengths.shape != scores.shape[-1:]:
        raise RetainError(f"{scores.shape[-1]} option scores but {len(lengths)} option lengths.")
    return scores / lengths


def best_options(scores, options: list[str], token_counts: list[int]) -> dict[str, np.ndarray]:
    """The index of the best option under each normalisation of `LENGTHS` (argmax over the last
    axis of `scores`; ties go to the first option)."""
    return {how: normalise(scores, options, token_counts, how).argmax(-1) for how in LENGTHS}


def load_mllm_from(ident: str, hub: bool = False, trust_remote_code: bool = False, dtype=None) -> MLLM:
    """An MLLM from a local folder or, with `hub`, a Hugging Face hub id (`llava-hf/llava-1.5-7b-hf`).
    Names (zoo models, `hf:<id>`) are the registry's (`retain.registry.load_mllm`)."""
    from pathlib import Path

    from transformers import AutoConfig, AutoModelForImageTextToText

    try:
        config = AutoConfig.from_pretrained(ident, trust_remote_code=trust_remote_code)
        processor = load_processor(ident, config.model_type, trust_remote_code=trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(ident, use_safetensors=True, dtype=dtype,
                                                            trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RetainError(f"Could not load the MLLM {ident!r}: {e}. A hub id needs network access or a local "
                          "copy; a folder needs config.json, safetensors weights and the processor files.") from e
    wings = Path(ident) / "wings.json"
    if not hub and wings.exists():  # built the WINGS way: put the learners back
        import json

        from safetensors.torch import load_file

        from retain.wings.inject import inject_wings

        learners = inject_wings(model, rank=json.loads(wings.read_text())["rank"])
        learners.load_state_dict(load_file(str(Path(ident) / "wings.safetensors")))
    token = getattr(processor, "image_token", None) or "<image>"
    return MLLM(model.eval(), processor, image_token=token)
