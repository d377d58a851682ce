"""Intervals of a run's scores from its per-item records, and paired comparisons of runs.

A run directory keeps every prediction (`records/row-<t>.jsonl`: row t of the accuracy
matrix, the probes' zero-shot and linear-probe predictions at rows 0 and T). From them
this module recomputes every reported score on bootstrap draws of the test items
(`retain.stats`): the accuracy matrix, the sequence metrics (MFT, MFN, MAA, BWT,
forgetting, forward transfer) and the concept-forgetting deltas, each with its 95%
interval; two runs scored on the same items are compared on the same draws (paired).

An item's score is its `correct` flag (dual encoders, EMT likelihood), its EMT outcome
(a judge error is unscored, never wrong), or its instruction `score` (None: unscored).
Unscored items are left out of a mean, never counted as 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retain import metrics, stats
from retain.errors import RetainError

# concept-forgetting kind -> the evaluator its records carry (MLLM records carry none)
CF_EVALUATORS = {"zero_shot": "probe_zero_shot", "linear_probe": "probe_linear", "emt": None}
TASK_EVALUATORS = ("task_head", None)
CALIBRATED = {"zero_shot": "probe_zero_shot", "linear_probe": "probe_linear"}


def item_score(rec: dict) -> float:
    """One record's score in [0, 1], NaN when it was not scored."""
    if "correct" in rec:
        return float(bool(rec["correct"]))
    if "outcome" in rec:
        return float("nan") if rec["outcome"] == "judge_error" else float(rec["outcome"] == "correct")
    if rec.get("score") is None:
        return float("nan")
    return float(rec["score"])


def read_records(run: Path, name: str) -> list[dict]:
    path = Path(run) / "records" / f"{name}.jsonl"
    if not path.exists():
        raise RetainError(f"{path} is missing: the run's per-item records are needed for its intervals.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _vector(records: list[dict], task: str, evaluators, field: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of one task's records under one evaluator, in item order."""
    evaluators = evaluators if isinstance(evaluators, tuple) else (evaluators,)
    mine = sorted((r for r in records if r.get("task") == task and r.get("evaluator") in evaluators),
                  key=lambda r: r["index"])
    idx = np.asarray([r["index"] for r in mine], dtype=int)
    if field == "score":
        return idx, np.asarray([item_score(r) for r in mine], dtype=float)
    return idx, np.asarray([np.nan if r.get(field) is None else float(r[field]) for r in mine], dtype=float)


def _aligned(vectors: list[tuple[np.ndarray, np.ndarray]], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices, (k, n) stacked scores) of score vectors that must cover the same items."""
    first = vectors[0][0]
    for idx, _ in vectors[1:]:
        if not np.array_equal(idx, first):
            raise RetainError(f"{what} were not scored on the same test items ({len(first)} and {len(idx)} items); "
                              "runs compared item by item need the same eval.limit and test split.")
    return first, np.stack([v for _, v in vectors])


class RunItems:
    """Per-item scores of one finished run, arranged as its results are."""

    def __init__(self, run: Path, res: dict):
        self.run, self.res = Path(run), res
        self.sequence, self.probes = res["sequence"], res["probes"]
        T = len(self.sequence)
        self.index = {}  # group key -> item indices
        self.rows = rows = [read_records(run, f"row-{t}") for t in range(T + 1)]  # every record, read once
        self.tasks = []
        for j, name in enumerate(self.sequence):
            idx, scores = _aligned([_vector(r, name, TASK_EVALUATORS) for r in rows], f"{run}: {name}'s rows")
            self.index[f"task:{j}"] = idx
            self.tasks.append(scores)
        self.cf = {}  # kind -> probe -> (2, n) before/after
        for kind in res.get("concept_forgetting", {}):
            ev = CF_EVALUATORS.get(kind, kind)
            pair = {}
            for p in self.probes:
                before, after = _vector(rows[0], p, ev), _vector(rows[-1], p, ev)
                if len(before[0]) and len(after[0]):
                    self.index[f"cf:{kind}:{p}"], pair[p] = _aligned([before, after], f"{run}: {p} before and after")
            if pair:
                self.cf[kind] = pair

    def groups(self) -> dict[str, np.ndarray]:
        """Score vectors keyed so that the same items of two runs share a key."""
        out = {f"task:{j}": s for j, s in enumerate(self.tasks)}
        out.update({f"cf:{kind}:{p}": s for kind, pair in self.cf.items() for p, s in pair.items()})
        return out

    def statistics(self, means: dict[str, np.ndarray]) -> dict[str, float]:
        """Every reported score from the mean of each score vector ({key: (k,)})."""
        A = np.stack([means[f"task:{j}"] for j in range(len(self.sequence))], axis=1)
        out = {"matrix": A}
        out.update(metrics.summary(A))
        for kind, pair in self.cf.items():
            deltas = {p: means[f"cf:{kind}:{p}"][1] - means[f"cf:{kind}:{p}"][0] for p in pair}
            for p, d in deltas.items():
                out[f"cf:{kind}:{p}"] = d
                out[f"cf:{kind}:{p}:before"], out[f"cf:{kind}:{p}:after"] = means[f"cf:{kind}:{p}"]
            out[f"cf:{kind}:mean"] = float(np.mean(list(deltas.values())))
        return out


METRIC_NAMES = ("MFT", "MFN", "MAA", "BWT", "forgetting", "forward_transfer")


def _draw_statistics(items: RunItems, draws: dict[str, np.ndarray]) -> list[dict]:
    """Every reported score on each bootstrap draw ({key: (R, k)} -> R dicts)."""
    R = len(next(iter(draws.values())))
    return [items.statistics({k: v[r] for k, v in draws.items()}) for r in range(R)]


def run_intervals(run: Path, res: dict, replicates: int = stats.REPLICATES, seed: int = 0,
                  items: RunItems | None = None) -> dict:
    """The `intervals` block of results.json: 95% bootstrap intervals over test items
    (`items`: the run's records when already read)."""
    items = items or RunItems(run, res)
    draws = stats.resample_means(items.groups(), replicates, seed)
    per_draw = _draw_statistics(items, draws)
    out = {"kind": stats.KIND_ITEMS, "level": stats.LEVEL, "replicates": replicates, "seed": seed,
           "items": {name: int(s.shape[1]) for name, s in zip(items.sequence, items.tasks)},
           "accuracy_matrix": stats.percentile_interval(np.stack([d["matrix"] for d in per_draw])),
           "metrics": {m: stats.percentile_interval([d[m] for d in per_draw]) for m in METRIC_NAMES},
           "concept_forgetting": {}}
    for kind, pair in items.cf.items():
        out["concept_forgetting"][kind] = {
            **{when: {p: stats.percentile_interval([d[f"cf:{kind}:{p}:{when}"] for d in per_draw]) for p in pair}
               for when in ("before", "after")},
            "delta": {p: stats.percentile_interval([d[f"cf:{kind}:{p}"] for d in per_draw]) for p in pair},
            "mean_delta": stats.percentile_interval([d[f"cf:{kind}:mean"] for d in per_draw])}
    return out


def evidence(run: Path, res: dict) -> dict:
    """What results.json adds to a finished run's scores: `intervals` and, where the
    predictions carry confidences, `calibration`."""
    items = RunItems(run, res)
    out = {"intervals": run_intervals(run, res, items=items)}
    cal = calibration(run, res, items=items)
    if cal:
        out["calibration"] = cal
    return out


def calibration(run: Path, res: dict, items: RunItems | None = None) -> dict:
    """ECE (15 bins) of the probes' zero-shot and linear-probe predictions before and after
    (`items`: the run's records when already read)."""
    if items is not None:
        first, last = items.rows[0], items.rows[-1]
    else:
        first, last = read_records(run, "row-0"), read_records(run, f"row-{len(res['sequence'])}")
    out = {}
    for kind, ev in CALIBRATED.items():
        before, after = {}, {}
        for p in res["probes"]:
            for rows, store in ((first, before), (last, after)):
                _, conf = _vector(rows, p, ev, field="confidence")
                _, hit = _vector(rows, p, ev)
                if len(conf) and np.isfinite(conf).any():
                    store[p] = stats.expected_calibration_error(conf, hit)
        common = sorted(set(before) & set(after))
        if common:
            delta = {p: after[p] - before[p] for p in common}
            out[kind] = {"bins": stats.ECE_BINS, "before": before, "after": after, "delta": delta,
                         "mean_before": float(np.mean([before[p] for p in common])),
                         "mean_after": float(np.mean([after[p] for p in common])),
                         "mean_delta": float(np.mean(list(delta.values())))}
    return out


def paired_items(run_a: Path, res_a: dict, run_b: Path, res_b: dict, replicates: int = stats.REPLICATES,
                 seed: int = 0, items_b: RunItems | None = None) -> dict[str, tuple[float, list | None]]:
    """Difference (a minus b) of every shared score with its 95% paired bootstrap interval:
    both runs' scores recomputed on the same draws of the same test items (`items_b`: run b's
    records when already read, e.g. a baseline compared with every other run)."""
    a, b = RunItems(run_a, res_a), items_b or RunItems(run_b, res_b)
    if a.sequence != b.sequence:
        raise RetainError(f"{run_a} and {run_b} trained different sequences ({a.sequence} and {b.sequence}).")
    ga, gb = a.groups(), b.groups()
    if set(ga) != set(gb):
        raise RetainError(f"{run_a} and {run_b} measured different scores ({sorted(set(ga) ^ set(gb))}).")
    for k in ga:
        _aligned([(a.index[k], ga[k][0]), (b.index[k], gb[k][0])], f"{run_a} and {run_b} on {k}")
    draws = stats.resample_means({k: np.concatenate([ga[k], gb[k]]) for k in ga}, replicates, seed)
    ka = {k: ga[k].shape[0] for k in ga}
    sa = _draw_statistics(a, {k: v[:, :ka[k]] for k, v in draws.items()})
    sb = _draw_statistics(b, {k: v[:, ka[k]:] for k, v in draws.items()})
    with stats._quiet():
        pa = a.statistics({k: np.nanmean(ga[k], axis=1) for k in ga})
        pb = b.statistics({k: np.nanmean(gb[k], axis=1) for k in gb})
    out = {}
    for name in [*METRIC_NAMES, *sorted(k for k in pa if k.startswith("cf:") and k.count(":") == 2)]:
        if name in pb:
            diffs = [x[name] - y[name] for x, y in zip(sa, sb)]
            out[name] = (float(pa[name] - pb[name]), stats.percentile_interval(diffs))
    return out
