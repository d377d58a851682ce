"""Run every benchmark, then write docs/benchmarks.md from bench/results/*.json.

    .venv/bin/python bench/run_all.py            # all (the quickstart one takes ~10 minutes)
    .venv/bin/python bench/run_all.py --summary  # only rewrite docs/benchmarks.md
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def summary() -> str:
    lines = ["# Benchmarks", "", "Written by `bench/run_all.py` from `bench/results/*.json` (2 CPU cores, no GPU).", ""]
    step = RESULTS / "ldifs_step.json"
    if step.exists():
        r = json.loads(step.read_text())
        lines += [
            "## LDIFS step time over plain fine-tuning (`bench/ldifs_step.py`)", "",
            f"mini-CLIP architecture, batch {r['batch']} of Animal-MNIST, median of {r['repeats']} interleaved steps "
            f"(forward, loss, backward, AdamW), torch {r['torch']}, {r['threads']} threads.", "",
            "| variant | median step (s) | ratio to fine-tuning |", "|---|---|---|",
            f"| fine-tuning | {r['finetune']['median_step_s']:.3f} | 1.00 |",
            f"| LDIFS, anchor features read from the cache (every epoch after the first) | {r['ldifs']['median_step_s']:.3f} | {r['ratio_ldifs_later_epochs']:.2f} |",
            f"| LDIFS, frozen tower run on the batch (first epoch; the reference code's every step) | {r['ldifs_nocache']['median_step_s']:.3f} | {r['ratio_ldifs_first_epoch']:.2f} |",
            "",
            "Whole-task ratio by epochs: " + ", ".join(
                f"{e} epoch{'s' if e > 1 else ''} {r[f'ratio_ldifs_over_finetune_{e}_epochs']:.2f}x" for e in (1, 3, 10)) + ".",
            "",
            f"Zero-shot evaluation throughput (image features, mini-CLIP, batch 256): {r['zero_shot_images_per_s']:.0f} images/s.",
            "",
        ]
    qs = RESULTS / "quickstart.json"
    if qs.exists():
        r = json.loads(qs.read_text())
        lines += ["## Quickstart (`bench/quickstart.py`)", ""]
        for k, label in (("fresh", "fresh cache (dataset conversion + mini-CLIP build + run)"), ("warm", "warm cache")):
            if k in r:
                lines.append(f"- {label}: {r[k]['wall_s']:.0f} s wall, peak memory {r[k]['peak_rss_mb']:.0f} MB")
        if "warm" in r:
            lines += ["", "Its table:", "", r["warm"]["table"].split("\n\nreports:")[0], ""]
    ml = RESULTS / "mini_llava.json"
    if ml.exists():
        r = json.loads(ml.read_text())
        emt = r["emt_fashion_rule"]
        lines += ["## mini-LLaVA (`bench/mini_llava.py`)", "",
                  *([] if "fresh_build" in r else [f"- build: {r['build']} (mini-CLIP and SmolLM2 already cached)"]),
                  *([f"- fresh build (`{r['fresh_build']['command']}`, {r['fresh_build']['cached_parts']} cached): "
                     f"{r['fresh_build']['wall_s']:.0f} s, peak memory {r['fresh_build']['peak_rss_mb']:.0f} MB"]
                    if "fresh_build" in r else []),
                  f"- easy-VQA test, likelihood ranking over {r['items']} images: shape {100 * r['easyvqa_shape_accuracy']:.1f}% "
                  f"(chance {100 * r['easyvqa_shape_chance']:.1f}%), colour {100 * r['easyvqa_color_accuracy']:.1f}% "
                  f"(chance {100 * r['easyvqa_color_chance']:.1f}%); {r['likelihood_images_per_s']:.1f} images/s",
                  f"- EMT on Fashion-MNIST (rule matcher): {100 * emt['mllm_accuracy']:.1f}%, counts {emt['counts']}",
                  f"- text-only questions answered right: {r['text_only_hits']} of {len(r['text_only'])}", ""]
    em = RESULTS / "emt_modes.json"
    if em.exists():
        r = json.loads(em.read_text())
        lines += ["## EMT scoring modes on mini-LLaVA (`bench/emt_modes.py`)", "",
                  f"{r['items_per_task']} test images each of {', '.join(r['tasks'])}; torch {r['torch']}, {r['threads']} threads. "
                  "The judge is a loopback server that answers at once: its row is retain's own cost of judging.", "",
                  "| mode | images/s | " + " | ".join(f"{t} accuracy" for t in r["tasks"]) + " |",
                  "|---|---|" + "---|" * len(r["tasks"])]
        for mode, m in r["modes"].items():
            acc = ["n/a (the loopback judge says yes)" if mode == "judge" else f"{100 * m['per_task'][t]['accuracy']:.1f}"
                   for t in r["tasks"]]
            lines.append(f"| {mode} | {m['images_per_s']:.2f} | " + " | ".join(acc) + " |")
        lines += ["", f"Likelihood ranking runs at {r['likelihood_over_generation_speed']:.2f}x the speed of generation "
                  "(both take 8 images per forward; likelihood runs the prompt once per image and every class name "
                  "on the shared cache, generation stops after a few tokens).", ""]
    tp = RESULTS / "mcit_throughput.json"
    if tp.exists():
        r = json.loads(tp.read_text())
        lines += ["## LoRA-FT training throughput (`bench/mcit_throughput.py`)", "",
                  f"mini-LLaVA, LoRA r 16 + projector, batch {r['batch']} of vqa-shapes, {r['steps']} timed steps after "
                  f"{r['warmup_steps']}, best of {r['repeats']} alternating runs per arm, each in its own process.", "",
                  "| arm | tokens/s | peak memory (MB) |", "|---|---|---|",
                  f"| plain transformers + PEFT loop | {r['best_tokens_per_s']['plain']:.0f} | {r['peak_rss_mb']['plain']:.0f} |",
                  f"| retain's trainer (`lora_ft`) | {r['best_tokens_per_s']['retain']:.0f} | {r['peak_rss_mb']['retain']:.0f} |",
                  "", f"retain / plain: {r['retain_over_plain']:.3f} on the best runs, "
                  f"{_mean_tps(r, 'retain') / _mean_tps(r, 'plain'):.3f} on the means; each arm's runs span "
                  + ", ".join(f"{a} {min(x['tokens_per_s'] for x in r['runs'][a]):.1f}-"
                              f"{max(x['tokens_per_s'] for x in r['runs'][a]):.1f}" for a in ("plain", "retain"))
                  + " tokens/s.", ""]
    mo = RESULTS / "mcit_offline.json"
    if mo.exists():
        r = json.loads(mo.read_text())
        lines += ["## Continual instruction tuning, offline benchmark (`bench/mcit_offline.py`)", "",
                  "Table and matrices in `docs/mcit.md`. Wall time and peak memory per method (budget 15 minutes):", "",
                  "| method | wall (s) | peak memory (MB) |", "|---|---|---|"]
        lines += [f"| {m} | {v['wall_s']:.0f} | {v['peak_rss_mb']:.0f} |" for m, v in r["runs"].items()]
        lines.append("")
    ws = RESULTS / "wings_step.json"
    if ws.exists():
        r = json.loads(ws.read_text())
        lines += ["## WINGS stage-2 step against a LoRA step (`bench/wings_step.py`)", "",
                  f"mini-LLaVA, the same batch of {r['batch']} vqa-shapes items ({r['tokens_per_batch']} tokens) every "
                  f"step; forward, loss, backward, clipping, AdamW; median of {r['steps']} steps after "
                  f"{r['warmup_steps']}, best of {r['repeats']} alternating runs per arm, each in its own process; "
                  f"torch {r['torch']}, {r['threads']} threads.", "",
                  "| arm | trains | step (s) | ratio to LoRA | peak memory (MB) |", "|---|---|---|---|---|"]
        trains = {"lora": "LoRA r 16 on the LLM + projector", "wings-r16": "learners (rank 16), routers, projector, LLM",
                  "wings-r64": "learners (rank 64), routers, projector, LLM"}
        for arm, step in r["step_s"].items():
            lines.append(f"| {arm} | {trains.get(arm, arm)} ({r['trainable_params'][arm] / 1e6:.1f} M parameters) | "
                         f"{step:.3f} | {r['ratio_to_lora'][arm]:.2f} | {r['peak_rss_mb'][arm]:.0f} |")
        lines.append("")
    wst = RESULTS / "wings_study.json"
    if wst.exists():
        r = json.loads(wst.read_text())
        lines += ["## WINGS study (`bench/wings_study.py`)", ""]
        if "build" in r:
            lines.append(f"- `{r['build']['command']}`: {r['build']['wall_s']:.0f} s, peak memory "
                         f"{r['build']['peak_rss_mb']:.0f} MB")
        lines += [f"- `{r['study_run']['command']}`: {r['study_run']['wall_s']:.0f} s, peak memory "
                  f"{r['study_run']['peak_rss_mb']:.0f} MB", "", "Its table is in `docs/wings.md`.", ""]
    mm = RESULTS / "multimon_mine.json"
    if mm.exists():
        r = json.loads(mm.read_text())
        lines += ["## MultiMon mining (`bench/multimon_mine.py`)", ""]
        if "full" in r:
            f = r["full"]
            lines += [f"- `{f['command']}` ({f['sentences']:,} sentences, embeddings not cached): {f['wall_s']:.0f} s "
                      f"wall, peak memory {f['peak_rss_mb']:.0f} MB; corpus and models {f['load_s']:.0f} s, embedding {f['embedding_s']:.0f} s (bottom "
                      f"{f['shared_layers']} layers shared by the two towers), search {f['search_s']:.0f} s over "
                      f"{f['pairs_compared']:,} pairs ({f['pairs_per_second']:,.0f} pairs/s), {f['agreements']:,} "
                      "erroneous agreements"]
        if "recall" in r:
            c = r["recall"]
            lines += [f"- recall against brute force (float64, full matrices) on {c['sentences']:,} sentences: " + "; ".join(
                f"threshold/gap {k}: {v['recall']:.3f} of {v['brute_force_pairs']:,} pairs (precision {v['precision']:.3f})"
                for k, v in c.items() if k != "sentences")]
        if "preset" in r:
            lines += [f"- `{r['preset']['command']}`: {r['preset']['wall_s']:.0f} s, peak memory "
                      f"{r['preset']['peak_rss_mb']:.0f} MB; its table is in `docs/multimon.md`"]
        lines.append("")
    return "\n".join(lines) + "\n"


def multimon_page() -> str | None:
    mm = RESULTS / "multimon_mine.json"
    r = json.loads(mm.read_text()) if mm.exists() else {}
    if "preset" not in r:
        return None
    from retain.multimon.pipeline import format_types_table

    res = r["preset"]["results"]
    lines = ["# MultiMon on mini-CLIP", "",
             "Written by `bench/run_all.py --summary` from `bench/results/multimon_mine.json` (made by "
             f"`bench/multimon_mine.py`, which runs `{r['preset']['command']}` on 2 CPU cores: "
             f"{r['preset']['wall_s']:.0f} s).", "", format_types_table(res), "",
             "Success rate: the fraction of a type's generated pairs (41 per type, rewrites of corpus sentences) "
             "that mini-CLIP's text tower conflates (cosine > 0.9); erroneous rate: also more than 0.2 apart "
             "for MiniLM. Transfer: of the pairs whose two captions each show one object retain has images of "
             "(extra rewrites of captions like 'a photo of a red circle'), the fraction where the zero-shot "
             "classifier (or mini-LLaVA, by per-token caption likelihood) matched the images of either caption "
             "to the other caption.", "", "## Failure types", ""]
    for t in res["failure_types"]:
        lines += [f"### {t['name']}", "", t["description"], ""]
        lines += [f"- mined: \"{a}\" / \"{b}\"" for a, b in t["examples"]]
        lines += [f"- generated: \"{a}\" / \"{b}\"" for a, b in t["generated_examples"]]
        lines.append("")
    if r["preset"].get("transfer_examples"):
        lines += ["## Transfer examples", "", "| type | caption A | caption B | target cosine | zero-shot (acc A / B) "
                  "| mini-LLaVA (acc A / B) |", "|---|---|---|---|---|---|"]
        for g in r["preset"]["transfer_examples"]:
            def acc(x):
                return "-" if not x else f"{x['accuracy_a']:.2f} / {x['accuracy_b']:.2f}{' (fails)' if x['fails'] else ''}"
            lines.append(f"| {g['type']} | {g['a']} | {g['b']} | {g['cos_target']:.3f} | {acc(g['zero_shot'])} | "
                         f"{acc(g['mllm'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _mean_tps(r: dict, arm: str) -> float:
    return sum(x["tokens_per_s"] for x in r["runs"][arm]) / len(r["runs"][arm])


def wings_page() -> str | None:
    st = RESULTS / "wings_study.json"
    if not st.exists():
        return None
    r = json.loads(st.read_text())
    header, rows = r["table"]["header"], r["table"]["rows"]

    def cell(v):
        return "-" if v is None else f"{100 * v:.1f}" if isinstance(v, float) else str(v)

    lines = ["# WINGS study: mini-LLaVA built the LLaVA way and the WINGS way", "",
             "Written by `bench/run_all.py --summary` from `bench/results/wings_study.json` (made by "
             f"`bench/wings_study.py`, which runs `{r['study_run']['command']}` on 2 CPU cores).", "",
             "Models: " + ", ".join(f"{k} (`{v}`)" for k, v in r["models"].items())
             + f"; the original LLM: `{Path(r['reference']).name}`"
             + (" (retain's SmolLM2-135M-Instruct cache)" if "smollm2" in r["reference"] else "") + ".", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    from retain.wings.study import TABLE_NOTE

    lines += ["", TABLE_NOTE, "", "## Text-only accuracy by question kind (offline set, %)", ""]
    kinds = sorted({k for d in r["text_by_kind"].values() for k in d.get("offline", {})})
    lines += ["| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for m in r["order"]:
        d = r["text_by_kind"][m]
        lines.append(f"| {m} | " + " | ".join(cell(d.get("offline", {}).get(k)) for k in kinds) + " |")
    lines += ["", "## Attention of post-image text on pre-image text, per layer (%)", ""]
    any_att = next(iter(r["attention"].values()))
    n = len(any_att["before_text"])
    lines += ["| model | " + " | ".join(f"L{i}" for i in range(n)) + " |", "|---|" + "---|" * n]
    for m in (m for m in r["order"] if m in r["attention"]):
        a = r["attention"][m]
        lines.append(f"| {m} | " + " | ".join(f"{100 * v:.1f}" for v in a["before_text"]) + " |")
    lines.append("| original LLM, no image | " + " | ".join(f"{100 * v:.1f}" for v in any_att["reference_before_text"])
                 + " |")
    notes = ROOT / "docs" / "wings_findings.md"
    if notes.exists():
        lines += ["", notes.read_text()]
    return "\n".join(lines) + "\n"


def emt_page() -> str | None:
    st = RESULTS / "emt_study.json"
    if not st.exists():
        return None
    r = json.loads(st.read_text())
    datasets = list(r["encoder_zero_shot"])
    lines = ["# EMT's fine-tuning study on mini-LLaVA", "",
             "Written by `bench/run_all.py --summary` from `bench/results/emt_study.json` (made by "
             f"`bench/emt_study.py`, which runs `{r['command']}` on 2 CPU cores).", "",
             f"Fine-tuned on {', '.join(r['sequence'])} posed as EMT questions; train: {r['train']}. "
             f"EMT ({r['emt_mode']} scoring) on {r['eval_limit']} test images of every dataset after every epoch. "
             "Scores in %; the first row is the vision encoder's own zero-shot accuracy.", "",
             "| method | evaluated | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets),
             f"| vision encoder ({r['encoder']}) | zero-shot | "
             + " | ".join(f"{100 * r['encoder_zero_shot'][d]:.1f}" for d in datasets) + " |"]
    for m, v in r["methods"].items():
        for p in v["curve"]:
            lines.append(f"| {m} | {p['label']} | " + " | ".join(f"{100 * p['accuracy'][d]:.1f}" for d in datasets) + " |")
    lines += ["", "Answers outside the label set (hallucinated classes), of the test images per dataset:", "",
              "| method | evaluated | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for m, v in r["methods"].items():
        for p in v["curve"]:
            lines.append(f"| {m} | {p['label']} | "
                         + " | ".join(str(p["counts"][d]["outside_label_set"]) for d in datasets) + " |")
    lines += ["", "Seconds per method (training and every evaluation): "
              + ", ".join(f"{m} {sum(v['task_seconds']):.0f}" for m, v in r["methods"].items()) + ".", ""]
    notes = ROOT / "docs" / "emt_findings.md"
    if notes.exists():
        lines += [notes.read_text()]
    return "\n".join(lines) + "\n"


def mcit_page() -> str | None:
    mo = RESULTS / "mcit_offline.json"
    if not mo.exists():
        return None
    r = json.loads(mo.read_text())
    lines = ["# Continual instruction tuning on the offline benchmark", "",
             "Written by `bench/run_all.py --summary` from `bench/results/mcit_offline.json` "
             f"(made by `bench/mcit_offline.py`, which runs `{r['command']}` for each method on 2 CPU cores).", "",
             f"Sequence: {' -> '.join(r['sequence'])}; mini-LLaVA; train: {r['train']}; "
             f"{r['eval_limit']} test items per task at every evaluation point. Scores in %.", "",
             r["table"], "", "## Accuracy matrices (row 0: before training; row t: after task t)", ""]
    for m, A in r["matrices"].items():
        lines += [f"### {m}", "", "| after | " + " | ".join(r["sequence"]) + " |", "|---|" + "---|" * len(r["sequence"])]
        for t, row in enumerate(A):
            label = "zero-shot" if t == 0 else r["sequence"][t - 1]
            lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
        lines.append("")
    notes = ROOT / "docs" / "mcit_findings.md"
    if notes.exists():
        lines += [notes.read_text()]
    return "\n".join(lines) + "\n"


def readme_table() -> None:
    """Put the quickstart's measured table into README.md, between its two markers."""
    qs = RESULTS / "quickstart.json"
    readme = ROOT / "README.md"
    start, end = "<!-- quickstart-table: written by bench/run_all.py --summary -->", "<!-- /quickstart-table -->"
    text = readme.read_text()
    if not qs.exists() or start not in text:
        return
    r = json.loads(qs.read_text())
    run = r.get("warm") or r["fresh"]
    table = f"{run['table']}\n\n(`bench/quickstart.py`, {r['date']}, {r['cores']} CPU cores; also in docs/benchmarks.md)"
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")


def main() -> None:
    if "--summary" not in sys.argv:
        for script in ("ldifs_step.py", "quickstart.py", "mini_llava.py", "emt_modes.py", "emt_study.py",
                       "mcit_throughput.py", "mcit_offline.py", "wings_step.py", "wings_study.py",
                       "multimon_mine.py"):
            subprocess.run([sys.executable, str(ROOT / "bench" / script)], check=True, cwd=ROOT)
    (ROOT / "docs" / "benchmarks.md").write_text(summary())
    readme_table()
    for name, page in (("mcit.md", mcit_page()), ("emt.md", emt_page()), ("wings.md", wings_page()),
                         ("multimon.md", multimon_page())):
        if page:
            (ROOT / "docs" / name).write_text(page)
    print(summary())


if __name__ == "__main__":
    main()
