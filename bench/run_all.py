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
            "| variant | median step (s) | ratio to fine-tuning | share of peak |", "|---|---|---|---|",
            f"| fine-tuning | {r['finetune']['median_step_s']:.3f} | 1.00 | {_share(r['finetune'].get('share_of_peak'))} |",
            f"| LDIFS, anchor features read from the cache (every epoch after the first) | {r['ldifs']['median_step_s']:.3f} | {r['ratio_ldifs_later_epochs']:.2f} | {_share(r['ldifs'].get('share_of_peak'))} |",
            f"| LDIFS, frozen tower run on the batch (first epoch; the reference code's every step) | {r['ldifs_nocache']['median_step_s']:.3f} | {r['ratio_ldifs_first_epoch']:.2f} | {_share(r['ldifs_nocache'].get('share_of_peak'))} |",
            "",
            *([f"Share of peak: FLOPs of one step (torch's counter) over the median step time, over the float32 "
               f"matmul peak measured in the same process: {r['peak']['float32'] / 1e9:.0f} GFLOP/s on "
               f"{r['peak']['threads']} threads (bench/peak.py).", ""] if "peak" in r else []),
            "Whole-task ratio by epochs: " + ", ".join(
                f"{e} epoch{'s' if e > 1 else ''} {r[f'ratio_ldifs_over_finetune_{e}_epochs']:.2f}x" for e in (1, 3, 10)) + ".",
            "",
            f"Zero-shot evaluation throughput (image features, mini-CLIP, batch 256): {r['zero_shot_images_per_s']:.0f} images/s.",
            "",
        ]
    mem = RESULTS / "engine_memory.json"
    if mem.exists():
        r = json.loads(mem.read_text())
        before = next((k for k in r if k.startswith("four_tasks_before_")), None)
        lines += ["## Memory across tasks (`bench/engine_memory.py`)", "",
                  f"Peak resident memory of one `retain run` of fine-tuning on mini-CLIP ({', '.join(r['settings'][5:])}), "
                  "one process per arm, measured side by side in one invocation, one measurement each.", "",
                  "| arm | tasks | peak RSS (MB) | wall (s) |", "|---|---|---|---|",
                  *[f"| {k.replace('_', ' ')} | {r[k]['tasks']} | {r[k]['peak_rss_mb']:.0f} | {r[k]['wall_s']:.0f} |"
                    for k in ("one_task", "four_tasks", *([before] if before else []))],
                  "", f"Four tasks over one: x{r['ratio_four_over_one']:.3f} (the engine releases each task's optimizer "
                  "and loader; the `before` arm is the loop that kept them).", ""]
    qs = RESULTS / "quickstart.json"
    if qs.exists():
        lines += quickstart_section(json.loads(qs.read_text()))
    sw = RESULTS / "ldifs_sweep.json"
    if sw.exists():
        lines += ["## LDIFS and the quickstart's budget, calibrated (`bench/ldifs_sweep.py`)", "",
                  sweep_tables(json.loads(sw.read_text())), ""]
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
        lines += emt_modes_lines(json.loads(em.read_text()))
    tp = RESULTS / "mcit_throughput.json"
    if tp.exists():
        r = json.loads(tp.read_text())
        lines += ["## LoRA-FT training throughput (`bench/mcit_throughput.py`)", "",
                  f"mini-LLaVA, LoRA r 16 + projector, batch {r['batch']} of vqa-shapes, {r['steps']} timed steps after "
                  f"{r['warmup_steps']}, best of {r['repeats']} alternating runs per arm, each in its own process.", "",
                  "| arm | tokens/s | peak memory (MB) | share of peak |", "|---|---|---|---|",
                  *[f"| {label} | {r['best_tokens_per_s'][a]:.0f} | {r['peak_rss_mb'][a]:.0f} | "
                    f"{_share(r.get('share_of_peak', {}).get(a))} |"
                    for a, label in (("plain", "plain transformers + PEFT loop"),
                                     ("retain", "retain's trainer (`lora_ft`)"))],
                  "", f"retain / plain: {r['retain_over_plain']:.3f} on the best runs, "
                  f"{_mean_tps(r, 'retain') / _mean_tps(r, 'plain'):.3f} on the means; each arm's runs span "
                  + ", ".join(f"{a} {min(x['tokens_per_s'] for x in r['runs'][a]):.1f}-"
                              f"{max(x['tokens_per_s'] for x in r['runs'][a]):.1f}" for a in ("plain", "retain"))
                  + " tokens/s."
                  + (f" Share of peak: counted FLOPs (torch's counter, one step) per second over the float32 matmul "
                     f"peak measured in the same process ({r['peak_gflops']:.0f} GFLOP/s, bench/peak.py)."
                     if "peak_gflops" in r else ""), ""]
    mo = RESULTS / "mcit_offline.json"
    if mo.exists():
        r = json.loads(mo.read_text())
        lines += ["## Continual instruction tuning, offline benchmark (`bench/mcit_offline.py`)", "",
                  "Table and matrices in `docs/mcit.md`. Wall time and peak memory per run (a resumed run: the part "
                  "run in its last call):", "", "| run | wall (s) | peak memory (MB) |", "|---|---|---|"]
        lines += [f"| {m}{' (resumed)' if v.get('resumed') else ''} | {v['wall_s']:.0f} | {v['peak_rss_mb']:.0f} |"
                  for m, v in r["runs"].items()]
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
            lines += multimon_full_lines(r["full"], r.get("floor"))
        if "recall" in r:
            c = r["recall"]
            lines += [f"- recall against brute force (float64, full matrices) on {c['sentences']:,} sentences: " + "; ".join(
                f"threshold/gap {k}: {v['recall']:.3f} of {v['brute_force_pairs']:,} pairs (precision {v['precision']:.3f})"
                for k, v in c.items() if k != "sentences")]
        if "preset" in r:
            lines += [f"- `{r['preset']['command']}`: {r['preset']['wall_s']:.0f} s, peak memory "
                      f"{r['preset']['peak_rss_mb']:.0f} MB; its table is in `docs/multimon.md`"]
        lines.append("")
    lines += gpu_check_lines()
    return "\n".join(lines) + "\n"


def emt_modes_lines(r: dict) -> list[str]:
    """The EMT scoring-mode table: speed, share of peak, accuracy with its interval per dataset."""
    tasks = r["tasks"]
    lines = ["## EMT scoring modes on mini-LLaVA (`bench/emt_modes.py`)", "",
             f"{r['items_per_task']} test images each of {', '.join(tasks)}, {r.get('batch_size', 8)} images per "
             f"forward; torch {r['torch']}, {r['threads']} threads. Accuracy in %, 95% interval by bootstrap over the "
             "images. The judge is a loopback server that answers at once: its row is retain's own cost of judging.",
             "", "| mode | images/s | share of peak | " + " | ".join(f"{t} accuracy" for t in tasks) + " |",
             "|---|---|---|" + "---|" * len(tasks)]
    for mode, m in r["modes"].items():
        cells = []
        for t in tasks:
            v = m["per_task"][t]
            cells.append("n/a (the loopback judge says yes)" if mode == "judge" else
                         interval(v["accuracy"], *v["accuracy_interval"])
                         if v.get("accuracy_interval") else f"{100 * v['accuracy']:.1f}")
        lines.append(f"| {mode} | {m['images_per_s']:.2f} | {_share(m.get('share_of_peak'))} | " + " | ".join(cells) + " |")
    lines += ["", f"Likelihood ranking runs at {r['likelihood_over_generation_speed']:.2f}x the speed of generation "
              "(same process, task by task side by side): the prompt runs once per image with the LM head on its last "
              "position only (its system turn, the same for every image, once per call), then every class name in one "
              "forward over the prompt's cache as a prefix tree."]
    if "tree_vs_cache_per_option" in r:
        tv = r["tree_vs_cache_per_option"]
        lines += [f"Against the earlier computation (the whole prompt per batch, the cache repeated per class name, "
                  f"{r['likelihood_over_cache_per_option_speed']:.2f}x slower): "
                  + "; ".join(f"{t}: the same prediction on {v['same_prediction']} of {r['items_per_task']} images, "
                              f"accuracy difference {100 * v['accuracy_difference']:+.1f} points "
                              f"[{100 * v['difference_interval'][0]:+.1f}, {100 * v['difference_interval'][1]:+.1f}]"
                              for t, v in tv.items()) + "."]
    if "peak" in r:
        lines.append(f"Share of peak: counted FLOPs per image (torch's counter over one batch) times images/s, over "
                     f"the float32 matmul peak measured in the same process "
                     f"({max(r['peak']['float32_before'], r['peak']['float32_after']) / 1e9:.0f} GFLOP/s, bench/peak.py).")
    return lines + [""]


def multimon_full_lines(f: dict, floor: dict | None) -> list[str]:
    """The 200,000-sentence run, with each phase's share of peak and the floor its FLOPs set."""
    lines = [f"- `{f['command']}` ({f['sentences']:,} sentences, embeddings not cached): {f['wall_s']:.0f} s "
             f"wall, peak memory {f['peak_rss_mb']:.0f} MB; corpus and models {f['load_s']:.0f} s, embedding "
             f"{f['embedding_s']:.0f} s (bottom {f['shared_layers']} layers shared by the two towers), search "
             f"{f['search_s']:.0f} s over {f['pairs_compared']:,} pairs ({f['pairs_per_second']:,.0f} pairs/s), "
             f"{f['agreements']:,} erroneous agreements"]
    if floor and f.get("peak_float32"):
        peak = max(f["peak_float32"])
        lines += [f"- share of peak in that run (float32 matmul peak {peak / 1e9:.0f} GFLOP/s, measured just before "
                  f"and after it: {', '.join(f'{p / 1e9:.0f}' for p in f['peak_float32'])}): embedding "
                  f"{_share(floor['embedding_flops'] / f['embedding_s'] / peak)} "
                  f"({floor['embedding_flops'] / 1e12:.1f} TFLOP over {floor['tokens']:,} tokens), search "
                  f"{_share(floor['search_flops'] / f['search_s'] / peak)} ({floor['search_flops'] / 1e12:.1f} TFLOP: "
                  f"2 x {floor['target_dim']} per pair)"]
    if floor:
        q = floor["int8"]
        lines += [f"- the floor on this machine: at its float32 peak ({floor['peak_float32'] / 1e9:.0f} GFLOP/s, "
                  f"{floor['threads']} threads; bfloat16 "
                  f"{floor['peak_bfloat16'] / 1e9:.1f} GFLOP/s, no native instructions) the embedding's FLOPs take "
                  f"{floor['embedding_floor_s']:.0f} s and the search's {floor['search_floor_s']:.0f} s. int8 dynamic "
                  f"quantisation of MiniLM's linear layers runs {q['speedup']:.2f}x float32 on {q['sentences']:,} "
                  f"sentences but moves cosines by up to {q['max_cosine_error']:.3f} (median "
                  f"{q['median_cosine_error']:.4f}), against the 0.9 threshold and 0.2 gap: not used"]
    return lines


def _share(value) -> str:
    """A share of the machine's peak as a percentage ("-" where the benchmark predates the column)."""
    return "-" if value is None else f"{100 * value:.1f}%"


def gpu_check_lines() -> list[str]:
    """The GPU check's last run on a GPU (bench/results/gpu_check.json), or where it stands."""
    lines = ["## GPU check (`bench/gpu_check.sh`)", ""]
    gc = RESULTS / "gpu_check.json"
    if not gc.exists():
        return lines + ["Not yet run on a GPU: no session so far has been lent a GPU machine. CI runs its dry mode "
                        "(`bench/gpu_check.sh --dry`: the CPU stands in for the device, tiny models and budgets). "
                        "On a GPU machine: `bench/gpu_check.sh` writes bench/results/gpu_check.json, and this "
                        "section shows it.", ""]
    r = json.loads(gc.read_text())
    v = r["versions"]
    lines += [f"{'Dry run (CPU only)' if r['dry'] else v.get('device', 'GPU')}, torch {v['torch']}, transformers "
              f"{v['transformers']}, models: {r['models']['kind']}; {'passed' if r['passed'] else 'FAILED'} in "
              f"{r['seconds']:.0f} s. Each workload on the CPU in float32 (reference) and on the device in bf16; "
              f"tolerances (points): {', '.join(f'{k} {t:g}' for k, t in r['tolerance_points'].items())}.", "",
              "| workload | passed | reference wall (s) | device wall (s) | device peak memory (MB) | device throughput |",
              "|---|---|---|---|---|---|"]
    for name, w in r["workloads"].items():
        ref, dev = w.get("reference", {}).get("cost", {}), w.get("device", {}).get("cost", {})
        peak = dev.get("cuda_peak_mb") or dev.get("peak_rss_mb")
        speed = ", ".join(f"{k.replace('_', ' ')} {dev[k]:g}" for k in dev if k.endswith("_per_s"))
        lines.append(f"| {name} | {'yes' if w['passed'] else 'no: ' + '; '.join(w['failures'])} | "
                     f"{ref.get('wall_s', float('nan')):.1f} | {dev.get('wall_s', float('nan')):.1f} | "
                     f"{'-' if peak is None else f'{peak:.0f}'} | {speed or '-'} |")
    return lines + [""]


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
    from retain.wings.study import INTERVALS_NOTE, PAIRED_NOTE, TABLE_NOTE, evidence_tables

    lines += ["", TABLE_NOTE, ""]
    if r.get("evidence"):  # intervals and paired tests (studies from before issue 17 have none)
        (ih, ir), (ph, pr) = evidence_tables(r["evidence"])
        for title, (h, rs), note in (("Scores with 95% intervals", (ih, ir), INTERVALS_NOTE),
                                     ("Text-only answers, pair by pair, on the same questions", (ph, pr), PAIRED_NOTE)):
            lines += [f"## {title}", "", "| " + " | ".join(h) + " |", "|" + "---|" * len(h)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rs]
            lines += ["", note, ""]
    lines += ["## Text-only accuracy by question kind (offline set, %)", ""]
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
             f"`bench/emt_study.py`, which runs `{r['command']}` on 2 CPU cores) and "
             "`bench/results/emt_matcher.json` (`bench/emt_matcher_table.py`).", "",
             f"Fine-tuned on {', '.join(r['sequence'])} posed as EMT questions; train: {r['train']}. "
             f"EMT ({r['emt_mode']} scoring) on {r['eval_limit']} test images of every dataset "
             + (f"every {r['every_steps']} optimizer steps" if r.get("every_steps") else "after every epoch")
             + ". Scores in %; the first row is the vision encoder's own zero-shot accuracy.", ""]
    evidence = all("evidence" in v for v in r["methods"].values())
    if evidence:
        lines += ["Each score with its 95% interval (bootstrap over the test images).", ""]
    else:
        lines += ["**These curves are from the study's earlier setting: one point per epoch, no intervals, and "
                  "the answer matcher before the one described at the end of this page. `bench/emt_study.py` reruns "
                  "the study at the current setting (configs/emt-study.yaml), one method at a time.**", ""]
    lines += ["| method | evaluated | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets),
              f"| vision encoder ({r['encoder']}) | zero-shot | "
              + " | ".join(f"{100 * r['encoder_zero_shot'][d]:.1f}" for d in datasets) + " |"]
    for m, v in r["methods"].items():
        for k, p in enumerate(v["curve"]):
            ev = v["evidence"][k]["accuracy_interval"] if evidence else {}
            lines.append(f"| {m} | {p['label']} | " + " | ".join(
                interval(p["accuracy"][d], *(ev.get(d) or (None, None))) for d in datasets) + " |")
    if evidence:
        lines += ["", "## Does early fine-tuning help the other datasets?", "",
                  "The mean EMT accuracy over the held-out datasets (every dataset but the fine-tuned one) minus its "
                  "zero-shot value, with its paired 95% interval (both points on the same images, drawn together); "
                  "\"≈\" where the interval holds zero.", "",
                  "| method | evaluated | held-out mean change (points) |", "|---|---|---|"]
        for m, v in r["methods"].items():
            for e in v["evidence"][1:]:
                lo, hi = e["held_out_change_interval"]
                mark = " ≈" if lo <= 0 <= hi else ""
                lines.append(f"| {m} | {e['label']} | {100 * e['held_out_change']:+.1f} [{100 * lo:+.1f}, "
                             f"{100 * hi:+.1f}]{mark} |")
        lines += ["", *emt_rise_findings(r), ""]
    lines += ["", "Answers outside the label set (hallucinated classes), of the test images per dataset:", "",
              "| method | evaluated | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for m, v in r["methods"].items():
        for p in v["curve"]:
            lines.append(f"| {m} | {p['label']} | "
                         + " | ".join(str(p["counts"][d]["outside_label_set"]) for d in datasets) + " |")
    lines += ["", "Seconds per method (training and every evaluation): "
              + ", ".join(f"{m} {sum(v['task_seconds']):.0f}" for m, v in r["methods"].items()) + ".", ""]
    lines += matcher_lines()
    lines += likelihood_norm_lines()
    notes = ROOT / "docs" / "emt_findings.md"
    if notes.exists() and not evidence:
        lines += [notes.read_text()]
    return "\n".join(lines) + "\n"


def emt_rise_findings(r: dict) -> list[str]:
    """The early-rise claim, read only where an interval leaves out zero."""
    out = []
    for m, v in r["methods"].items():
        ev = v["evidence"][1:]
        up = [e for e in ev if e["held_out_change_interval"][0] > 0]
        down = [e for e in ev if e["held_out_change_interval"][1] < 0]
        first = ev[0] if ev else None
        if up:
            out.append(f"- {m}: the held-out mean rises above zero-shot at {', '.join(e['label'] for e in up)} "
                       f"(largest {100 * max(e['held_out_change'] for e in up):+.1f} points).")
        else:
            out.append(f"- {m}: no early rise on the held-out datasets that its interval separates from zero"
                       + (f" (first point {first['label']}: {100 * first['held_out_change']:+.1f} points)." if first
                          else "."))
        if down:
            out.append(f"  It falls below zero-shot at {', '.join(e['label'] for e in down)} "
                       f"(lowest {100 * min(e['held_out_change'] for e in down):+.1f} points).")
    return out


def likelihood_norm_lines() -> list[str]:
    """Likelihood mode's three option scores side by side (bench/emt_modes.py): summed log-probability,
    its mean per token and per character, on the same images of zero-shot mini-LLaVA."""
    em = RESULTS / "emt_modes.json"
    if not em.exists():
        return []
    r = json.loads(em.read_text())
    per_task = r["modes"]["likelihood"]["per_task"]
    if not all("accuracy_norm_token" in v for v in per_task.values()):
        return []
    lines = ["## Likelihood mode: summed or length-normalised option scores", "",
             f"Zero-shot mini-LLaVA on {r['items_per_task']} test images per dataset (`bench/emt_modes.py`), the "
             "class names ranked three ways from one scoring: the summed log-probability of the name's tokens (the "
             "default), its mean per token, and the sum over the name's characters (lm-eval's acc_norm). A sum "
             "favours short names; the means do not. Accuracy in %, 95% interval by bootstrap over the images.", "",
             "| dataset | summed | per token | per character |", "|---|---|---|---|"]
    for t, v in per_task.items():
        lines.append(f"| {t} | " + " | ".join(interval(v[f"accuracy{k}"], *(v.get(f"accuracy{k}_interval") or []))
                                              for k in ("", "_norm_token", "_norm_char")) + " |")
    return lines + [""]


def matcher_lines() -> list[str]:
    mt = RESULTS / "emt_matcher.json"
    if not mt.exists():
        return []
    r = json.loads(mt.read_text())
    lines = ["## The rule matcher against a careful judge", "",
             f"`{r['table']}`: {r['n']} free-text answers over {len(r['label_sets'])} label sets ("
             + ", ".join(f"{k} {v}" for k, v in r["label_sets"].items()) + "), each with the outcome a careful human "
             f"judge gives. The matcher agrees on {r['agreed']} of {r['n']} ({100 * r['agreement']:.1f}%; outcome "
             "and class both). The disagreements:", "",
             "| label set | true class | answer | judge | matcher |", "|---|---|---|---|---|"]
    for d in r["disagreements"]:
        judge = d["expected_outcome"] + (f" ({d['expected_class']})" if d.get("expected_class") else "")
        matcher = d["matcher_outcome"] + (f" ({d['matcher_class']})" if d.get("matcher_class") else "")
        lines.append(f"| {d['label_set']} | {d['label']} | {d['answer']} | {judge} | {matcher} |")
    lines += ["", "Where rules cannot decide, `retain eval --mode judge` asks an LLM judge and records the rule's "
              "outcome beside it (`rule_judge_agreement` in results.json). Likelihood mode reports the accuracy by "
              "summed option log-probability and, beside it, per token and per character (lm-eval's acc_norm), "
              "since a summed score favours short class names.", ""]
    return lines


def mcit_page() -> str | None:
    mo = RESULTS / "mcit_offline.json"
    r = json.loads(mo.read_text()) if mo.exists() else {}
    if "learnability" not in r:  # no run of the benchmark has finished yet
        return "\n".join(["# Continual instruction tuning on the offline benchmark", "",
                          "No run of `bench/mcit_offline.py` has finished yet (`bench/results/mcit_offline.json` "
                          "holds none); it continues where it stopped each time it is called.", "",
                          *calibration_lines()]) + "\n"
    seq, seeds, methods = r["sequence"], r["seeds"], list(dict.fromkeys(k.split("/")[0] for k in r["matrices"]))
    from retain.config import load_config

    planned = load_config(ROOT / "configs" / "mcit-offline.yaml").methods
    done = sorted(r["matrices"])
    missing = [f"{m}/seed-{s}" for s in seeds for m in planned if f"{m}/seed-{s}" not in r["matrices"]]
    lines = ["# Continual instruction tuning on the offline benchmark", "",
             "Written by `bench/run_all.py --summary` from `bench/results/mcit_offline.json` (made by "
             f"`bench/mcit_offline.py`, which runs `{r['command']}` for each method and seed on 2 CPU cores) and "
             "`bench/results/mcit_calibration.json` (`bench/mcit_calibrate.py`).", "",
             f"Sequence: {' -> '.join(seq)}; mini-LLaVA; train: {r['train']}; {r['eval_limit']} test items per task "
             f"at every evaluation point (the same items for every method and seed), answers of at most "
             f"{r['max_new_tokens']} tokens scored by exact match; seeds {seeds}. Scores in %.", ""]
    lines += [f"**Runs finished: {len(done)} of {len(planned) * len(seeds)}.**"
              + (f" Not yet run (the benchmark continues where it stopped): {', '.join(missing)}." if missing else ""),
              ""]
    lines += ["## Methods", "",
              "Mean over the finished seeds with its 95% t-interval over seeds (a method with one finished seed: "
              "its 95% interval by bootstrap over test items).", "", r["table"], ""]
    if r.get("paired"):
        lines += ["## Paired differences against LoRA-FT", "", f"Each method minus lora_ft, {r['paired']['how']}; "
                  "\"≈\" marks an interval that holds zero (within noise).", "", r["paired"]["table"], ""]
    elif r.get("unpaired"):
        lines += ["## Paired differences against LoRA-FT", "", f"Not computed: {r['unpaired']}", ""]
    lines += learnability_lines(r["learnability"], seq)
    lines += ranking_lines(r["ranking"])
    lines += calibration_lines()
    lines += ["## Accuracy matrices (row 0: before training; row t: after task t)", "",
              "Mean over the finished seeds with its 95% t-interval over seeds; a method with one finished seed: "
              "that run's scores with their 95% interval by bootstrap over the test items.", ""]
    from retain import stats

    for m in methods:
        keys = [k for k in done if k.split("/")[0] == m]
        lines += [f"### {m} ({len(keys)} seed{'s' if len(keys) > 1 else ''})", "",
                  "| after | " + " | ".join(seq) + " |", "|---|" + "---|" * len(seq)]
        for t in range(len(seq) + 1):
            label = "zero-shot" if t == 0 else seq[t - 1]
            if len(keys) == 1:
                A, iv = r["matrices"][keys[0]], r["matrix_intervals"][keys[0]]
                cells = [interval(A[t][j], *(iv[t][j] or (None, None))) for j in range(len(seq))]
            else:
                cells = [interval(*stats.seed_interval([r["matrices"][k][t][j] for k in keys]))
                         for j in range(len(seq))]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += mcit_findings(r)
    return "\n".join(lines) + "\n"


def learnability_lines(lr: dict, seq: list[str]) -> list[str]:
    bar = lr["bar"]
    lines = ["## Are the tasks learned? (LoRA-FT right after training each task)", "",
             f"The bar: at least {100 * bar['learned']:.0f}% and at least {100 * bar['margin']:.0f} points above the "
             "task's zero-shot score, on every task, for every seed.", "",
             "Each score with its 95% interval (bootstrap over the test items).", "",
             "| seed | " + " | ".join(f"{t} (zero-shot -> trained)" for t in seq) + " |", "|---|" + "---|" * len(seq)]
    for seed, tasks in lr["seeds"].items():
        lines.append(f"| {seed} | " + " | ".join(
            f"{before_after(v)} {'(met)' if v['meets_bar'] else '(NOT met)'}" for v in tasks.values()) + " |")
    lines += ["", f"Bar met on every task and seed: {'yes' if lr['all_met'] else 'no'}.", ""]
    return lines


def before_after(v: dict) -> str:
    """A task's zero-shot score -> its score right after training, each with its interval."""
    return (f"{interval(v['zero_shot'], *(v.get('zero_shot_interval') or (None, None)))} -> "
            f"{interval(v['after_training'], *(v.get('after_training_interval') or (None, None)))}")


def ranking_lines(rk: dict) -> list[str]:
    lines = ["## Ranking by MAA, per seed", ""]
    for seed, order in rk["by_seed"].items():
        lines.append(f"- {seed}: " + " > ".join(order))
    if rk["kendall_tau"]:
        lines += ["", "Kendall's tau between the seeds' rankings (1: the same order; 0: unrelated): " + ", ".join(
            f"seeds {t['seeds'][0]} and {t['seeds'][1]} {t['tau']:.2f} over {t['methods']} methods"
            for t in rk["kendall_tau"] if t["tau"] is not None) + f"; mean {rk['mean_tau']:.2f}."]
    return lines + [""]


def calibration_lines() -> list[str]:
    cal = RESULTS / "mcit_calibration.json"
    if not cal.exists():
        return []
    sm = json.loads(cal.read_text())["summary"]
    seq = sm["sequence"]
    lines = ["## How the training budget was chosen (`bench/mcit_calibrate.py`)", "",
             "LoRA-FT on each task alone, seed 0, the benchmark's test items; the rule: the fewest items per task "
             f"under which every task reaches {100 * sm['bar']['learned']:.0f}% and "
             f"{100 * sm['bar']['margin']:.0f} points above zero-shot. MCITlib's setting (LLaVA-1.5-7B, lr 2e-4, "
             "one epoch over each task's full training set) does not carry over to a 135M LLM trained for minutes.",
             "", "Scores with their 95% interval (bootstrap over the test items). Seconds: wall time of the runs, on "
             "2 cores that other jobs shared.", "",
             "| candidate | items per task | " + " | ".join(seq) + " | all met | seconds |",
             "|---|---|" + "---|" * len(seq) + "---|---|"]
    for name, c in sm["candidates"].items():
        cells = [before_after(c["tasks"][t]) if t in c["tasks"] else "not run" for t in seq]
        lines.append(f"| {name} | {c['items_per_task']} | " + " | ".join(cells)
                     + f" | {'yes' if c['meets_bar'] else 'no'} | {c['wall_s']:.0f} |")
    lines += ["", f"Chosen: {sm['chosen'] or 'none yet meets the bar'}.", ""]
    return lines


def mcit_findings(r: dict) -> list[str]:
    """What the numbers let one say: only paired differences whose interval leaves out zero."""
    lines = ["## What it shows", "", "Generated from the paired table above: a difference is stated only when its "
             "95% interval leaves out zero.", ""]
    rows = (r.get("paired") or {}).get("rows", {})
    claims, level = [], 0
    for method, cells in rows.items():
        for col, c in cells.items():
            if c and c["within_noise"] is False:
                lo, hi = c["interval"]
                word = "higher" if c["value"] > 0 else "lower"
                what = col.split(" minus ")[0]
                claims.append(f"- {method}: {what} {abs(100 * c['value']):.1f} points {word} than lora_ft "
                              f"[{100 * lo:.1f}, {100 * hi:.1f}].")
            elif c:
                level += 1
    if r.get("unpaired"):
        return lines + [f"- No paired claims: {r['unpaired']}", ""]
    lines += claims or ["- No method differs from LoRA-FT beyond noise on any paired score yet."]
    if claims and level:
        lines += [f"- The other {level} paired differences are within noise."]
    seeds = {k.split('/')[1] for k in r["matrices"]}
    if len(seeds) < len(r["seeds"]):
        lines += ["", f"Only {len(seeds)} of {len(r['seeds'])} seeds have finished runs; with fewer than two shared "
                  "seeds a difference is paired over the test items of one seed, which leaves training noise out."]
    return lines + [""]


def interval(v, lo=None, hi=None) -> str:
    """A score in % with its 95% interval."""
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if lo is None else f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _iv(entry: dict, key: str) -> str:
    i = entry.get(f"{key}_interval") or (None, None)
    return interval(entry.get(key), *i)


def build_line(zoo: dict | None) -> str:
    if not zoo:
        return "mini-CLIP build: unknown"
    sha = zoo["sha256"]
    sha = sha.get("model.safetensors", next(iter(sha.values()))) if isinstance(sha, dict) else sha
    return f"mini-CLIP recipe {zoo['recipe_hash']}, weights sha256 {sha[:12]}, torch {zoo['torch']}"


def quickstart_section(r: dict) -> list[str]:
    lines = ["## Quickstart (`bench/quickstart.py`)", "",
             "Budget: under 4 minutes with a warm cache, under 10 minutes on a fresh machine, under 4 GB, on 2 cores.", ""]
    for k, label in (("fresh", "fresh cache (dataset conversion + mini-CLIP build + run)"), ("warm", "warm cache")):
        if k in r:
            lines.append(f"- {label}: {r[k]['wall_s']:.0f} s wall, peak memory {r[k]['peak_rss_mb']:.0f} MB")
    if "build_reproduced" in r:
        lines.append(f"- the fresh build's weights {'equal' if r['build_reproduced'] else 'DIFFER from'} the cached "
                     f"build's ({build_line(r['fresh']['zoo'])})")
    if "seeds" in r:
        sd = r["seeds"]
        c = sd["checks"]
        lines += ["", f"Over seeds {sd['seeds']} (`{sd['command']}`, {sd['wall_s']:.0f} s; {build_line(sd['zoo'])}):",
                  "", sd["markdown"], "", "Checks (issue 14's acceptance):", "",
                  f"- LDIFS's zero-shot concept forgetting is {100 * c['ldifs_zs_forgetting_share']:.0f}% of fine-tuning's "
                  f"(at most 50%: {'yes' if c['pass_zs_half'] else 'no'})",
                  f"- LDIFS's MFT is {100 * c['ldifs_mft_share']:.1f}% of fine-tuning's "
                  f"(at least 98%: {'yes' if c['pass_mft_98'] else 'no'})",
                  "- paired difference in zero-shot forgetting, LDIFS minus fine-tuning: "
                  + interval(c["paired_zs_difference"]["value"], c["paired_zs_difference"]["low"],
                             c["paired_zs_difference"]["high"])
                  + f" points (excludes zero: {'yes' if c['pass_paired_excludes_zero'] else 'no'})"]
        if "ceiling" in c:
            ce = c["ceiling"]
            lines.append("- fine-tuning right after each task against the ceiling (10x the steps, all training items): "
                         + "; ".join(f"{t} {100 * m:.1f} of {interval(x, *(i or (None, None)))} = {100 * sh:.0f}%"
                                     for t, m, x, i, sh in zip(ce["tasks"], ce["finetune_mean"], ce["ceiling"],
                                                               ce["ceiling_interval"] or [None] * len(ce["tasks"]),
                                                               ce["share"]))
                         + f" (at least 85%: {'yes' if c['pass_ceiling_85'] else 'no'})")
        lines.append("")
    return lines


def sweep_tables(r: dict) -> str:
    """The calibration sweep's tables: ceiling, alpha by normalisation and learning rate, trade-off."""
    g = r["groups"]
    out = [f"Every run is `configs/quickstart.yaml` (seed 0) with the group's overrides; scores in % with 95% "
           f"intervals by bootstrap over test items; {build_line(r.get('zoo_build'))}. Commands: "
           + "; ".join(f"`{v}`" for k, v in r["commands"].items() if k in r["wall_s"]) + "."]
    if "ceiling" in g and "finetune" in g["ceiling"]:
        ce = g["ceiling"]["finetune"]
        qs = g.get("alpha", {}).get("finetune")
        out += ["", "Ceiling: plain fine-tuning with 10x the quickstart's steps on all training items, accuracy right "
                    "after each task.", "", "| task | ceiling | quickstart fine-tuning (seed 0) | share |", "|---|---|---|---|"]
        for i, t in enumerate(ce["sequence"]):
            civ = (ce["diagonal_interval"] or [None] * len(ce["sequence"]))[i] or (None, None)
            q = qs["diagonal"][i] if qs else None
            qiv = ((qs or {}).get("diagonal_interval") or [None] * len(ce["sequence"]))[i] or (None, None)
            share = "-" if q is None else f"{100 * q / ce['diagonal'][i]:.0f}%"
            out.append(f"| {t} | {interval(ce['diagonal'][i], *civ)} | {interval(q, *qiv)} | {share} |")
    if g.get("budget"):
        ce = g.get("ceiling", {}).get("finetune")
        out += ["", "Budget: plain fine-tuning alone (no probes), accuracy right after each task (`budget`; "
                    "the quickstart's time is measured above, by `bench/quickstart.py`):", "",
                "| run | " + " | ".join(f"{t} (share of ceiling)" for t in next(iter(g["budget"].values()))["sequence"])
                + " |", "|---|---|---|"]
        for name, e in sorted(g["budget"].items(), key=lambda kv: kv[0] != "budget-epoch-cap"):
            cells = []
            for i, d in enumerate(e["diagonal"]):
                iv = (e.get("diagonal_interval") or [None] * len(e["diagonal"]))[i] or (None, None)
                share = f" ({100 * d / ce['diagonal'][i]:.0f}%)" if ce else ""
                cells.append(interval(d, *iv) + share)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out += ["", "`budget-epoch-cap` is the earlier preset (`epochs: 1`, `max_steps: 100`, lr 3e-4, 3000 items): "
                    "one epoch ended each task before max_steps."]
    titles = {"alpha": "LDIFS with the reference normalisation (token), quickstart lr",
              "alpha-channel": "LDIFS with the per-token normalisation (channel), quickstart lr",
              "alpha-lr": "a third of the quickstart's learning rate",
              "tradeoff": "the other methods (the trade-off plot's points)"}
    for name, title in titles.items():
        if not g.get(name):
            continue
        out += ["", f"{title} (`{name}`):", "", "| run | MFT | ZS delta (mean) | LP delta (mean) | ZS ECE change |",
                "|---|---|---|---|---|"]
        for label, e in sorted(g[name].items(), key=lambda kv: (kv[1]["method"], kv[1]["options"].get("alpha", 0),
                                                                   kv[1]["options"].get("weight", 0))):
            ece = "-" if e.get("zs_ece_change") is None else f"{100 * e['zs_ece_change']:+.1f}"
            out.append(f"| {label} | {_iv(e, 'MFT')} | {_iv(e, 'zs_delta')} | {_iv(e, 'lp_delta')} | {ece} |")
    shares = []
    for name, lr in (("alpha", r["quickstart_train"]["lr"]), ("alpha-lr", r["quickstart_train"]["lr"] / 3)):
        runs = g.get(name, {})
        ft = runs.get("finetune")
        if ft:
            left = sorted((e["options"]["alpha"], e["zs_delta"] / ft["zs_delta"]) for e in runs.values() if e["method"] == "ldifs")
            shares.append(f"at lr {lr:g} (fine-tuning {100 * ft['zs_delta']:.1f} points): "
                          + ", ".join(f"alpha {a:g} {100 * x:.0f}%" for a, x in left))
    if shares:
        out += ["", "Learning rate and alpha, read off the two tables (the share of fine-tuning's zero-shot forgetting "
                    "that LDIFS leaves): " + "; ".join(shares) + "."]
    token = {e["options"]["alpha"]: e for e in g.get("alpha", {}).values() if e["method"] == "ldifs"}
    pairs = [(a, e, token[a / 10]) for a, e in sorted((e["options"]["alpha"], e) for e in g.get("alpha-channel", {}).values())
             if a / 10 in token]
    if pairs:
        out += ["", "Normalisation, read off the token and channel tables: `channel` at alpha A against `token` at A/10 "
                    "(zero-shot delta, MFT): " + "; ".join(
                        f"{a:g}: {100 * c['zs_delta']:.1f}, {100 * c['MFT']:.1f} against {100 * t['zs_delta']:.1f}, "
                        f"{100 * t['MFT']:.1f}" for a, c, t in pairs) + "."]
    if r.get("chosen_alpha"):
        ch = r["chosen_alpha"]
        out += ["", f"Chosen for the quickstart: alpha {ch['alpha']:g} (`{ch['label']}`); the rule: {ch['rule']}."]
    return "\n".join(out)


def replace_block(path: Path, marker: str, text: str) -> None:
    """Put `text` between `<!-- marker: written by bench/run_all.py --summary -->` and `<!-- /marker -->`."""
    start, end = f"<!-- {marker}: written by bench/run_all.py --summary -->", f"<!-- /{marker} -->"
    body = path.read_text()
    if start not in body:
        return
    head, rest = body.split(start, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")


def readme_table() -> None:
    """Put the quickstart's measured table (three seeds, paired) into README.md, and the
    sweep into docs/guide/ldifs.md, between their markers."""
    qs = RESULTS / "quickstart.json"
    if qs.exists():
        r = json.loads(qs.read_text())
        if "seeds" in r:
            sd = r["seeds"]
            text = (f"{sd['markdown']}\n\n(`bench/quickstart.py`, {r['date']}, {r['cores']} CPU cores, seeds {sd['seeds']}; "
                    f"{build_line(sd['zoo'])}; also in docs/benchmarks.md)")
            replace_block(ROOT / "README.md", "quickstart-table", text)
    sw = RESULTS / "ldifs_sweep.json"
    if sw.exists():
        replace_block(ROOT / "docs" / "guide" / "ldifs.md", "ldifs-sweep", sweep_tables(json.loads(sw.read_text())))


def main() -> None:
    if "--summary" not in sys.argv:
        for script in ("ldifs_step.py", "ldifs_sweep.py", "quickstart.py", "mini_llava.py", "emt_modes.py", "emt_study.py",
                       "mcit_throughput.py", "mcit_offline.py", "wings_step.py", "wings_study.py",
                       "multimon_mine.py", "engine_memory.py"):
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
