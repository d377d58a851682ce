"""Tables and reports: the comparison table across runs and one self-contained HTML page.

Figures are matplotlib PNGs saved in `figures/` and embedded (base64) in the page, so
`report.html` opens with no network and no other file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from retain.errors import RetainError
from retain.io import read_json, write_text

COLUMNS = [("MFT", "MFT (downstream)"), ("MFN", "MFN"), ("MAA", "MAA"), ("BWT", "BWT"),
           ("forgetting", "forgetting")]


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


CF_KINDS = [("zero_shot", "ZS"), ("linear_probe", "LP"), ("emt", "EMT")]


def comparison_rows(runs: list[Path]) -> tuple[list[str], list[list]]:
    """Header and rows: one row per run, methods as rows."""
    results = [read_json(r / "results.json") for r in runs]
    probes = sorted({p for res in results for p in res["probes"]})
    kinds = [(k, label) for k, label in CF_KINDS  # a kind no run measured on any dataset gets no column
             if any(res.get("concept_forgetting", {}).get(k, {}).get("delta") for res in results)]
    header = ["method"] + [label for _, label in COLUMNS] + [f"{label} delta (mean)" for _, label in kinds]
    header += [f"{kinds[0][1]} delta {p}" for p in probes] if kinds else []
    rows = []
    seeded = [r.name.startswith("seed-") for r in runs]
    for run, res in zip(runs, results):
        cf = res.get("concept_forgetting", {})
        unique = all(seeded) or len(set(r.name for r in runs)) == len(runs)
        row = [res["method"] if unique else str(run)]
        row += [res["metrics"][k] for k, _ in COLUMNS]
        row += [cf.get(k, {}).get("mean_delta") for k, _ in kinds]
        if kinds:
            row += [cf.get(kinds[0][0], {}).get("delta", {}).get(p) for p in probes]
        rows.append(row)
    if all(seeded) and len({row[0] for row in rows}) < len(rows):
        header, rows = ["method", "seeds"] + header[1:], mean_and_spread(rows)
    return header, rows


def mean_and_spread(rows: list[list]) -> list[list]:
    """Rows of one method (several seeds) folded into one: (mean, standard deviation) per cell."""
    out = []
    for method in dict.fromkeys(r[0] for r in rows):
        mine = [r[1:] for r in rows if r[0] == method]
        cells = []
        for column in zip(*mine):
            values = [v for v in column if isinstance(v, (int, float))]
            cells.append((float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
                         if values else None)
        out.append([method, len(mine), *cells])
    return out


def pct(v: float) -> str:
    """A score as a percentage with one decimal ("-0.0" shown as "0.0")."""
    text = f"{100 * v:.1f}"
    return "0.0" if text == "-0.0" else text


def format_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table, numbers as percentages with one decimal."""
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, tuple):
            return f"{pct(v[0])} ± {pct(v[1])}"
        if isinstance(v, float):
            return pct(v)
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_comparison(runs: list[Path], out_dir: Path) -> str:
    """Write comparison.md/.csv/.json and comparison.html into `out_dir`; return the Markdown."""
    header, rows = comparison_rows(runs)
    table = format_table(header, rows)
    note = "Scores in %; deltas are fine-tuned minus pre-trained accuracy (negative = forgetting).\n"
    write_text(out_dir / "comparison.md", table + "\n\n" + note)
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + [[f"{c[0]:.6g} ± {c[1]:.6g}" if isinstance(c, tuple) else c for c in r]
                                          for r in rows])
    write_text(out_dir / "comparison.csv", buf.getvalue())
    write_text(out_dir / "comparison.json", json.dumps({"header": header, "rows": rows, "runs": [str(r) for r in runs]}, indent=2))
    results = [read_json(r / "results.json") for r in runs]
    figs = [(f"accuracy matrix: {res['method']}", _heatmap(res)) for res in results]
    if any(res["probes"] for res in results):
        figs.append(("concept forgetting (accuracy change on held-out datasets)", _cf_bars(results)))
    figs += [(f"scores across fine-tuning: {res['method']}", _points_curves(res)) for res in results if "evaluation" in res]
    body = "<h2>Comparison</h2>" + _html_table(header, rows) + f"<p>{html.escape(note)}</p>"
    emt = [res for res in results if "evaluation" in res]
    if emt:
        h, r = points_rows(emt)
        body += "<h3>Scores at every evaluation point</h3>" + _html_table(h, r)
        write_text(out_dir / "score_curves.md", format_table(h, r) + "\n")
    body += "<div class='grid'>" + "".join(_figure(t, f) for t, f in figs) + "</div>"
    write_text(out_dir / "comparison.html", _page("retain comparison", body))
    return table


def write_report(run: Path) -> Path:
    """Write `report.html` (and figures/) for one finished run."""
    res = read_json(run / "results.json")
    figs = {"accuracy_matrix": _heatmap(res), "task_curves": _curves(res)}
    if "probe_zero_shot_curve" in res:
        figs["probe_curves"] = _probe_curves(res)
    if "evaluation" in res:
        figs["score_curves"] = _points_curves(res)
    (run / "figures").mkdir(exist_ok=True)
    for name, png in figs.items():
        (run / "figures" / f"{name}.png").write_bytes(png)
    m = res["metrics"]
    header = ["MFT", "MFN", "MAA", "BWT", "forgetting", "forward transfer"]
    row = [m["MFT"], m["MFN"], m["MAA"], m["BWT"], m["forgetting"], m["forward_transfer"]]
    body = f"<h2>{html.escape(res['method'])} on {' → '.join(map(html.escape, res['sequence']))}</h2>"
    body += f"<p>model: {html.escape(res['model'])}, seed {res['seed']}</p>"
    body += _html_table(header, [row])
    cf_rows = []
    for kind, d in res["concept_forgetting"].items():
        for p in sorted(d["delta"]):
            cf_rows.append([kind, p, d["before"][p], d["after"][p], d["delta"][p]])
    body += "<h3>Concept forgetting</h3>" + _html_table(["evaluator", "dataset", "pre-trained", "after", "delta"], cf_rows)
    if "evaluation" in res:
        body += _points_section(res)
    titles = {"accuracy_matrix": "accuracy matrix", "task_curves": "per-task accuracy across the sequence",
              "probe_curves": "zero-shot accuracy of held-out datasets across the sequence",
              "score_curves": "score of every evaluated dataset across fine-tuning"}
    body += "<div class='grid'>" + "".join(_figure(titles[k], f) for k, f in figs.items()) + "</div>"
    cfg = (run / "config.yaml").read_text() if (run / "config.yaml").exists() else ""
    body += f"<h3>Resolved config and versions</h3><pre>{html.escape(cfg)}</pre>"
    out = run / "report.html"
    write_text(out, _page(f"retain report: {res['method']}", body))
    return out


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
    out = (f"<h3>Scores at every evaluation point (EMT datasets: {html.escape(res['evaluation']['emt_mode'])} "
           "scoring)</h3>" + _html_table(h, r))
    last = res["evaluation"]["curve"][-1]
    outcomes = list(next(iter(last["counts"].values()), {}))
    rows = [[d, *[last["counts"][d].get(o, 0) for o in outcomes]] for d in last["counts"]]
    out += f"<h3>EMT outcomes {html.escape(last['label'])}</h3>"
    return out + _html_table(["dataset", *[o.replace("_", " ") for o in outcomes]], rows)


# ---- figures -----------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _row_labels(res) -> list[str]:
    return ["zero-shot"] + [f"after {t}" for t in res["sequence"]]


def _heatmap(res) -> bytes:
    plt = _plt()
    A = np.asarray(res["accuracy_matrix"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * A.shape[1], 1.2 + 0.55 * A.shape[0]))
    im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
    for (i, j), v in np.ndenumerate(A):
        ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=9)
    ax.set_xticks(range(A.shape[1]), res["sequence"], rotation=30, ha="right")
    ax.set_yticks(range(A.shape[0]), _row_labels(res))
    ax.set_xlabel("evaluated task")
    ax.set_title(res["method"])
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _png(fig)


def _curves(res) -> bytes:
    plt = _plt()
    A = np.asarray(res["accuracy_matrix"])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for j, t in enumerate(res["sequence"]):
        ax.plot(range(A.shape[0]), A[:, j], marker="o", label=t)
    ax.set_xticks(range(A.shape[0]), _row_labels(res), rotation=20, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return _png(fig)


def _probe_curves(res) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    curve = res["probe_zero_shot_curve"]
    for p in res["probes"]:
        ax.plot(range(len(curve)), [row[p] for row in curve], marker="s", label=p)
    ax.set_xticks(range(len(curve)), _row_labels(res)[:len(curve)], rotation=20, ha="right")
    ax.set_ylabel("zero-shot accuracy")
    ax.set_ylim(0, 1)
    if res["probes"]:
        ax.legend(fontsize=8)
    return _png(fig)


def _points_curves(res) -> bytes:
    plt = _plt()
    curve = res["evaluation"]["curve"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    zs = res["evaluation"].get("encoder_zero_shot") or {}
    for k, d in enumerate(res["evaluation"]["datasets"]):
        line, = ax.plot(range(len(curve)), [p["accuracy"][d] for p in curve], marker="o",
                        label=d + (" (trained)" if d in res["sequence"] else ""))
        if d in zs:
            ax.axhline(zs[d], color=line.get_color(), ls=":", lw=1)
    ax.set_xticks(range(len(curve)), [p["label"] for p in curve], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"score (EMT: {res['evaluation']['emt_mode']})")
    ax.set_ylim(0, 1)
    ax.set_title(f"{res['method']} (dotted: the vision encoder's zero-shot)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return _png(fig)


def _cf_bars(results: list[dict]) -> bytes:
    plt = _plt()
    probes = sorted({p for res in results for p in res["probes"]})
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * max(1, len(probes)), 3.4))
    width = 0.8 / max(1, len(results))
    for k, res in enumerate(results):
        cf = res["concept_forgetting"]
        d = cf.get("zero_shot", cf.get("emt", {})).get("delta", {})
        ax.bar(np.arange(len(probes)) + k * width, [100 * d.get(p, 0.0) for p in probes], width, label=res["method"])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(probes)) + width * (len(results) - 1) / 2, probes)
    ax.set_ylabel("accuracy change (points)")
    ax.legend(fontsize=8)
    return _png(fig)


# ---- HTML --------------------------------------------------------------------------
def _figure(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return (f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _html_table(header, rows) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, tuple):
            return f"{pct(v[0])} ± {pct(v[1])}"
        return pct(v) if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, body: str) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}"
             "img{max-width:560px}pre{background:#f7f7f7;padding:1em;overflow:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")
