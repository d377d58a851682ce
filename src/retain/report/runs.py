"""Reports of training runs: the comparison table across runs, one page per run, one per comparison.

A run's page: metrics, the accuracy-matrix heatmap, per-task curves, concept forgetting
(table and bars), for MLLM runs the score of every dataset at every evaluation point and
EMT's failure examples with their images, then the resolved config and versions. Figures
are also saved in the run's `figures/`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from retain.errors import RetainError
from retain.io import read_json, write_text
from retain.report import page as P
from retain.report.compare import (calibration_rows, comparison_rows, default_baseline, groups, label_of,
                                   paired_rows, run_values, tradeoff_figure, weights_of)

def find_runs(paths: list[str]) -> list[Path]:
    """Run directories (those holding results.json) named directly, one level below, or
    as seed repeats (<method>/seed-<s>/)."""
    runs = []
    for p in map(Path, paths):
        if (p / "results.json").exists():
            runs.append(p)
            continue
        below = sorted(d for pattern in ("*/", "*/seed-*/") for d in p.glob(pattern)
                       if (d / "results.json").exists()) if p.is_dir() else []
        if not below:
            raise RetainError(f"{p} is not a finished run directory (no results.json in it or below it).")
        runs += below
    return runs


def format_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table of `cell_text` cells (numbers as percentages with one decimal)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(P.cell_text(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_comparison(runs: list[Path], out_dir: Path, baseline: str | None = None) -> str:
    """Write comparison.md/.csv/.json and comparison.html into `out_dir`; return the Markdown.

    Every score carries its 95% interval; with a `baseline` (default: finetune when it is
    among the runs) each other row's paired difference against it follows the table."""
    results = [read_json(r / "results.json") for r in runs]
    header, rows = comparison_rows(runs, results)
    table = format_table(header, rows)
    asked, baseline = baseline, baseline or default_baseline(results)
    paired, unpaired = None, ""
    if asked or (baseline and len(groups(runs, results)) > 1):
        try:
            paired = paired_rows(runs, results, baseline)
        except RetainError as e:
            if asked:  # asked for by name: say what is wrong
                raise
            unpaired = f"\nNo paired differences: {e}\n"  # e.g. runs from before per-item records were kept
    md = table + "\n\n" + NOTE + " " + INTERVAL_NOTE + "\n" + unpaired
    if paired:
        md += f"\nPaired differences against {baseline} ({paired[2]}; ≈: the interval holds zero, within noise):\n\n"
        md += format_table(paired[0], paired[1]) + "\n"
    write_text(out_dir / "comparison.md", md)
    write_text(out_dir / "comparison.csv", _csv(header, rows))
    if paired:
        write_text(out_dir / "comparison_paired.csv", _csv(paired[0], paired[1]))
    write_text(out_dir / "comparison.json", json.dumps(
        {"header": header, "rows": _jsonable(rows), "runs": [str(r) for r in runs],
         **({"paired": {"baseline": baseline, "pairing": paired[2], "header": paired[0],
                        "rows": _jsonable(paired[1])}} if paired else {})}, indent=2))
    sections = [("metrics", "Metrics", P.table(header, rows)
                 + f"<p class='note'>{P.esc(NOTE)} {P.esc(INTERVAL_NOTE)} {P.esc(METRICS_NOTE)}</p>")]
    if paired:
        sections.append(("paired", f"Paired differences against {baseline}", P.table(paired[0], paired[1])
                         + f"<p class='note'>{P.esc(paired[2])}. ≈: the 95% interval of the difference holds zero "
                           "(within noise); only the other differences are claims.</p>"))
    trade = tradeoff_figure(runs, results)
    if trade is not None:
        sections.append(("trade-off", "Downstream accuracy against concept forgetting",
                         P.figures([("downstream accuracy (MFT) against concept forgetting, 95% intervals", trade)])))
    sections.append(("accuracy-matrix", "Accuracy matrices",
                     P.figures([(f"accuracy matrix: {_label(r, res)}", _heatmap(res, _label(r, res)))
                                for r, res in zip(runs, results)])))
    curves = [("mean accuracy over the tasks seen so far", _seen_curve(runs, results))]
    curves += [(f"scores across fine-tuning: {res['method']}", _points_curves(res)) for res in results if "evaluation" in res]
    sections.append(("task-curves", "Curves across the sequence", P.figures(curves)))
    if any(res["probes"] for res in results):
        body = P.figures([("accuracy change on datasets outside the sequence", _cf_bars(runs, results))])
        ch, cr = calibration_rows(runs, results)
        if cr:
            body += ("<h3>Calibration of the probes (expected calibration error, 15 bins, mean over datasets)</h3>"
                     + P.table(ch, cr))
        sections.append(("concept-forgetting", "Concept forgetting", body))
    emt = [res for res in results if "evaluation" in res]
    if emt:
        h, r = points_rows(emt)
        sections.append(("evaluation-points", "Scores at every evaluation point", P.table(h, r)))
        write_text(out_dir / "score_curves.md", format_table(h, r) + "\n")
    runs_rows = [[_label(r, res), res["model"], weights_of(res) or "", res["seed"], str(r),
                  json.dumps((_config(r) or {}).get("method_options", {}))] for r, res in zip(runs, results)]
    body = P.table(["run", "model", "build (weights)", "seed", "folder", "method options"], runs_rows)
    body += "<p class='note'>Each run's report.html holds its own resolved config; the first run's:</p>"
    sections.append(("config", "Runs, config and versions", body + P.config_section(runs[0])[2]))
    write_text(out_dir / "comparison.html", P.page("retain comparison", sections,
                                                    f"{len(runs)} runs on {' → '.join(results[0]['sequence'])}"))
    return md


def _csv(header: list[str], rows: list[list]) -> str:
    """CSV with every interval cell as three columns (value, low, high), in fractions."""
    wide = any(isinstance(c, P.Estimate) for r in rows for c in r)
    cols = [i for i in range(len(header)) if any(isinstance(r[i], P.Estimate) for r in rows)] if wide else []
    out_header = []
    for i, h in enumerate(header):
        out_header += [h, f"{h} low", f"{h} high"] if i in cols else [h]
    lines = [out_header]
    for r in rows:
        line = []
        for i, c in enumerate(r):
            if i in cols:
                e = c if isinstance(c, P.Estimate) else P.Estimate(c)
                line += ["" if v is None else f"{v:.6g}" for v in e]
            else:
                line.append("" if c is None else f"{c:.6g}" if isinstance(c, float) else c)
        lines.append(line)
    buf = io.StringIO()
    csv.writer(buf).writerows(lines)
    return buf.getvalue()


def _jsonable(rows: list[list]) -> list[list]:
    return [[{"value": c[0], "low": c[1], "high": c[2], **({"within_noise": c.noise} if c.noise is not None else {})}
             if isinstance(c, P.Estimate) else c for c in r] for r in rows]


def write_report(run: Path) -> Path:
    """Write `report.html` (and figures/) for one finished run."""
    res = read_json(run / "results.json")
    figs = {"accuracy_matrix": _heatmap(res, label_of(res)), "task_curves": _curves(res)}
    if "probe_zero_shot_curve" in res:
        figs["probe_curves"] = _probe_curves(res)
    if "evaluation" in res:
        figs["score_curves"] = _points_curves(res)
    if res["probes"]:
        figs["concept_forgetting"] = _cf_bars([run], [res], by_kind=True)
    P.save_figures(run / "figures", figs)
    values = run_values(res)
    header = ["MFT", "MFN", "MAA", "BWT", "forgetting", "forward transfer"]
    row = [values[k] for k in ("MFT", "MFN", "MAA", "BWT", "forgetting", "forward_transfer")]
    kind = (res.get("intervals") or {}).get("kind")
    note = f"Brackets: 95% interval ({kind}, {res['intervals']['replicates']} draws). " if kind else ""
    sections = [("metrics", "Metrics", P.table(header, [row]) + f"<p class='note'>{P.esc(note + METRICS_NOTE)}</p>"),
                ("accuracy-matrix", "Accuracy matrix", P.figures([("accuracy matrix (rows: after each task; "
                                                                    "columns: evaluated task)", figs["accuracy_matrix"])])),
                ("task-curves", "Per-task accuracy across the sequence",
                 P.figures([(TITLES[k], figs[k]) for k in ("task_curves", "probe_curves", "score_curves") if k in figs]))]
    cal = res.get("calibration", {})

    def ece(kind, when, p):
        return cal.get(kind, {}).get(when, {}).get(p)

    cf_rows = [[kind, p, values.get(f"cf:{kind}:{p}:before"), values.get(f"cf:{kind}:{p}:after"), values.get(f"cf:{kind}:{p}"),
                ece(kind, "before", p), ece(kind, "after", p)]
               for kind, d in res["concept_forgetting"].items() for p in sorted(d["delta"])]
    if cf_rows:
        cf = P.table(["evaluator", "dataset", "pre-trained", "after", "delta [95% interval]",
                      "ECE pre-trained", "ECE after"], cf_rows)
        cf += ("<p class='note'>ECE: expected calibration error of the evaluator's predictions (15 equal-width "
               "confidence bins; in %, lower is better calibrated).</p>")
        cf += P.figures([(TITLES["concept_forgetting"], figs["concept_forgetting"])])
        sections.append(("concept-forgetting", "Concept forgetting", cf))
    if "evaluation" in res:
        from retain.report.emt import failure_section

        sections.append(("evaluation-points", "Scores at every evaluation point", _points_section(res)))
        sections.append(failure_section(run, res))
    sections.append(P.config_section(run))
    out = run / "report.html"
    subtitle = f"{label_of(res)} on {' → '.join(res['sequence'])}; model {res['model']}, seed {res['seed']}"
    write_text(out, P.page(f"retain report: {label_of(res)}", sections, subtitle))
    return out


NOTE = "Scores in %; deltas are fine-tuned minus pre-trained accuracy (negative = forgetting)."
INTERVAL_NOTE = ("Brackets: 95% interval, by bootstrap over the test items for a single run, by the t-distribution "
                 "over seeds for seed repeats (column '95% interval' says which).")
METRICS_NOTE = ("MFT: mean accuracy of each task right after training on it; MFN: mean final accuracy; MAA: mean "
                "over steps of the average accuracy on the tasks seen so far; BWT: mean change of a task's accuracy "
                "from right after it to the end (negative = forgotten); forgetting: mean drop from a task's best "
                "to its final accuracy.")
TITLES = {"task_curves": "per-task accuracy across the sequence",
          "probe_curves": "zero-shot accuracy of held-out datasets across the sequence",
          "score_curves": "score of every evaluated dataset across fine-tuning",
          "concept_forgetting": "accuracy change on datasets outside the sequence (after minus pre-trained)"}


def _label(run: Path, res: dict) -> str:
    name = label_of(res)
    return f"{name} (seed {res['seed']})" if run.name.startswith("seed-") else name


def _config(run: Path) -> dict | None:
    import yaml

    path = run / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        return None


def points_rows(results: list[dict]) -> tuple[list[str], list[list]]:
    """Score per dataset at every evaluation point of every run (and the vision encoder's zero-shot)."""
    datasets = list(dict.fromkeys(d for res in results for d in res["evaluation"]["datasets"]))
    header = ["method", "evaluated", *datasets]
    rows = []
    zs = next((res["evaluation"]["encoder_zero_shot"] for res in results if res["evaluation"].get("encoder_zero_shot")), None)
    if zs:
        rows.append([f"vision encoder ({results[0]['evaluation']['encoder']})", "zero-shot", *[zs.get(d) for d in datasets]])
    for res in results:
        for point in res["evaluation"]["curve"]:
            rows.append([res["method"], point["label"], *[point["accuracy"].get(d) for d in datasets]])
    return header, rows


def _points_section(res: dict) -> str:
    h, r = points_rows([res])
    out = f"<p>EMT datasets scored by {P.esc(res['evaluation']['emt_mode'])}.</p>" + P.table(h, r)
    if res.get("unscored"):  # judge errors: a score covers the scored items only, '-' where none was scored
        out += ("<p class='note'>Unscored items (judge errors) per evaluation point: " + "; ".join(
            f"{P.esc(label)}: " + ", ".join(f"{P.esc(t)} {n}" for t, n in cells.items())
            for label, cells in res["unscored"].items()) + ". A score covers the scored items only.</p>")
    last = res["evaluation"]["curve"][-1]
    outcomes = list(next(iter(last["counts"].values()), {}))
    rows = [[d, *[last["counts"][d].get(o, 0) for o in outcomes]] for d in last["counts"]]
    out += f"<h3>EMT outcomes {P.esc(last['label'])}</h3>"
    return out + P.table(["dataset", *[o.replace("_", " ") for o in outcomes]], rows)


# ---- figures -----------------------------------------------------------------------
def _row_labels(res) -> list[str]:
    return ["zero-shot"] + [f"after {t}" for t in res["sequence"]]


def _heatmap(res: dict, title: str) -> bytes:
    A = np.asarray(res["accuracy_matrix"], dtype=float)  # an unscored cell (None) is NaN
    fig, ax = P.plt().subplots(figsize=(1.6 + 1.1 * A.shape[1], 1.2 + 0.55 * A.shape[0]))
    im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
    for (i, j), v in np.ndenumerate(A):
        ax.text(j, i, "-" if np.isnan(v) else f"{100 * v:.1f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=9)
    ax.set_xticks(range(A.shape[1]), res["sequence"], rotation=30, ha="right")
    ax.set_yticks(range(A.shape[0]), _row_labels(res))
    ax.set_xlabel("evaluated task")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return P.png(fig)


def _curves(res) -> bytes:
    A = np.asarray(res["accuracy_matrix"], dtype=float)  # an unscored cell (None) is NaN
    fig, ax = P.plt().subplots(figsize=(5.5, 3.4))
    for j, t in enumerate(res["sequence"]):
        ax.plot(range(A.shape[0]), A[:, j], marker="o", label=t)
    ax.set_xticks(range(A.shape[0]), _row_labels(res), rotation=20, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return P.png(fig)


def _seen_curve(runs: list[Path], results: list[dict]) -> bytes:
    """Mean accuracy over the tasks trained so far, after each task, one line per run."""
    fig, ax = P.plt().subplots(figsize=(5.5, 3.4))
    for run, res in zip(runs, results):
        A = np.asarray(res["accuracy_matrix"], dtype=float)  # an unscored cell (None) is NaN
        seen = [A[t, :t].mean() for t in range(1, A.shape[0])]
        ax.plot(range(1, A.shape[0]), seen, marker="o", label=_label(run, res))
    ax.set_xticks(range(1, len(results[0]["sequence"]) + 1), _row_labels(results[0])[1:], rotation=20, ha="right")
    ax.set_ylabel("mean accuracy on seen tasks")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return P.png(fig)


def _probe_curves(res) -> bytes:
    fig, ax = P.plt().subplots(figsize=(5.5, 3.4))
    curve = res["probe_zero_shot_curve"]
    for p in res["probes"]:
        ax.plot(range(len(curve)), [row[p] for row in curve], marker="s", label=p)
    ax.set_xticks(range(len(curve)), _row_labels(res)[:len(curve)], rotation=20, ha="right")
    ax.set_ylabel("zero-shot accuracy")
    ax.set_ylim(0, 1)
    if res["probes"]:
        ax.legend(fontsize=8)
    return P.png(fig)


def _points_curves(res) -> bytes:
    curve = res["evaluation"]["curve"]
    fig, ax = P.plt().subplots(figsize=(6, 3.6))
    zs = res["evaluation"].get("encoder_zero_shot") or {}
    for d in res["evaluation"]["datasets"]:
        line, = ax.plot(range(len(curve)), [p["accuracy"][d] for p in curve], marker="o",
                        label=d + (" (trained)" if d in res["sequence"] else ""))
        if d in zs:
            ax.axhline(zs[d], color=line.get_color(), ls=":", lw=1)
    ax.set_xticks(range(len(curve)), [p["label"] for p in curve], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"score (EMT: {res['evaluation']['emt_mode']})")
    ax.set_ylim(0, 1)
    ax.set_title(f"{res['method']} (dotted: the vision encoder's zero-shot)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return P.png(fig)


def _cf_bars(runs: list[Path], results: list[dict], by_kind: bool = False) -> bytes:
    """Accuracy change per held-out dataset: one bar per run (its first evaluator), or per
    evaluator of a single run (`by_kind`)."""
    probes = sorted({p for res in results for p in res["probes"]})
    if by_kind:
        cf = results[0]["concept_forgetting"]
        bars = [(kind.replace("_", " "), d["delta"]) for kind, d in cf.items() if d.get("delta")]
    else:
        bars = []
        for run, res in zip(runs, results):
            cf = res["concept_forgetting"]
            kind = next((k for k in ("zero_shot", "emt", "linear_probe") if cf.get(k, {}).get("delta")), None)
            bars.append((_label(run, res) + (f" ({kind.replace('_', ' ')})" if kind else ""),
                         cf[kind]["delta"] if kind else {}))
    fig, ax = P.plt().subplots(figsize=(1.5 + 1.3 * max(1, len(probes)), 3.4))
    width = 0.8 / max(1, len(bars))
    for k, (label, delta) in enumerate(bars):
        ax.bar(np.arange(len(probes)) + k * width, [100 * delta.get(p, np.nan) for p in probes], width, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(probes)) + width * (len(bars) - 1) / 2, probes)
    ax.set_ylabel("accuracy change (points)")
    ax.legend(fontsize=8)
    return P.png(fig)
