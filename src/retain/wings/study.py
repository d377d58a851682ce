"""WINGS's study: one start built the LLaVA way and the WINGS way, measured side by side.

For every model of the study (default: the zoo's `mini-llava` and `mini-llava-wings`, built
from the same mini-CLIP, SmolLM2, data and steps) and for the original LLM:

- multimodal: EMT accuracy on classification datasets and instruction tasks with their
  own scorers (e.g. `vqa-shapes`);
- text-only: accuracy on the offline multiple-choice set (and MMLU / ARC / HellaSwag when
  configured), by option log-likelihood; the original LLM gets the same prompts;
- drift: KL(original LLM || model) of next-token distributions over text-only chats;
- interleaved: accuracy in conversations from text-rich (no image turn) to image-rich;
- the attention shift: per layer, the attention mass of post-image text on the text before
  the image, beside the original LLM's profile on the same text without the image, and
  the correlation of the two profiles across layers;
- evidence: every score with its 95% interval (bootstrap over the test items,
  `retain.stats`), and every pair (each model against the original LLM, model against
  model) compared on the same text-only questions: the paired interval of the difference
  and McNemar's exact test on the questions exactly one of the two gets right.

Everything lands in `<output_dir>/<name>/`: study.json, table.md, records/<model>/*.jsonl,
report.html, config.yaml (with seed and versions). A model measured before under the same
settings is read back, not measured again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from retain.config import NON_NEGATIVE, POSITIVE
from retain.errors import RetainError
from retain.io import read_json, write_json, write_text
from retain import registry, stats
from retain.intervals import item_score
from retain.progress import say

ZOO_MLLMS = tuple(registry.list_models("mllm"))
REFERENCE = "original LLM"
MEASUREMENTS = 2  # what a stored measurement holds; 2: per-item scores (a stored 1 is measured again)


@dataclass
class WingsStudyConfig:
    study: str = "wings"
    """which study this file configures (`retain study` reads it)"""
    name: str = "wings-study"
    """the study's folder under output_dir"""
    models: list = field(default_factory=lambda: list(ZOO_MLLMS))
    """MLLMs to compare: zoo names, saved folders or hf:<id> (all built on one LLM)"""
    reference: str = ""
    """the original LLM as a causal LM (folder or hf:<id>); empty: SmolLM2 for the zoo's models"""
    emt_tasks: list = field(default_factory=lambda: ["easyvqa-shape", "easyvqa-color", "fashion-mnist"])
    """classification datasets posed as EMT questions (multimodal scores)"""
    emt_mode: Literal["likelihood", "rule"] = "likelihood"
    """EMT scoring: likelihood, rule (judge needs `retain eval`)"""
    instruction_tasks: list = field(default_factory=lambda: ["vqa-shapes"])
    """instruction tasks scored by their own scorer (multimodal scores)"""
    limit: Annotated[int, NON_NEGATIVE] = 100
    """test items per multimodal task (0: all)"""
    text_limit: Annotated[int, NON_NEGATIVE] = 0
    """offline text-only questions (0: all of them)"""
    text_benchmarks: list = field(default_factory=list)
    """MMLU/ARC/HellaSwag: mappings {kind, source, split, config, limit}"""
    kl_prompts: Annotated[int, NON_NEGATIVE] = 64
    """text-only chats for the next-token KL against the original LLM"""
    interleaved_per_mix: Annotated[int, NON_NEGATIVE] = 6
    """conversations per number of image turns"""
    interleaved_turns: Annotated[int, POSITIVE] = 4
    """turns per conversation (0 .. turns of them show an image)"""
    attention_items: Annotated[int, NON_NEGATIVE] = 16
    """(text, image, question) items for the attention shift"""
    seed: int = 0
    output_dir: str = "runs"
    trust_remote_code: bool = False


# ---- what is measured ---------------------------------------------------------------------
def model_label(name: str) -> str:
    return name if name in ZOO_MLLMS else Path(name[3:] if name.startswith("hf:") else name).name


def _identity(name: str) -> str:
    """What a cached measurement depends on besides the settings: the model's files."""
    if name in ZOO_MLLMS:
        return str(registry.zoo_folder(name, build=False))
    if name.startswith("hf:"):
        return name
    path = Path(name).resolve()
    stamps = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.glob("*.safetensors"))
    return json.dumps([str(path), stamps])


def settings_key(cfg: WingsStudyConfig, name: str, reference: str) -> str:
    from retain.eval.text_retention import text_qa_items

    settings = {k: v for k, v in asdict(cfg).items() if k not in ("name", "models", "output_dir")}
    offline = items_digest(text_qa_items(cfg.seed)[:cfg.text_limit or None])  # the question set, not only its size
    blob = json.dumps([_identity(name), reference, settings, offline, MEASUREMENTS], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def text_chats(tokenizer, n: int, seed: int) -> list[str]:
    """Text-only chats (question and right answer) in the model's chat template, for the KL."""
    from retain.eval.text_retention import text_qa_items

    items = text_qa_items(seed + 1)
    order = np.random.default_rng(seed).permutation(len(items))[:n]
    chats = []
    for k in order:
        it = items[int(k)]
        messages = [{"role": "user", "content": it.question}, {"role": "assistant", "content": it.options[it.answer]}]
        chats.append(tokenizer.apply_chat_template(messages, tokenize=False) if tokenizer.chat_template
                     else f"USER: {it.question}\nASSISTANT: {it.options[it.answer]}")
    return chats


def attention_items(n: int, seed: int) -> list[tuple[str, object, str]]:
    """(text before the image, image, question after it): a text exchange, then an easy-VQA image."""
    from retain.data import load_task
    from retain.eval.text_retention import text_qa_items

    texts = text_qa_items(seed + 2)
    split = load_task("easyvqa-color").split("test").subset(n)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(len(split)):
        t = texts[int(rng.integers(len(texts)))]
        before = f"First a question: {t.question} The answer is {t.options[t.answer]}. Now look at this picture."
        question = "What colour is the shape?" if i % 2 else "What shape is in the image?"
        items.append((before, split.images[i], question))
    return items


def items_digest(items: list) -> str:
    """What identifies a set of questions: their text, options and answers."""
    blob = json.dumps([[it.question, it.options, it.answer] for it in items])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _scores(records: list[dict]) -> list:
    """Per-item scores in item order, None for an unscored item (JSON has no NaN)."""
    return [None if v != v else v for v in map(item_score, records)]


def _records(out: Path, label: str, part: str, records: list[dict]) -> None:
    write_text(out / "records" / label / f"{part}.jsonl", "".join(json.dumps(r, sort_keys=True, default=str) + "\n"
                                                                  for r in records))


def _text_items(cfg: WingsStudyConfig) -> dict[str, list]:
    from retain.eval.text_retention import load_text_benchmark, text_qa_items

    sets = {"offline": text_qa_items(cfg.seed)[:cfg.text_limit or None]}
    for spec in cfg.text_benchmarks:
        if not isinstance(spec, dict) or not {"kind", "source"} <= set(spec):
            raise RetainError(f"text_benchmarks entry {spec!r} must be a mapping with kind and source "
                              "(and optionally split, config, limit).")
        unknown = set(spec) - {"kind", "source", "split", "config", "limit"}
        if unknown:
            raise RetainError(f"text_benchmarks entry {spec!r} has unknown keys {sorted(unknown)}.")
        sets[spec["kind"]] = load_text_benchmark(spec["kind"], spec["source"], spec.get("split", "test"),
                                                 spec.get("config"), spec.get("limit"))
    return sets


def measure_model(mllm, reference, cfg: WingsStudyConfig, label: str, out: Path) -> dict:
    """Every measurement of the study for one MLLM (`reference`: the original causal LM)."""
    from retain.data import load_task
    from retain.data.instruct import load_instruction_task
    from retain.eval.attention_shift import attention_shift
    from retain.eval.emt import evaluate_emt
    from retain.eval.instruct import evaluate_instruction
    from retain.eval.interleaved import build_conversations, evaluate_interleaved
    from retain.eval.text_retention import next_token_kl

    limit = cfg.limit or None
    multimodal, scores = {}, {"multimodal": {}, "text": {}}
    for t in cfg.emt_tasks:
        say(f"{label}: EMT ({cfg.emt_mode}) on {t}")
        r = evaluate_emt(mllm, load_task(t), cfg.emt_mode, limit=limit)
        multimodal[t], scores["multimodal"][t] = r.accuracy, _scores(r.records)
        _records(out, label, f"emt-{t}", r.records)
    for t in cfg.instruction_tasks:
        say(f"{label}: instruction task {t}")
        r = evaluate_instruction(mllm, load_instruction_task(t), limit=limit)
        multimodal[t], scores["multimodal"][t] = r.score, _scores(r.records)
        _records(out, label, f"instruction-{t}", r.records)
    text, by_kind, digests = _measure_text(mllm, cfg, label, out, scores)
    say(f"{label}: next-token KL against the original LLM ({cfg.kl_prompts} chats)")
    kl = next_token_kl(mllm.model, reference, mllm.tokenizer, text_chats(mllm.tokenizer, cfg.kl_prompts, cfg.seed))
    say(f"{label}: interleaved conversations")
    inter = evaluate_interleaved(mllm, build_conversations(cfg.interleaved_per_mix, cfg.interleaved_turns, cfg.seed))
    _records(out, label, "interleaved", inter.records)
    say(f"{label}: attention shift")
    shift = attention_shift(mllm, attention_items(cfg.attention_items, cfg.seed), reference=reference)
    return {"multimodal": multimodal, "text": text, "text_by_kind": by_kind, "kl": kl,
            "interleaved": {str(k): v for k, v in inter.by_mix.items()}, "attention": shift.summary(),
            "item_scores": scores, "text_items": digests}


def _measure_text(lm, cfg: WingsStudyConfig, label: str, out: Path, scores: dict) -> tuple[dict, dict, dict]:
    """Text-only accuracy on every set ({set: accuracy}, {set: by kind}, {set: items digest}),
    per-question right/wrong into `scores["text"]`."""
    from retain.eval.text_retention import text_accuracy
    from retain.models.mllm import NORMALISED

    text, by_kind, digests = {}, {}, {}
    for kind, items in _text_items(cfg).items():
        say(f"{label}: text-only {kind} ({len(items)} questions)")
        r = text_accuracy(lm, items)
        text[kind], by_kind[kind], digests[kind] = r.accuracy, r.by_kind, items_digest(items)
        # the length-normalised picks beside the summed one (the summed pick is what the tables pair)
        for how in NORMALISED:
            text[f"{kind} (per {'character' if how == 'char' else how})"] = getattr(r, f"accuracy_norm_{how}")
        scores["text"][kind] = [int(rec["correct"]) for rec in r.records]
        _records(out, "original-llm" if label == REFERENCE else label, f"text-{kind}", r.records)
    return text, by_kind, digests


def measure_reference(reference, processor, cfg: WingsStudyConfig, out: Path) -> dict:
    """The original LLM on the text-only measurements, with the MLLMs' prompts (no images)."""
    from retain.eval.interleaved import build_conversations, evaluate_interleaved
    from retain.models.mllm import MLLM

    lm = MLLM(reference, processor)
    scores = {"multimodal": {}, "text": {}}
    text, by_kind, digests = _measure_text(lm, cfg, REFERENCE, out, scores)
    text_only = [c for c in build_conversations(cfg.interleaved_per_mix, cfg.interleaved_turns, cfg.seed)
                 if c.image_turns == 0]
    inter = evaluate_interleaved(lm, text_only)
    _records(out, "original-llm", "interleaved", inter.records)
    return {"multimodal": {}, "text": text, "text_by_kind": by_kind, "kl": 0.0,
            "interleaved": {str(k): v for k, v in inter.by_mix.items()}, "attention": None,
            "item_scores": scores, "text_items": digests}


# ---- the run --------------------------------------------------------------------------------
def reference_name(cfg: WingsStudyConfig) -> str:
    """The original causal LM: `cfg.reference`, or SmolLM2 when every model is from the zoo."""
    ident = cfg.reference
    if not ident:
        if not all(m in ZOO_MLLMS for m in cfg.models):
            raise RetainError("Set `reference` to the LLM your MLLMs were built on (a folder or hf:<id>, e.g. "
                              "hf:lmsys/vicuna-7b-v1.5 for LLaVA-1.5): the text KL and the original-LLM row need it.")
        ident = registry.base_llm((cfg.models or ZOO_MLLMS)[0])  # the zoo's MLLMs share one LLM
    if not ident.startswith("hf:") and not Path(ident).is_dir():
        raise RetainError(f"The reference LLM {ident!r} is not a folder: give a saved causal LM folder or hf:<id>.")
    return ident


def load_reference(ident: str, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(ident[3:] if ident.startswith("hf:") else ident,
                                                     use_safetensors=True, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RetainError(f"Could not load the reference LLM {ident!r}: {e}") from e
    from retain.models import default_device

    return model.eval().to(default_device())


def run_wings_study(cfg: WingsStudyConfig) -> Path:
    """Measure every model of the study (reusing finished measurements); write the table and report."""
    import torch
    import yaml

    from retain.models import default_device
    from retain.rundir import versions

    if not cfg.models:
        raise RetainError("The study names no models: set `models` (e.g. [mini-llava, mini-llava-wings]).")
    if cfg.emt_mode not in ("likelihood", "rule"):  # a config built in code skips the reader's check
        raise RetainError(f"emt_mode must be likelihood or rule, got {cfg.emt_mode!r}.")
    labels = [model_label(m) for m in cfg.models]
    if len(set(labels)) != len(labels):
        raise RetainError(f"Two models of the study share a name ({labels}): give distinct folders.")
    out = Path(cfg.output_dir) / cfg.name
    write_text(out / "config.yaml", yaml.safe_dump({**asdict(cfg), "versions": versions()}, sort_keys=False))
    ref_name = reference_name(cfg)
    loaded = {}

    def reference():  # loaded once, and only when something is measured
        if "lm" not in loaded:
            loaded["lm"] = load_reference(ref_name, cfg.trust_remote_code)
        return loaded["lm"]

    results = {}
    processor = None
    for name, label in zip(cfg.models, labels):
        key = settings_key(cfg, name, ref_name)
        stored = out / "models" / f"{label}.json"
        prior = read_json(stored) if stored.exists() else {}
        if prior.get("key") == key:
            say(f"{label}: measured before under these settings, read back")
            results[label] = prior["result"]
            continue
        torch.manual_seed(cfg.seed)
        mllm = registry.load_mllm(name, trust_remote_code=cfg.trust_remote_code)
        mllm.model.to(default_device())
        if name == cfg.models[0]:
            processor = mllm.processor
        results[label] = measure_model(mllm, reference(), cfg, label, out)
        write_json(stored, {"key": key, "model": name, "result": results[label]})
        del mllm
    key = settings_key(cfg, cfg.models[0], ref_name)  # the LLM, prompted with the first model's template
    stored = out / "models" / "original-llm.json"
    prior = read_json(stored) if stored.exists() else {}
    if prior.get("key") == key:
        results[REFERENCE] = prior["result"]
    else:
        results[REFERENCE] = measure_reference(reference(), processor or _processor(cfg.models[0], cfg), cfg, out)
        write_json(stored, {"key": key, "model": ref_name, "result": results[REFERENCE]})
    study = {"study": "wings", "models": dict(zip(labels, cfg.models)), "reference": ref_name, "seed": cfg.seed,
             "order": [*labels, REFERENCE], "results": results}
    header, rows = study_table(study)
    study["table"] = {"header": header, "rows": rows}
    study["evidence"] = study_evidence(results, study["order"], cfg.seed)
    write_json(out / "study.json", study)
    from retain.report import format_table

    (ih, ir), (ph, pr) = evidence_tables(study["evidence"])
    write_text(out / "table.md", format_table(header, rows) + "\n\n" + TABLE_NOTE + "\n\n"
               + format_table(ih, ir) + "\n\n" + INTERVALS_NOTE + "\n\n" + format_table(ph, pr) + "\n\n"
               + PAIRED_NOTE + "\n")
    write_study_report(out)
    return out


def _processor(name: str, cfg: WingsStudyConfig):
    from transformers import AutoProcessor

    if name in ZOO_MLLMS:
        name = str(registry.zoo_folder(name))
    return AutoProcessor.from_pretrained(name[3:] if name.startswith("hf:") else name,
                                         trust_remote_code=cfg.trust_remote_code)


TABLE_NOTE = ("Scores in %. multimodal: EMT accuracy on classification datasets, the task's scorer on instruction "
              "tasks. text: option log-likelihood accuracy on text-only questions. KL: mean next-token "
              "KL(original LLM || model) over text-only chats (nats, 0 = unchanged). interleaved k/T: accuracy "
              "in conversations with k image turns out of T. attention corr: correlation across layers of the "
              "attention mass on pre-image text with the original LLM's profile on the same text.")


def _ordered(study: dict) -> list[tuple[str, dict]]:
    """(label, result) in the study's order: its models, then the original LLM (JSON sorts keys)."""
    return [(k, study["results"][k]) for k in study["order"]]


def study_table(study: dict) -> tuple[list[str], list[list]]:
    results = dict(_ordered(study))
    mm = list(dict.fromkeys(t for r in results.values() for t in r["multimodal"]))
    text = list(dict.fromkeys(t for r in results.values() for t in r["text"]))
    mixes = sorted({int(k) for r in results.values() for k in r["interleaved"]})
    turns = max(mixes) if mixes else 0
    header = ["model", *mm, "multimodal mean", *[f"text: {t}" for t in text], "KL (nats)",
              *[f"interleaved {k}/{turns}" for k in mixes], "attention corr"]
    rows = []
    for label, r in results.items():
        mean = float(np.mean([r["multimodal"][t] for t in mm if t in r["multimodal"]])) if r["multimodal"] else None
        kl = f"{r['kl']:.4f}" if r.get("kl") is not None else None
        corr = (r.get("attention") or {}).get("correlation")
        rows.append([label, *[r["multimodal"].get(t) for t in mm], mean, *[r["text"].get(t) for t in text], kl,
                     *[(r["interleaved"].get(str(k)) or {}).get("all") for k in mixes],
                     None if corr is None else f"{corr:.3f}"])
    return header, rows


# ---- evidence: intervals and paired tests --------------------------------------------------------
INTERVALS_NOTE = ("Scores in % with their 95% interval: the percentile bootstrap over the test items "
                  f"({stats.REPLICATES} draws; each task drawn on its own, the multimodal mean recomputed on every "
                  "draw).")
PAIRED_NOTE = ("Each pair answered the same n text-only questions. b: questions only the first gets right; c: only "
               "the second. p: McNemar's exact two-sided test of b against c (questions both get right or both get "
               "wrong say nothing about the difference). difference: first minus second in points, with its paired "
               "bootstrap interval over the questions (the exact test is the stricter of the two: near the edge it "
               "may keep \"no change\" where the interval just leaves out 0). needed gap: the smallest |b - c| that "
               "b + c discordant questions would need for p < 0.05 (- : none would).")


def _vector(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def comparison_pairs(order: list[str]) -> list[tuple[str, str]]:
    """Each model against the original LLM, then each pair of models in the study's order."""
    models = [m for m in order if m != REFERENCE]
    return [(m, REFERENCE) for m in models if REFERENCE in order] + \
        [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]


def study_evidence(results: dict, order: list[str], seed: int = 0, replicates: int = stats.REPLICATES) -> dict:
    """Intervals of every multimodal and text-only score, and the paired text-only comparisons."""
    ev = {"kind": stats.KIND_ITEMS, "level": stats.LEVEL, "replicates": replicates, "multimodal": {}, "text": {},
          "paired": []}
    for label in order:
        scores = results[label].get("item_scores") or {}
        for part in ("multimodal", "text"):
            vectors = {t: _vector(v) for t, v in scores.get(part, {}).items()}
            if not vectors:
                continue
            draws = stats.resample_means({t: v[None] for t, v in vectors.items()}, replicates, seed)
            with stats._quiet():
                ev[part][label] = {t: {"score": float(np.nanmean(v)), "n": int(np.isfinite(v).sum()),
                                       "interval": stats.percentile_interval(draws[t][:, 0])}
                                   for t, v in vectors.items()}
            if part == "multimodal":
                ev[part][label]["mean"] = {
                    "score": float(np.mean([d["score"] for d in ev[part][label].values()])),
                    "n": sum(d["n"] for d in ev[part][label].values()),
                    "interval": stats.percentile_interval(np.mean([draws[t][:, 0] for t in vectors], axis=0))}
    for a, b in comparison_pairs(order):
        ra, rb = results[a], results[b]
        for kind in ra.get("item_scores", {}).get("text", {}):
            if kind not in rb.get("item_scores", {}).get("text", {}):
                continue
            if ra["text_items"][kind] != rb["text_items"][kind]:
                raise RetainError(f"{a} and {b} answered different {kind} questions: a paired test needs the same "
                                  "items (measure both under the same settings).")
            va, vb = _vector(ra["item_scores"]["text"][kind]), _vector(rb["item_scores"]["text"][kind])
            draws = stats.resample_means({kind: np.stack([va, vb])}, replicates, seed)[kind]
            ev["paired"].append({"set": kind, "a": a, "b": b, "accuracy_a": float(va.mean()),
                                 "accuracy_b": float(vb.mean()), "difference": float(va.mean() - vb.mean()),
                                 "interval": stats.percentile_interval(draws[:, 0] - draws[:, 1]),
                                 **stats.mcnemar(va.astype(bool), vb.astype(bool))})
    return ev


def evidence_tables(ev: dict) -> tuple[tuple[list, list], tuple[list, list]]:
    """((header, rows) of the scores with intervals, (header, rows) of the paired comparisons), as text."""
    def pct(score, interval):
        return "-" if score is None else f"{100 * score:.1f}" + (
            f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")

    labels = list(dict.fromkeys([*ev["multimodal"], *ev["text"]]))
    mm = list(dict.fromkeys(t for d in ev["multimodal"].values() for t in d if t != "mean"))
    text = list(dict.fromkeys(t for d in ev["text"].values() for t in d))
    header = ["model", *mm, "multimodal mean" if mm else None, *[f"text: {t} (n)" for t in text]]
    header = [h for h in header if h]
    rows = []
    for label in labels:
        m, t = ev["multimodal"].get(label, {}), ev["text"].get(label, {})
        cells = [pct(m[k]["score"], m[k]["interval"]) if k in m else "-" for k in mm]
        cells += [pct(m["mean"]["score"], m["mean"]["interval"]) if "mean" in m else "-"] if mm else []
        cells += [f"{pct(t[k]['score'], t[k]['interval'])} ({t[k]['n']})" if k in t else "-" for k in text]
        rows.append([label, *cells])
    pheader = ["set", "model", "against", "n", "accuracy", "accuracy (against)", "difference (points)", "b", "c",
               "McNemar p", "needed gap"]
    prows = [[p["set"], p["a"], p["b"], p["n"], f"{100 * p['accuracy_a']:.1f}", f"{100 * p['accuracy_b']:.1f}",
              pct(p["difference"], p["interval"]), p["a_only"], p["b_only"], f"{p['p']:.3g}",
              "-" if p["significant_gap"] is None else p["significant_gap"]] for p in ev["paired"]]
    return (header, rows), (pheader, prows)


# ---- the report -------------------------------------------------------------------------------
def write_study_report(out: Path) -> Path:
    from retain.report import page as P

    study = read_json(out / "study.json")
    header, rows = study["table"]["header"], study["table"]["rows"]
    sections = [("metrics", "Text-only and multimodal scores", P.table(header, rows) + f"<p class='note'>{P.esc(TABLE_NOTE)}</p>")]
    if study.get("evidence"):
        (ih, ir), (ph, pr) = evidence_tables(study["evidence"])
        sections.append(("evidence", "Intervals and paired tests",
                         P.table(ih, ir) + f"<p class='note'>{P.esc(INTERVALS_NOTE)}</p>"
                         + "<h3>Text-only answers, pair by pair, on the same questions</h3>" + P.table(ph, pr)
                         + f"<p class='note'>{P.esc(PAIRED_NOTE)}</p>"))
    kinds = [(label, r["text_by_kind"].get("offline", {})) for label, r in _ordered(study)]
    names = sorted({k for _, d in kinds for k in d})
    figs = {"attention_shift": _attention_figure(study), "scores": _scores_figure(study),
            "interleaved": _interleaved_figure(study)}
    P.save_figures(out / "figures", figs)
    body = "<h3>Text-only accuracy by question kind (offline set)</h3>"
    body += P.table(["model", *names], [[label, *[d.get(k) for k in names]] for label, d in kinds])
    body += P.figures([("text-only and multimodal scores", figs["scores"]),
                       ("attention of post-image text on pre-image text, per layer", figs["attention_shift"]),
                       ("interleaved conversations: accuracy from text-rich to image-rich", figs["interleaved"])])
    sections += [("text-retention", "Text retention", body), P.config_section(out)]
    path = out / "report.html"
    write_text(path, P.page("retain: WINGS study", sections,
                            f"{', '.join(study['models'])} against {study['reference']}"))
    return path


def _attention_figure(study: dict) -> bytes:
    from retain.report.page import plt as pyplot, png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    ref = None
    for label, r in _ordered(study):
        a = r.get("attention")
        if not a:
            continue
        ax.plot(range(len(a["before_text"])), a["before_text"], marker="o", label=label)
        ref = a.get("reference_before_text") or ref
    if ref:
        ax.plot(range(len(ref)), ref, "k--", label=f"{REFERENCE} (no image)")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("attention mass on pre-image text")
    ax.legend(fontsize=8)
    return png(fig)


def _scores_figure(study: dict) -> bytes:
    from retain.report.page import plt as pyplot, png

    plt = pyplot()
    labels = study["order"]
    text = [study["results"][k]["text"].get("offline") for k in labels]
    mm = [np.mean(list(study["results"][k]["multimodal"].values())) if study["results"][k]["multimodal"] else np.nan
          for k in labels]
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(labels), 3.4))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [100 * (v if v is not None else np.nan) for v in text], 0.4, label="text-only accuracy")
    ax.bar(x + 0.2, [100 * v for v in mm], 0.4, label="multimodal mean")
    ax.set_xticks(x, labels, rotation=15)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return png(fig)


def _interleaved_figure(study: dict) -> bytes:
    from retain.report.page import plt as pyplot, png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, r in _ordered(study):
        ks = sorted(int(k) for k in r["interleaved"])
        ax.plot(ks, [r["interleaved"][str(k)]["all"] for k in ks], marker="o", ls="" if len(ks) == 1 else "-",
                label=label)
    ax.set_xlabel("image turns in the conversation")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return png(fig)
