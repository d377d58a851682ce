"""The two text encoders MultiMon compares, and an on-disk cache of their embeddings.

- target: the multimodal model's text tower (retain's mini-CLIP, any Hugging Face CLIP,
  any model `retain.registry.load_dual_encoder` reads), L2-normalised projected features.
- reference: a sentence encoder that MultiMon trusts to tell meanings apart (the paper:
  a sentence-transformers model). `minilm` is all-MiniLM-L6-v2 from the offline assets;
  `hf:<id>` or a folder is any sentence-transformers checkpoint, pooled as its
  `1_Pooling/config.json` says (mean pooling when absent).

Sentences are tokenised once, embedded sorted by token length (little padding), then put
back in corpus order. When the two towers share their bottom layers bit for bit (mini-CLIP's text tower
is MiniLM with only its top layers trained), those layers run once for both
(`embed_both`); the split forward is checked against each tower's own forward first. Embeddings are cached under `$RETAIN_CACHE/multimon/embeddings/`, keyed by a hash
of the encoder's weights and settings and a hash of the corpus, so a second run over the
same corpus starts at the search.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from retain.errors import RetainError
from retain.io import atomic_write
from retain.models.dual_encoder import mean_pool, run_layers
from retain.paths import cache_dir
from retain.progress import bar


class TextEncoder:
    """texts -> L2-normalised embeddings, with a fingerprint of everything that shapes them."""

    def __init__(self, name: str, tokenizer, forward: Callable, modules: list[torch.nn.Module],
                 settings: dict, max_length: int, tower=None, finish: Callable | None = None):
        self.tower = tower  # a BERT-style model (embeddings + encoder.layer), when the split forward applies
        self.finish = finish  # (last hidden state, attention mask) -> (B, E), with `tower`
        self.name = name
        self.tokenizer = tokenizer
        self.forward = forward  # (input_ids, attention_mask) -> (B, E) unnormalised
        self.modules = modules
        self.settings = settings
        self.max_length = max_length
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 over the weights of the modules that embed text and the pooling settings."""
        if self._fingerprint is None:
            h = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode())
            for module in self.modules:
                for key, value in module.state_dict().items():
                    h.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
                    h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @property
    def device(self) -> torch.device:
        return next(self.modules[0].parameters()).device

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256, desc: str = "") -> torch.Tensor:
        """(N, E) float32 unit vectors, in the order of `texts`."""
        if not texts:
            raise RetainError(f"{self.name}: nothing to embed (an empty list of sentences).")
        ids = tokenize(self.tokenizer, texts, self.max_length)
        out: torch.Tensor | None = None
        for idx, batch, mask in _length_sorted_batches(self.tokenizer, ids, batch_size,
                                                       desc or f"embedding with {self.name}", self.device):
            out = _scatter(out, idx, F.normalize(self.forward(batch, mask).float(), dim=-1), len(texts))
        return out


def target_encoder(name: str, trust_remote_code: bool = False):
    """(TextEncoder, DualEncoder): the text tower of a dual encoder (`mini-clip`,
    `hf:openai/clip-...`, a folder) and the model itself (its image tower serves transfer)."""
    from retain.models import default_device
    from retain.registry import load_dual_encoder

    model = load_dual_encoder(name, trust_remote_code=trust_remote_code).to(default_device())
    max_len = min(getattr(model.tokenizer, "model_max_length", 77), 77)

    def finish(hidden, mask):
        return model.text_projection(mean_pool(hidden, mask))

    return TextEncoder(name, model.tokenizer, model.text_forward, [model.text, model.text_projection],
                       {"kind": "dual_encoder", "pooling": model.text_pooling, "max_length": max_len}, max_len,
                       tower=model.text if model.text_pooling == "mean" else None, finish=finish), model


def reference_encoder(name: str = "minilm", trust_remote_code: bool = False) -> TextEncoder:
    """A sentence-transformers style encoder: `minilm` (offline), `hf:<id>` or a folder."""
    from transformers import AutoModel, AutoTokenizer

    from retain.models import default_device

    if name == "minilm":
        from retain.registry import text_tower_dir

        path = text_tower_dir()
    elif name.startswith("hf:"):
        path = name[3:]
    elif Path(name).is_dir():
        path = name
    else:
        raise RetainError(f"Unknown reference encoder {name!r}: use minilm, hf:<sentence-transformers id> "
                          "(the paper: hf:sentence-transformers/paraphrase-distilroberta-base-v1) or a folder.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code).eval()
        model.to(default_device())
    except (OSError, ValueError) as e:
        raise RetainError(f"Could not load the reference encoder {name!r} ({e}). A hub id needs network access "
                          "or a cached copy; a folder needs config.json, model.safetensors and tokenizer files.") from e
    pooling = _pooling_mode(path)
    max_len = min(getattr(tokenizer, "model_max_length", 512) or 512, 256)

    def finish(hidden, mask):  # hidden: (B, T, D)
        return hidden[:, 0] if pooling == "cls" else mean_pool(hidden, mask)

    def forward(input_ids, attention_mask):
        return finish(model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask)

    return TextEncoder(name, tokenizer, forward, [model], {"kind": "sentence", "pooling": pooling,
                                                          "max_length": max_len}, max_len, tower=model, finish=finish)


def _layers(tower):
    enc = getattr(tower, "encoder", None)
    return getattr(enc, "layer", None) if hasattr(tower, "embeddings") else None


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def shared_layers(a: TextEncoder, b: TextEncoder) -> int:
    """How many bottom layers two BERT-style towers share bit for bit (with their embeddings
    and tokenizer); 0 when the split forward does not apply."""
    la, lb = _layers(a.tower), _layers(b.tower)
    if la is None or lb is None or a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        return 0
    if type(a.tower) is not type(b.tower) or not _same(a.tower.embeddings, b.tower.embeddings):
        return 0
    k = 0
    while k < min(len(la), len(lb)) and _same(la[k], lb[k]):
        k += 1
    return k


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's token ids (special tokens added, truncated to `max_length`), tokenised once."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]


def _length_sorted_batches(tokenizer, ids: list[list[int]], batch_size: int, desc: str, device: torch.device):
    """(corpus indices, input_ids, attention_mask) batches in order of token length (little padding),
    padded here the way the tokenizer pads (its pad token, on its side)."""
    order = np.argsort([len(i) for i in ids], kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for start in bar(range(0, len(ids), batch_size), desc=desc, total=(len(ids) + batch_size - 1) // batch_size,
                     unit="batch"):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        batch = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            span = slice(width - len(ids[i]), width) if left else slice(0, len(ids[i]))
            batch[row, span] = torch.tensor(ids[i])
            mask[row, span] = 1
        yield torch.from_numpy(idx), batch.to(device), mask.to(device)


def _scatter(out: torch.Tensor | None, idx: torch.Tensor, emb: torch.Tensor, n: int) -> torch.Tensor:
    """Rows `idx` of an (n, E) output, allocated at the first batch."""
    if out is None:
        out = torch.empty(n, emb.shape[1])
    out[idx] = emb.cpu()
    return out


@torch.inference_mode()
def embed_both(a: TextEncoder, b: TextEncoder, texts: list[str], shared: int, batch_size: int = 256,
               desc: str = "") -> tuple[torch.Tensor, torch.Tensor] | None:
    """Both encoders' embeddings, the `shared` bottom layers run once per batch; None when
    a sentence is longer than one of them reads (they would truncate it differently)."""
    tokens = a.tokenizer(list(texts))["input_ids"]
    if max(map(len, tokens)) > min(a.max_length, b.max_length):
        return None
    outs: list[torch.Tensor | None] = [None, None]
    for idx, ids, mask in _length_sorted_batches(a.tokenizer, tokens, batch_size,
                                                 desc or f"embedding with {a.name} and {b.name}", a.device):
        low = run_layers(_layers(a.tower)[:shared], a.tower.embeddings(input_ids=ids), mask)
        for k, e in enumerate((a, b)):
            emb = F.normalize(e.finish(run_layers(_layers(e.tower)[shared:], low, mask), mask).float(), dim=-1)
            if outs[k] is None:  # first batch: the split forward must equal the tower's own
                direct = F.normalize(e.forward(ids[:4], mask[:4]).float(), dim=-1)
                if not torch.allclose(emb[:4], direct, atol=1e-4):
                    raise RetainError(f"{e.name}: the shared-layer forward differs from the model's own forward.")
            outs[k] = _scatter(outs[k], idx, emb, len(texts))
    return outs[0], outs[1]


def _pooling_mode(path: str) -> str:
    """`cls` or `mean`, from a sentence-transformers folder's pooling config (mean if absent)."""
    cfg = None
    local = Path(path) / "1_Pooling" / "config.json"
    if local.exists():
        cfg = json.loads(local.read_text())
    elif not Path(path).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            cfg = json.loads(Path(hf_hub_download(path, "1_Pooling/config.json")).read_text())
        except Exception:  # no pooling config on the hub: sentence-transformers' default
            cfg = None
    if cfg and cfg.get("pooling_mode_cls_token") and not cfg.get("pooling_mode_mean_tokens"):
        return "cls"
    if cfg and not cfg.get("pooling_mode_mean_tokens", True):
        raise RetainError(f"{path}: only mean and CLS pooling are supported (its pooling config: {cfg}).")
    return "mean"


def corpus_hash(sentences: list[str]) -> str:
    return hashlib.sha256("\n".join(sentences).encode()).hexdigest()


def _cache_path(encoder: TextEncoder, sentences: list[str]) -> Path:
    return cache_dir("multimon", "embeddings") / f"{encoder.fingerprint[:16]}-{corpus_hash(sentences)[:16]}.npy"


def _read_cache(path: Path, n: int) -> torch.Tensor | None:
    if path.exists():
        try:
            emb = np.load(path, allow_pickle=False)
            if emb.shape[0] == n:
                return torch.from_numpy(emb)
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    return None


def _write_cache(path: Path, emb: torch.Tensor) -> None:
    def _save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, emb.numpy(), allow_pickle=False)

    atomic_write(path, _save)


def cached_embeddings(encoder: TextEncoder, sentences: list[str], batch_size: int = 256,
                      desc: str = "") -> tuple[torch.Tensor, bool]:
    """Embeddings of `sentences` by `encoder`, read from the cache when this pair was seen.

    Returns the (N, E) tensor and whether it came from the cache.
    """
    path = _cache_path(encoder, sentences)
    emb = _read_cache(path, len(sentences))
    if emb is not None:
        return emb, True
    emb = encoder.encode(sentences, batch_size=batch_size, desc=desc)
    _write_cache(path, emb)
    return emb, False


def cached_pair_embeddings(target: TextEncoder, reference: TextEncoder, sentences: list[str],
                           batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Both encoders' embeddings of `sentences` (cached), shared bottom layers run once.

    Returns the two (N, E) tensors and {"target": from cache, "reference": from cache,
    "shared_layers": k}.
    """
    paths = [_cache_path(e, sentences) for e in (target, reference)]
    embs = [_read_cache(p, len(sentences)) for p in paths]
    info = {"target": embs[0] is not None, "reference": embs[1] is not None, "shared_layers": 0}
    shared = shared_layers(target, reference) if embs[0] is None and embs[1] is None else 0
    both = embed_both(target, reference, sentences, shared, batch_size) if shared else None
    if both is not None:
        info["shared_layers"] = shared
        for p, e in zip(paths, both):
            _write_cache(p, e)
        return both[0], both[1], info
    for k, e in enumerate((target, reference)):
        if embs[k] is None:
            embs[k] = cached_embeddings(e, sentences, batch_size, f"embedding the corpus with {e.name}")[0]
    return embs[0], embs[1], info
