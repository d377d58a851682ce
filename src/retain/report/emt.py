"""EMT in reports: the MLLM against its vision encoder, and its failures with their images.

Failure examples come from the per-item records (`records/*.jsonl`): their `index` is the
position in the same test subset the evaluation drew (`split("test").subset(limit)`), so
the report reloads the dataset and shows the image each answer was given for. In a
training run, the items the MLLM answered correctly before fine-tuning and wrongly after
it come first: those are what fine-tuning made it forget.
"""

from __future__ import annotations

import json
from pathlib import Path

from retain.errors import RetainError
from retain.eval.emt_match import OUTCOMES
from retain.io import read_json, write_text
from retain.report import page as P

PER_DATASET = 8
NORM_NAMES = {"token": "token", "char": "character (acc_norm)"}


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _images(name: str, limit: int | None):
    """The test images EMT saw for dataset `name`, or an explanation why they cannot be shown."""
    from retain.data import load_task

    try:
        task = load_task(name)
        return task, task.split("test").subset(limit), None
    except (RetainError, OSError, KeyError) as e:
        return None, None, f"images of {name} are not available here ({e})"


def _gallery(name: str, limit: int | None, chosen: list[tuple[str, dict]]) -> str:
    task, split, why = _images(name, limit)
    if why:
        return f"<p class='note'>{P.esc(why)}</p>"
    items = []
    for kind, rec in chosen:
        if rec["index"] >= len(split):
            continue
        answer = str(rec.get("answer", ""))
        answer = answer if len(answer) <= 60 else answer[:57] + "..."
        items.append((P.image_png(split.images[rec["index"]]),
                      [f"label: {task.class_names[rec['label']]}", f"answer: {answer!r}", kind]))
    return P.gallery(items)


def _choose(after: list[dict], before: dict[int, dict] | None) -> list[tuple[str, dict]]:
    """Up to PER_DATASET failures: first the forgotten ones (correct before, wrong after), then
    one of each other outcome in turn, so every kind of failure is seen."""
    wrong = [r for r in after if r.get("outcome") != "correct"]
    forgotten = [r for r in wrong if before and before.get(r["index"], {}).get("outcome") == "correct"]
    chosen = [("forgotten: " + r["outcome"].replace("_", " "), r) for r in forgotten[:PER_DATASET // 2]]
    rest = [r for r in wrong if r not in forgotten[:PER_DATASET // 2]]
    by_outcome = {o: [r for r in rest if r["outcome"] == o] for o in dict.fromkeys(r["outcome"] for r in rest)}
    while len(chosen) < PER_DATASET and any(by_outcome.values()):
        for o, recs in by_outcome.items():
            if recs and len(chosen) < PER_DATASET:
                chosen.append((o.replace("_", " "), recs.pop(0)))
    return chosen


def failure_section(run: Path, res: dict) -> tuple[str, str, str]:
    """Failure examples of a training run's last evaluation point, forgotten items first."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    limit = (cfg.get("eval") or {}).get("limit") or None
    last = _records(run / "records" / f"row-{len(res['sequence'])}.jsonl")
    first = _records(run / "records" / "row-0.jsonl")
    body = (f"<p class='note'>Test images the MLLM got wrong {P.esc(res['evaluation']['curve'][-1]['label'])}; "
            "'forgotten' marks items it answered correctly before fine-tuning.</p>")
    shown = False
    for name in res["evaluation"]["datasets"]:
        after = [r for r in last if r.get("task") == name and r.get("outcome") in OUTCOMES]
        if not after:
            continue
        before = {r["index"]: r for r in first if r.get("task") == name}
        chosen = _choose(after, before)
        n_forgotten = sum(1 for r in after if r["outcome"] != "correct"
                          and before.get(r["index"], {}).get("outcome") == "correct")
        body += (f"<h3>{P.esc(name)}: {sum(r['outcome'] != 'correct' for r in after)} of {len(after)} wrong, "
                 f"{n_forgotten} forgotten</h3>")
        body += _gallery(name, limit, chosen) if chosen else "<p>no failures</p>"
        shown = True
    if not shown:
        body += "<p>no EMT-scored dataset in this run</p>"
    return ("emt-failures", "EMT failure examples", body)


def write_eval_report(out: Path) -> Path:
    """report.html for a `retain eval` folder: the MLLM against its vision encoder, per dataset."""
    res = read_json(out / "results.json")
    # likelihood mode: the class names also ranked by log-probability per token and per character
    norms = [n for n in ("token", "char") if any(f"mllm_accuracy_norm_{n}" in t for t in res["tasks"])]
    header = ["dataset", "MLLM accuracy", *[f"MLLM accuracy per {NORM_NAMES[n]}" for n in norms],
              "vision encoder zero-shot", "gap", *[o.replace("_", " ") for o in OUTCOMES], "judge errors"]
    rows = [[t["task"], t["mllm_accuracy"], *[t.get(f"mllm_accuracy_norm_{n}") for n in norms], t["encoder_zero_shot"],
             t["gap"], *[t["counts"].get(o, 0) for o in OUTCOMES], t["counts"].get("judge_error", 0)]
            for t in res["tasks"]]
    fig = _accuracy_bars(res)
    P.save_figures(out / "figures", {"mllm_vs_encoder": fig})
    body = P.table(header, rows) + P.figures([("MLLM accuracy against its vision encoder's zero-shot", fig)])
    if norms:
        body = ("<p class='note'>MLLM accuracy: the class name of highest summed log-probability, which favours "
                "short names; per token: of highest mean log-probability per token; per character: summed "
                "log-probability over the name's length in characters (lm-evaluation-harness's acc_norm).</p>" + body)
    unscored = sum(t["counts"].get("judge_error", 0) for t in res["tasks"])
    if unscored or res.get("halted"):
        body = (f"<p class='note'>{unscored} item(s) unscored (judge errors): an accuracy covers the scored items "
                "only, none where no item was scored." + (f" Stopped: {P.esc(res['halted'])}" if res.get("halted")
                                                          else "") + "</p>") + body
    sections = [("metrics", "The MLLM as an image classifier", body)]
    failures = ""
    for t in res["tasks"]:
        recs = _records(out / "records" / f"{t['task'].replace('/', '_')}.jsonl")
        chosen = _choose(recs, None)
        failures += f"<h3>{P.esc(t['task'])}</h3>" + (_gallery(t["task"], res["limit"] or None, chosen)
                                                      if chosen else "<p>no failures</p>")
    sections.append(("emt-failures", "Failure examples", failures))
    config = {k: res[k] for k in ("model", "mode", "limit", "encoder", "template", "judge")}
    versions = P.table(["", "version"], [[k, v] for k, v in res.get("versions", {}).items()])
    sections.append(("config", "Settings and versions", versions + f"<pre>{P.esc(json.dumps(config, indent=2))}</pre>"))
    path = out / "report.html"
    write_text(path, P.page(f"retain EMT: {res['model']}", sections, f"{res['mode']} scoring, "
                                                                      f"{res['limit'] or 'all'} test images per dataset"))
    return path


def _accuracy_bars(res: dict) -> bytes:
    import numpy as np

    names = [t["task"] for t in res["tasks"]]
    fig, ax = P.plt().subplots(figsize=(1.8 + 1.2 * len(names), 3.4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [np.nan if t["mllm_accuracy"] is None else 100 * t["mllm_accuracy"] for t in res["tasks"]], 0.4,
           label="MLLM")  # an unscored dataset gets no bar
    ax.bar(x + 0.2, [100 * (t["encoder_zero_shot"] if t["encoder_zero_shot"] is not None else np.nan)
                     for t in res["tasks"]], 0.4, label=f"vision encoder zero-shot ({res['encoder']})")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return P.png(fig)
