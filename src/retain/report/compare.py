"""Runs side by side with their uncertainty: the comparison table, paired differences
against a baseline method, and the downstream-accuracy against concept-forgetting plot.

A run alone carries 95% intervals by bootstrap over its test items (results.json's
`intervals`, `retain.intervals`). Seed repeats of one method (`<label>/seed-<s>/`) fold
into one row: the mean and its t-interval over seeds. Paired differences against the
baseline use the same pairing: the same seeds (t-interval of per-seed differences) when
both sides have seed repeats, otherwise the same test items (one bootstrap draw shared
by both runs). A difference whose interval holds zero is marked "≈" (within noise).
Pairing needs one starting model: runs that trained different models, or different builds
of one zoo model (its weights' hash in results.json's `model_build`: a rebuild on another
CPU can differ), are not paired.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retain import stats
from retain.report import page as P

COLUMNS = [("MFT", "MFT (downstream)"), ("MFN", "MFN"), ("MAA", "MAA"), ("BWT", "BWT"),
           ("forgetting", "forgetting")]
CF_KINDS = [("zero_shot", "ZS"), ("linear_probe", "LP"), ("emt", "EMT")]
PAIRED = [("MFT", "MFT"), ("MFN", "MFN"), ("MAA", "MAA"), ("BWT", "BWT")]


def label_of(res: dict) -> str:
    """A run's row name: its sweep label (ldifs-alpha-100) or its method."""
    return res.get("label") or res["method"]


def run_values(res: dict) -> dict[str, P.Estimate]:
    """Every score of a run that tables show, by key (as retain.intervals names them), with
    its item-bootstrap interval where results.json has one."""
    iv = res.get("intervals") or {}
    out = {}
    for m in [k for k, _ in COLUMNS] + ["forward_transfer"]:
        if m in res.get("metrics", {}):
            out[m] = _estimate(res["metrics"][m], iv.get("metrics", {}).get(m))
    for kind, d in res.get("concept_forgetting", {}).items():
        kiv = iv.get("concept_forgetting", {}).get(kind, {})
        if d.get("mean_delta") is not None:
            out[f"cf:{kind}:mean"] = _estimate(d["mean_delta"], kiv.get("mean_delta"))
        for p, v in (d.get("delta") or {}).items():
            out[f"cf:{kind}:{p}"] = _estimate(v, kiv.get("delta", {}).get(p))
            for when in ("before", "after"):
                if (d.get(when) or {}).get(p) is not None:
                    out[f"cf:{kind}:{p}:{when}"] = _estimate(d[when][p], kiv.get(when, {}).get(p))
    return out


def _estimate(value, interval, noise=None) -> P.Estimate:
    lo, hi = (interval or (None, None))[:2]
    return P.Estimate(value, lo, hi, noise)


def groups(runs: list[Path], results: list[dict]) -> dict[str, list[tuple[Path, dict]]]:
    """Runs by row name; several runs under one name are seed repeats."""
    out: dict[str, list] = {}
    unique = len({label_of(r) for r in results}) == len(results) or all(r.name.startswith("seed-") for r in runs)
    for run, res in zip(runs, results):
        out.setdefault(label_of(res) if unique else str(run), []).append((run, res))
    return out


def folded(members: list[tuple[Path, dict]]) -> tuple[dict[str, P.Estimate], str]:
    """One row's scores: a single run with its item intervals, or seed repeats as mean and t-interval."""
    if len(members) == 1:
        res = members[0][1]
        return run_values(res), (res.get("intervals") or {}).get("kind", "none")
    values = [run_values(res) for _, res in members]
    keys = [k for k in values[0] if all(k in v for v in values)]
    out = {}
    for k in keys:
        mean, lo, hi = stats.seed_interval([v[k].value for v in values])
        out[k] = P.Estimate(mean, lo, hi)
    return out, f"{stats.KIND_SEEDS} ({len(members)})"


def comparison_rows(runs: list[Path], results: list[dict] | None = None) -> tuple[list[str], list[list]]:
    """Header and rows: one row per method (or sweep setting), scores with their intervals."""
    from retain.io import read_json

    results = results or [read_json(r / "results.json") for r in runs]
    probes = sorted({p for res in results for p in res["probes"]})
    kinds = [(k, label) for k, label in CF_KINDS  # a kind no run measured on any dataset gets no column
             if any(res.get("concept_forgetting", {}).get(k, {}).get("delta") for res in results)]
    grouped = groups(runs, results)
    seeded = any(len(m) > 1 for m in grouped.values())
    header = ["method"] + (["seeds"] if seeded else []) + [label for _, label in COLUMNS]
    header += [f"{label} delta (mean)" for _, label in kinds]
    header += [f"{kinds[0][1]} delta {p}" for p in probes] if kinds else []
    header += ["95% interval"]
    rows = []
    for name, members in grouped.items():
        values, kind = folded(members)
        row = [name] + ([len(members)] if seeded else [])
        row += [_plain(values.get(k)) for k, _ in COLUMNS]
        row += [_plain(values.get(f"cf:{k}:mean")) for k, _ in kinds]
        if kinds:
            row += [_plain(values.get(f"cf:{kinds[0][0]}:{p}")) for p in probes]
        rows.append(row + [kind])
    return header, rows


def _plain(e: P.Estimate | None):
    """An Estimate with an interval, or the bare value (None when not measured)."""
    if e is None or e.value is None:
        return None
    return e if e.interval is not None else float(e.value)


def default_baseline(results: list[dict]) -> str | None:
    names = [label_of(r) for r in results]
    return "finetune" if "finetune" in names else None


def weights_of(res: dict) -> str | None:
    """The zoo build's weights hash a run started from (None outside the zoo, or for a run from
    before builds were recorded)."""
    sha = (res.get("model_build") or {}).get("sha256")
    return " ".join(f"{name} {h[:12]}" for name, h in sorted(sha.items())) if sha else None


def check_same_start(run: Path, res: dict, brun: Path, bres: dict) -> None:
    """Refuse to pair two runs that did not start from the same model: the difference would
    hold the models' difference as well as the methods'."""
    from retain.errors import RetainError

    a, b = res.get("model"), bres.get("model")
    if a != b:
        raise RetainError(f"{run} trained {a} and {brun} trained {b}: paired differences need one starting "
                          "model. Compare them without a baseline.")
    wa, wb = weights_of(res), weights_of(bres)
    if wa and wb and wa != wb:
        raise RetainError(f"{run} and {brun} trained different builds of {a} (weights {wa} and {wb}; a rebuild on "
                          "another CPU can differ): paired differences need one starting model. Rerun one of them "
                          "on the other's build (`retain zoo list` names the cached one), or compare without a baseline.")


def paired_rows(runs: list[Path], results: list[dict], baseline: str) -> tuple[list[str], list[list], str]:
    """Differences (row minus `baseline`) with their paired 95% intervals, and how they were paired."""
    from retain.errors import RetainError, suggest
    from retain.intervals import RunItems, paired_items

    grouped = groups(runs, results)
    if baseline not in grouped:
        raise RetainError(f"Baseline {baseline!r} is not among the compared runs ({', '.join(grouped)}).{suggest(baseline, grouped)} "
                          "Give --baseline one of them.")
    kinds = [(k, label) for k, label in CF_KINDS if any(f"cf:{k}:mean" in run_values(r) for r in results)]
    cols = PAIRED + [(f"cf:{k}:mean", f"{label} delta (mean)") for k, label in kinds]
    base = grouped[baseline]
    header = ["method", *[f"{label} minus {baseline}" for _, label in cols]]
    rows, how, base_items = [], set(), None
    for name, members in grouped.items():
        if name == baseline:
            continue
        if len(members) > 1 and len(base) > 1:
            by_seed = {res["seed"]: (brun, res) for brun, res in base}
            shared = [(run, res, *by_seed[res["seed"]]) for run, res in members if res["seed"] in by_seed]
            for pair in shared:
                check_same_start(*pair)
            pairs = [(run_values(res), run_values(bres)) for _, res, _, bres in shared]
            if len(pairs) < 2:
                raise RetainError(f"{name} and {baseline} share fewer than 2 seeds: nothing to pair over seeds.")
            cells = []
            for key, _ in cols:
                mean, lo, hi = stats.seed_interval([a[key].value - b[key].value for a, b in pairs
                                                    if key in a and key in b])
                cells.append(P.Estimate(mean, lo, hi, stats.within_noise(None if lo is None else (lo, hi))))
            how.add(f"paired over {len(pairs)} shared seeds ({stats.KIND_SEEDS})")
        else:
            (run, res), (brun, bres) = members[0], base[0]
            check_same_start(run, res, brun, bres)
            base_items = base_items or RunItems(brun, bres)  # the baseline's records, read once for every row
            d = paired_items(run, res, brun, bres, seed=0, items_b=base_items)
            cells = [P.Estimate(d[k][0], *(d[k][1] or (None, None)), stats.within_noise(d[k][1])) if k in d else None
                     for k, _ in cols]
            how.add(f"paired over the same test items ({stats.KIND_ITEMS}, {stats.REPLICATES} draws)")
        rows.append([name, *cells])
    return header, rows, "; ".join(sorted(how))


def tradeoff_figure(runs: list[Path], results: list[dict]) -> bytes | None:
    """Downstream accuracy (MFT) against concept forgetting (zero-shot mean delta, or the
    first kind measured), one point per method and setting, with 95% interval bars: the
    LDIFS paper's picture. None when no run measured concept forgetting."""
    grouped = groups(runs, results)
    kind = next((k for k, _ in CF_KINDS if any(f"cf:{k}:mean" in run_values(r) for r in results)), None)
    if kind is None:
        return None
    fig, ax = P.plt().subplots(figsize=(6.4, 4.4))
    families: dict[str, str] = {}
    for name, members in grouped.items():
        values, _ = folded(members)
        x, y = values.get(f"cf:{kind}:mean"), values.get("MFT")
        if x is None or y is None or x.value is None:
            continue
        family = members[0][1]["method"]
        color = families.setdefault(family, f"C{len(families) % 10}")
        xerr = None if x.interval is None else [[100 * (x.value - x[1])], [100 * (x[2] - x.value)]]
        yerr = None if y.interval is None else [[100 * (y.value - y[1])], [100 * (y[2] - y.value)]]
        ax.errorbar([100 * x.value], [100 * y.value], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3,
                    label=family if family not in ax.get_legend_handles_labels()[1] else None)
        if name != family:
            ax.annotate(name[len(family) + 1:] if name.startswith(family + "-") else name,
                        (100 * x.value, 100 * y.value), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(0, color="k", lw=0.6)
    label = dict(CF_KINDS)[kind]
    ax.set_xlabel(f"concept forgetting: {label} accuracy change on held-out datasets (points; right is better)")
    ax.set_ylabel("downstream accuracy: MFT (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return P.png(fig)


def calibration_rows(runs: list[Path], results: list[dict]) -> tuple[list[str], list[list]]:
    """ECE of the probes' predictions before and after, per row (seed repeats averaged)."""
    header = ["method", "evaluator", "ECE pre-trained", "ECE after", "ECE change"]
    rows = []
    for name, members in groups(runs, results).items():
        for kind in ("zero_shot", "linear_probe"):
            cal = [res.get("calibration", {}).get(kind) for _, res in members]
            if all(cal):
                rows.append([name, kind.replace("_", " "), *[float(np.mean([c[k] for c in cal]))
                                                             for k in ("mean_before", "mean_after", "mean_delta")]])
    return header, rows


def ranking_stability(scores_by_seed: dict[int, dict[str, float]]) -> dict:
    """Rows ranked by a score within each seed (best first), and Kendall's tau between every
    pair of seeds over the rows both have (at least 3): 1 is the same order, 0 unrelated.
    `scores_by_seed`: seed -> {row name: score}; a None score is left out."""
    import itertools

    from scipy.stats import kendalltau

    by_seed = {s: {k: v for k, v in d.items() if v is not None} for s, d in sorted(scores_by_seed.items())}
    order = {s: sorted(d, key=lambda k: (-d[k], k)) for s, d in by_seed.items()}
    taus = []
    for a, b in itertools.combinations(by_seed, 2):
        shared = sorted(set(by_seed[a]) & set(by_seed[b]))
        if len(shared) >= 3:
            tau = float(kendalltau([by_seed[a][k] for k in shared], [by_seed[b][k] for k in shared]).statistic)
            taus.append({"seeds": [a, b], "rows": len(shared), "tau": None if np.isnan(tau) else tau})
    scored = [t["tau"] for t in taus if t["tau"] is not None]
    return {"by_seed": order, "kendall_tau": taus, "mean_tau": float(np.mean(scored)) if scored else None}

