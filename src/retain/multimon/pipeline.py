"""`retain mine`: MultiMon's whole pipeline, corpus -> mine -> steer -> categorise -> generate -> evaluate.

Everything lands in `<output_dir>/<name>/`: config.yaml (with seed and versions),
mined.jsonl (the kept erroneous agreements, best first), generated.jsonl (every generated
pair with its scores), results.json, table.md and report.html. Embeddings are cached by
(encoder, corpus), language-model replies in `<run>/lm-cache/`, so a rerun costs only what
changed. A language-model failure is recorded in results.json under `errors` and the run
goes on with what it has, unless the endpoint counts as down (nothing answers at its URL,
or `breaker` requests in a row failed, see `retain.llm`): then the run stops with one
message, keeping mined.jsonl and the cached replies.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from retain.config import NON_NEGATIVE, POSITIVE, Range
from retain.errors import RetainError
from retain.io import write_json, write_text
from retain.llm import EndpointDown, LMError
from retain.progress import bar, say

PAPER_NEGATIVE_KEYWORDS = ["there is no", "unable", "does not", "do not", "am not", "no image", "no picture"]
CORPUS_COLUMNS = ("premise", "sentence1", "caption", "captions", "sentences", "text", "sentence")


@dataclass
class MineConfig:
    name: str = "multimon"
    """the run's folder under output_dir"""
    output_dir: str = "runs"
    target: str = "mini-clip"
    """the multimodal text encoder: mini-clip, hf:openai/clip-vit-large-patch14 (the paper), a folder"""
    reference: str = "minilm"
    """the reference sentence encoder: minilm (offline), hf:sentence-transformers/<id>, a folder"""
    corpus: str = "generated"
    """generated (offline templates), a .txt file (one sentence per line), or hf:<dataset id or folder>"""
    corpus_size: Annotated[int, NON_NEGATIVE] = 60000
    """sentences in the generated corpus; for other corpora a cap (0: all)"""
    corpus_split: str = "train"
    corpus_config: str = ""
    corpus_column: str = ""
    """the text column of a `datasets` corpus (empty: the first of premise, sentence1, caption(s), text)"""
    negative_keywords: list = field(default_factory=lambda: list(PAPER_NEGATIVE_KEYWORDS))
    """sentences containing any of these are dropped before mining (the paper's list)"""
    threshold: Annotated[float, Range(gt=0, lt=1)] = 0.9
    """target cosine above which a pair counts as conflated"""
    gap: Annotated[float, NON_NEGATIVE] = 0.2
    """|target - reference cosine| above which the conflation is erroneous"""
    top_k: Annotated[int, POSITIVE] = 150
    """erroneous agreements kept, highest target cosine first"""
    backend: Literal["offline", "chat"] = "offline"
    """offline (no language model) or chat (an OpenAI-compatible endpoint)"""
    lm_url: str = ""
    """the chat endpoint's base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1"""
    lm_model: str = ""
    lm_key_env: str = "OPENAI_API_KEY"
    """environment variable holding the endpoint's key (never written anywhere)"""
    lm_timeout: Annotated[float, POSITIVE] = 120.0
    """seconds one request to the endpoint may take"""
    lm_breaker: Annotated[int, POSITIVE] = 5
    """requests failing in a row after which the endpoint counts as down and the run stops"""
    pairs_per_type: Annotated[int, POSITIVE] = 41
    """new pairs asked for per failure type (the paper: 41)"""
    transfer_pairs: Annotated[int, NON_NEGATIVE] = 41
    """offline backend: extra pairs per type rewritten from captions retain has images of, for transfer"""
    steer: str = ""
    """a target use (e.g. "self-driving cars"): keep only pairs whose difference matters for it"""
    steer_pool: Annotated[int, POSITIVE] = 10
    """when steering, the best steer_pool x top_k agreements are asked, in order, until top_k pass"""
    steer_threshold: float = 0.3
    """offline steering: reference cosine between a pair and the steering text that counts as relevant"""
    images_per_side: Annotated[int, POSITIVE] = 8
    """images shown per caption when measuring transfer"""
    mllm: str = ""
    """an MLLM built on the target encoder for transfer (e.g. mini-llava); empty: zero-shot classifier only"""
    batch_size: Annotated[int, POSITIVE] = 256
    block_size: Annotated[int, POSITIVE] = 1024
    seed: int = 0
    trust_remote_code: bool = False


# ---- corpus --------------------------------------------------------------------------
def load_corpus(cfg: MineConfig) -> tuple[list[str], str]:
    """The deduplicated corpus and a sentence saying where it came from."""
    from retain.multimon.corpus import CORPUS_NOTE, dedupe, generated_captions, read_text_corpus

    cap = cfg.corpus_size or None
    if cfg.corpus == "generated":
        return generated_captions(cfg.corpus_size, cfg.seed), f"generated: {cfg.corpus_size:,} {CORPUS_NOTE}"
    if cfg.corpus.startswith("hf:"):
        sentences = dedupe(_dataset_sentences(cfg))
        source = f"`datasets` corpus {cfg.corpus[3:]} ({cfg.corpus_split})"
    else:
        sentences = read_text_corpus(cfg.corpus)
        source = f"text file {cfg.corpus}"
    if len(sentences) < 2:
        raise RetainError(f"The corpus {cfg.corpus!r} has {len(sentences)} distinct sentence(s); mining needs pairs.")
    return sentences[:cap], f"{source}: {min(len(sentences), cap or len(sentences))} distinct sentences"


def _dataset_sentences(cfg: MineConfig) -> list[str]:
    from retain.data.sources import dataset_rows

    rows = dataset_rows(cfg.corpus[3:], cfg.corpus_split, cfg.corpus_config or None, "corpus")
    columns = list(rows.column_names)
    column = cfg.corpus_column or next((c for c in CORPUS_COLUMNS if c in columns), None)
    if column not in columns:
        raise RetainError(f"The corpus {cfg.corpus!r} has no column {column or 'with sentences'} (columns: {columns}); "
                          "set corpus_column=<name>.")
    out = []
    for value in rows[column]:
        values = value if isinstance(value, list) else [value]
        out.extend(v for v in values if isinstance(v, str))
    return out


def drop_keywords(sentences: list[str], keywords: list[str]) -> tuple[list[str], int]:
    """Sentences without any of the keywords (case-insensitive), and how many were dropped."""
    keys = [k.lower() for k in keywords]
    kept = [s for s in sentences if not any(k in s.lower() for k in keys)]
    return kept, len(sentences) - len(kept)


# ---- backends ------------------------------------------------------------------------
def make_backend(cfg: MineConfig, corpus: list[str], reference, out: Path):
    from retain.multimon.backends import ChatBackend, OfflineBackend

    if cfg.backend == "offline":
        return OfflineBackend(corpus, reference, seed=cfg.seed, steer_threshold=cfg.steer_threshold)
    return ChatBackend(chat_client(cfg, out))


def chat_client(cfg: MineConfig, out: Path):
    from retain.llm import ChatClient

    return ChatClient(cfg.lm_url, cfg.lm_model, api_key_env=cfg.lm_key_env, timeout=cfg.lm_timeout,
                      breaker=cfg.lm_breaker, cache_dir=str(out / "lm-cache"), url_trusted=False)


# ---- the pipeline --------------------------------------------------------------------
def validate(cfg: MineConfig) -> None:
    """Bad settings fail here, before any model is loaded."""
    if cfg.backend == "chat" and (not cfg.lm_url or not cfg.lm_model):
        raise RetainError("backend: chat needs lm_url (an OpenAI-compatible base URL) and lm_model.")
    if cfg.backend == "chat":
        from retain.llm import check_key

        check_key(cfg.lm_url, cfg.lm_key_env, url_trusted=False, setting="lm_url")


def run_mine(cfg: MineConfig) -> Path:
    import yaml

    from retain.multimon.encoders import cached_pair_embeddings, reference_encoder, target_encoder
    from retain.multimon.miner import erroneous_agreements
    from retain.rundir import versions

    validate(cfg)
    out = Path(cfg.output_dir) / cfg.name
    if cfg.backend == "chat":  # a dead endpoint stops the run here, before any model is loaded
        chat_client(cfg, out).probe()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump({**asdict(cfg), "versions": versions()}, sort_keys=False))
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    corpus, corpus_note = load_corpus(cfg)
    corpus, dropped = drop_keywords(corpus, cfg.negative_keywords)
    say(f"corpus: {corpus_note}; {dropped} dropped by keyword, {len(corpus)} to mine")
    target, dual = target_encoder(cfg.target, cfg.trust_remote_code)
    reference = reference_encoder(cfg.reference, cfg.trust_remote_code)
    timings["corpus_and_models_seconds"] = round(time.perf_counter() - clock, 2)
    emb_t, emb_r, embedding_info = cached_pair_embeddings(target, reference, corpus, cfg.batch_size)
    timings["embedding_seconds"] = round(time.perf_counter() - clock - timings["corpus_and_models_seconds"], 2)

    pool = cfg.top_k * (cfg.steer_pool if cfg.steer else 1)
    mined = erroneous_agreements(emb_t, emb_r, cfg.threshold, cfg.gap, pool, block=cfg.block_size)
    timings["search_seconds"] = mined.stats["search_seconds"]
    say(f"mined: {mined.stats['agreements']} erroneous agreements among {mined.stats['pairs_compared']:,} pairs "
        f"({mined.stats['search_seconds']:.1f} s)")
    rows = [{"a": corpus[i], "b": corpus[j], "cos_target": round(float(ct), 6), "cos_reference": round(float(cr), 6)}
            for i, j, ct, cr in zip(mined.i, mined.j, mined.cos_target, mined.cos_reference)]
    backend = make_backend(cfg, corpus, reference, out)
    if cfg.steer:
        rows = steer(rows, backend, cfg, errors)
    rows = rows[:cfg.top_k]
    _write_jsonl(out / "mined.jsonl", rows)
    pairs = [(r["a"], r["b"]) for r in rows]

    try:
        failure_types = backend.categorise(pairs) if pairs else []
    except EndpointDown:  # one message; mined.jsonl and the reply cache stay
        raise
    except LMError as e:
        errors["categorise"] = str(e)
        failure_types = []
    generated: list[dict] = []
    mined_set = set(pairs)
    for ft in bar(failure_types, desc="generating pairs per failure type", unit="type"):
        try:
            new = backend.generate(ft, cfg.pairs_per_type, avoid=mined_set)
        except EndpointDown:
            raise
        except LMError as e:
            errors[f"generate:{ft.name}"] = str(e)
            continue
        generated += [{"type": ft.name, "set": "generated", "a": a, "b": b} for a, b in new]
        if cfg.transfer_pairs and backend.name == "offline":  # rewrites of captions that have images
            from retain.multimon.evaluate import grounds_apart, probe_captions

            probes = backend.generate(ft, cfg.transfer_pairs, avoid=mined_set | set(new), seeds=probe_captions(),
                                      keep=grounds_apart)
            generated += [{"type": ft.name, "set": "transfer", "a": a, "b": b} for a, b in probes]
    evaluate_generated(generated, target, reference, dual, cfg, errors)
    _write_jsonl(out / "generated.jsonl", generated)

    types = [type_summary(ft, rows, [g for g in generated if g["type"] == ft.name]) for ft in failure_types]
    timings["total_seconds"] = round(time.perf_counter() - clock, 2)
    results = {"corpus": {"source": cfg.corpus, "note": corpus_note, "sentences": len(corpus),
                          "dropped_by_keyword": dropped},
               "target": cfg.target, "reference": cfg.reference, "backend": cfg.backend,
               "embeddings": embedding_info,
               "mining": mined.stats, "steer": cfg.steer or None, "mined": len(rows), "failure_types": types,
               "generated": len(generated), "errors": errors, "timings": timings, "seed": cfg.seed}
    write_json(out / "results.json", results)
    write_text(out / "table.md", format_types_table(results) + "\n")
    write_mine_report(out)
    return out


def steer(rows: list[dict], backend, cfg: MineConfig, errors: dict) -> list[dict]:
    """The best pairs whose difference matters for `cfg.steer`, asked in order until top_k pass."""
    kept, failed = [], 0
    for row in bar(rows, desc=f"steering towards {cfg.steer!r}", unit="pair"):
        try:
            if backend.relevant(row["a"], row["b"], cfg.steer):
                kept.append(row)
        except EndpointDown:
            raise
        except LMError as e:
            failed += 1
            errors["steer"] = f"{failed} pair(s) got no answer; last: {e}"
        if len(kept) == cfg.top_k:
            break
    return kept


def evaluate_generated(generated: list[dict], target, reference, dual, cfg: MineConfig, errors: dict) -> None:
    """Adds encoder scores and transfer to each generated pair (in place)."""
    from retain.multimon.evaluate import ImageBank, encoder_scores, groundable, mllm_transfer, zero_shot_transfer

    pairs = [(g["a"], g["b"]) for g in generated]
    for g, s in zip(generated, encoder_scores(target, reference, pairs, cfg.threshold, cfg.gap)):
        g.update(s)
    grounded = groundable(pairs)
    bank = ImageBank(cfg.seed)
    for g, t in zip(generated, zero_shot_transfer(dual, pairs, grounded, bank, cfg.images_per_side)):
        g["zero_shot"] = t
    for dataset, why in bank.unavailable.items():
        errors[f"images:{dataset}"] = f"no transfer on its captions: {why}"
    if cfg.mllm and any(x is not None for x in grounded):
        from retain.models import default_device
        from retain.registry import load_mllm

        try:
            mllm = load_mllm(cfg.mllm, trust_remote_code=cfg.trust_remote_code)
            mllm.model.to(default_device())
        except RetainError as e:
            errors["mllm"] = str(e)
            return
        for g, t in zip(generated, mllm_transfer(mllm, pairs, grounded, bank, cfg.images_per_side)):
            g["mllm"] = t


def type_summary(ft, mined_rows: list[dict], generated: list[dict]) -> dict:
    from retain.multimon.evaluate import rate

    def fails(key):  # transfer: every pair of the type with images, either set
        return [g[key]["fails"] if g.get(key) else None for g in rows]

    rows, generated = generated, [g for g in generated if g.get("set", "generated") == "generated"]
    conflated = [g for g in generated if g.get("conflated")]
    return {"name": ft.name, "description": ft.description, "mined": len(ft.pairs),
            "examples": [[mined_rows[k]["a"], mined_rows[k]["b"]] for k in ft.pairs[:3]],
            "generated": len(generated), "success_rate": rate([g.get("conflated") for g in generated]),
            "erroneous_rate": rate([g.get("erroneous") for g in generated]),
            "transfer_set_success_rate": rate([g.get("conflated") for g in rows if g.get("set") == "transfer"]),
            "zero_shot_transfer": rate(fails("zero_shot")), "zero_shot_pairs": sum(v is not None for v in fails("zero_shot")),
            "mllm_transfer": rate(fails("mllm")), "mllm_pairs": sum(v is not None for v in fails("mllm")),
            "generated_examples": [[g["a"], g["b"]] for g in (conflated or generated)[:3]]}


TABLE_HEADER = ["failure type", "mined pairs", "generated", "success rate", "erroneous rate",
                "zero-shot transfer (pairs with images)", "MLLM transfer (pairs with images)", "example (mined)"]


def types_rows(results: dict) -> list[list]:
    def with_n(v, n):
        return "-" if v is None else f"{100 * v:.1f} ({n})"

    return [[t["name"], t["mined"], t["generated"], t["success_rate"], t["erroneous_rate"],
             with_n(t["zero_shot_transfer"], t["zero_shot_pairs"]), with_n(t["mllm_transfer"], t["mllm_pairs"]),
             " / ".join(t["examples"][0]) if t["examples"] else "-"] for t in results["failure_types"]]


def format_types_table(results: dict) -> str:
    from retain.report import format_table

    m = results["mining"]
    head = (f"MultiMon: {results['target']} against {results['reference']}, {results['corpus']['sentences']:,} sentences "
            f"({results['corpus']['note']}); {m['agreements']:,} erroneous agreements among {m['pairs_compared']:,} "
            f"pairs, {results['mined']} kept; backend {results['backend']}.\n\n")
    return head + format_table(TABLE_HEADER, types_rows(results))


def write_mine_report(out: Path) -> Path:
    from retain.io import read_json
    from retain.report import page as P

    results = read_json(out / "results.json")
    fig = _rates_figure(results)
    P.save_figures(out / "figures", {"failure_types": fig})
    body = f"<p>{P.esc(format_types_table(results).split(chr(10))[0])}</p>"
    body += P.table(TABLE_HEADER, types_rows(results))
    body += ("<p class='note'>success rate: fraction of a type's generated pairs the target encoder conflates (cosine "
             "above the threshold); erroneous rate: also separated by the reference; transfer: fraction of the pairs "
             "with images where a downstream system matched either side's images to the wrong caption (offline, each "
             "type also rewrites captions of single objects retain has images of, such as 'a red circle', for "
             "this).</p>")
    body += P.figures([("success rate and transfer per failure type", fig)])
    sections = [("failure-types", "Failure types", body)]
    pairs = ""
    for t in results["failure_types"]:
        ex = [["mined", a, b] for a, b in t["examples"]] + [["generated", a, b] for a, b in t["generated_examples"]]
        pairs += f"<h3>{P.esc(t['name'])}</h3><p>{P.esc(t['description'])}</p>"
        pairs += P.table(["", "sentence A", "sentence B"], ex)
    sections.append(("pairs", "Example pairs", pairs))
    if results["errors"]:
        sections.append(("errors", "Errors", P.table(["step", "error"], [[k, v] for k, v in results["errors"].items()])))
    sections.append(P.config_section(out))
    path = out / "report.html"
    write_text(path, P.page("retain: MultiMon", sections, f"{results['target']} against {results['reference']}"))
    return path


def _rates_figure(results: dict) -> bytes:
    import numpy as np

    from retain.report.page import plt, png

    types = results["failure_types"]
    bars = [("success rate", "success_rate"), ("zero-shot transfer", "zero_shot_transfer"),
            ("MLLM transfer", "mllm_transfer")]
    bars = [(label, key) for label, key in bars if any(t.get(key) is not None for t in types)]
    fig, ax = plt().subplots(figsize=(2 + 1.1 * max(1, len(types)), 3.6))
    x = np.arange(len(types))
    width = 0.8 / max(1, len(bars))
    for k, (label, key) in enumerate(bars):
        ax.bar(x + k * width, [100 * t[key] if t.get(key) is not None else np.nan for t in types], width, label=label)
    ax.set_xticks(x + width * (len(bars) - 1) / 2, [t["name"] for t in types], rotation=25, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    if bars:
        ax.legend(fontsize=8)
    return png(fig)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
