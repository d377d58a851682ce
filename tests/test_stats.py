"""Intervals, paired comparisons and calibration against closed forms and hand-worked cases."""

import json

import numpy as np
import pytest

from retain import intervals, stats
from retain.errors import RetainError


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation():
    # n = 20,000 items, 30% correct: the normal approximation p +- 1.96 sqrt(p(1-p)/n) is exact
    # to well under the bootstrap's own Monte Carlo error (about 3% of the half-width at 2,000 draws).
    n, p = 20_000, 0.3
    scores = np.zeros(n)
    scores[: int(n * p)] = 1.0
    draws = stats.resample_means({"t": scores[None]}, replicates=2000, seed=1)["t"][:, 0]
    lo, hi = stats.percentile_interval(draws)
    half = 1.959964 * np.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.1 * half)
    assert hi == pytest.approx(p + half, abs=0.1 * half)


def test_unscored_items_are_left_out_not_counted_wrong():
    scores = np.array([[1.0, 1.0, np.nan, np.nan]])
    draws = stats.resample_means({"t": scores}, replicates=200, seed=0)["t"][:, 0]
    finite = draws[np.isfinite(draws)]
    assert np.all(finite == 1.0)  # every draw that holds a scored item is all correct
    assert intervals.item_score({"outcome": "judge_error"}) != intervals.item_score({"outcome": "judge_error"})  # NaN
    assert intervals.item_score({"score": None}) != intervals.item_score({"score": None})
    assert intervals.item_score({"outcome": "wrong_class"}) == 0.0 and intervals.item_score({"correct": True}) == 1.0


def test_seed_interval_is_the_t_interval():
    mean, lo, hi = stats.seed_interval([1.0, 2.0, 3.0])  # mean 2, s 1, t(0.975, 2) = 4.302653
    assert mean == 2.0
    assert hi - mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert lo == pytest.approx(2 * mean - hi, rel=1e-12)
    assert stats.seed_interval([0.5])[1:] == (None, None)


def test_expected_calibration_error_hand_worked():
    # bins of width 1/15: 0.95 -> bin 14, 0.65 -> bin 9, 0.25 -> bin 3
    # ECE = 2/5 |0.5 - 0.95| + 2/5 |1 - 0.65| + 1/5 |0 - 0.25| = 0.18 + 0.14 + 0.05
    conf = [0.95, 0.95, 0.65, 0.65, 0.25]
    hit = [1, 0, 1, 1, 0]
    assert stats.expected_calibration_error(conf, hit) == pytest.approx(0.37, abs=1e-12)
    assert stats.expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0  # perfectly calibrated
    assert stats.expected_calibration_error([np.nan], [1]) is None


# ---- synthetic run directories -------------------------------------------------------
def _write_run(path, rows, probes=None):
    """rows[t][task] = list of correct flags; probes = {kind_evaluator: (before, after)} per probe."""
    (path / "records").mkdir(parents=True)
    sequence = list(rows[0])
    probes = probes or {}
    for t, row in enumerate(rows):
        recs = [{"task": task, "evaluator": "task_head", "index": i, "correct": bool(c)}
                for task, flags in row.items() for i, c in enumerate(flags)]
        for (probe, evaluator), (before, after) in probes.items():
            flags = before if t == 0 else after if t == len(rows) - 1 else None
            if flags is not None:
                recs += [{"task": probe, "evaluator": evaluator, "index": i, "correct": bool(c[0]),
                          "confidence": c[1]} for i, c in enumerate(flags)]
        (path / "records" / f"row-{t}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    A = [[float(np.mean(row[task])) for task in sequence] for row in rows]
    res = {"method": "m", "sequence": sequence, "probes": sorted({p for p, _ in probes}), "accuracy_matrix": A,
           "concept_forgetting": {"zero_shot": {}} if probes else {}}
    return res


def _flags(n, k, rng):
    out = np.zeros(n, dtype=bool)
    out[rng.choice(n, k, replace=False)] = True
    return out.tolist()


def test_run_intervals_hold_the_reported_scores_and_pair_rows(tmp_path):
    from retain import metrics

    rng = np.random.default_rng(0)
    a0, b0 = _flags(400, 40, rng), _flags(300, 30, rng)
    a1 = _flags(400, 320, rng)
    a2 = [x or (i % 10 == 0) for i, x in enumerate(a1[:])]  # task a after task b: a little changed
    a2 = [False if i % 7 == 0 else x for i, x in enumerate(a2)]
    b1, b2 = _flags(300, 45, rng), _flags(300, 240, rng)
    before = [(bool(x), 0.9) for x in _flags(500, 400, rng)]
    after = [(c if i % 4 else False, p) for i, (c, p) in enumerate(before)]  # a quarter of the items forgotten
    res = _write_run(tmp_path, [{"a": a0, "b": b0}, {"a": a1, "b": b1}, {"a": a2, "b": b2}],
                     {("fmnist", "probe_zero_shot"): (before, after)})
    out = intervals.run_intervals(tmp_path, res, replicates=1000)
    assert out["kind"] == stats.KIND_ITEMS and out["items"] == {"a": 400, "b": 300}
    summary = metrics.summary(np.asarray(res["accuracy_matrix"]))
    for name, value in summary.items():
        lo, hi = out["metrics"][name]
        assert lo <= value <= hi, name
    for (i, j), v in np.ndenumerate(np.asarray(res["accuracy_matrix"])):
        lo, hi = out["accuracy_matrix"][i][j]
        assert lo <= v <= hi
    # BWT is paired over the same items of task a: far narrower than two independent proportions
    lo, hi = out["metrics"]["BWT"]
    independent = 2 * 1.96 * np.sqrt(2 * 0.8 * 0.2 / 400)
    assert hi - lo < 0.75 * independent  # paired: about 0.61 of it here; unpaired draws would give about 1.0
    delta = float(np.mean([c for c, _ in after]) - np.mean([c for c, _ in before]))
    lo, hi = out["concept_forgetting"]["zero_shot"]["mean_delta"]
    assert lo <= delta <= hi < 0
    for when, items in (("before", before), ("after", after)):
        lo, hi = out["concept_forgetting"]["zero_shot"][when]["fmnist"]
        assert lo <= np.mean([c for c, _ in items]) <= hi
    cal = intervals.calibration(tmp_path, res)["zero_shot"]
    # every confidence is 0.9: one bin, ECE = |accuracy - 0.9|
    for when, items in (("before", before), ("after", after)):
        assert cal[when]["fmnist"] == pytest.approx(abs(np.mean([c for c, _ in items]) - 0.9), abs=1e-9)


def test_paired_items_recovers_a_known_difference_and_says_noise_where_there_is_none(tmp_path):
    rng = np.random.default_rng(3)
    n = 1000
    base = np.asarray(_flags(n, 600, rng))
    better = base.copy()
    better[np.flatnonzero(~base)[:100]] = True  # 100 more items right: +0.10 exactly, same items otherwise
    zeros = [False] * n
    res_a = _write_run(tmp_path / "a", [{"t": zeros}, {"t": better.tolist()}])
    res_b = _write_run(tmp_path / "b", [{"t": zeros}, {"t": base.tolist()}])
    d, (lo, hi) = intervals.paired_items(tmp_path / "a", res_a, tmp_path / "b", res_b, replicates=1000)["MFT"]
    assert d == pytest.approx(0.10, abs=1e-12)
    assert lo <= 0.10 <= hi and lo > 0.05
    # paired: the interval of the difference is far narrower than the items' own spread allows unpaired
    assert hi - lo < 0.5 * 2 * 1.96 * np.sqrt(2 * 0.65 * 0.35 / n)
    assert not stats.within_noise([lo, hi])
    same = _write_run(tmp_path / "c", [{"t": zeros}, {"t": base.tolist()}])
    d, ci = intervals.paired_items(tmp_path / "c", same, tmp_path / "b", res_b, replicates=500)["MFT"]
    assert d == 0 and stats.within_noise(ci)


def test_runs_on_different_items_are_not_paired(tmp_path):
    from retain.errors import RetainError

    res_a = _write_run(tmp_path / "a", [{"t": [True] * 10}, {"t": [True] * 10}])
    res_b = _write_run(tmp_path / "b", [{"t": [True] * 12}, {"t": [True] * 12}])
    with pytest.raises(RetainError, match="same test items"):
        intervals.paired_items(tmp_path / "a", res_a, tmp_path / "b", res_b, replicates=10)


def test_paired_over_seeds_is_the_t_interval_of_per_seed_differences(tmp_path):
    from retain.io import write_json
    from retain.report.compare import comparison_rows, paired_rows

    # ldifs forgets 20 points less than finetune on every seed, give or take 1; MFT the same on average
    runs, results = [], []
    for method, zs, mft in (("finetune", [-0.30, -0.28, -0.33], [0.86, 0.85, 0.87]),
                            ("ldifs", [-0.09, -0.09, -0.12], [0.85, 0.86, 0.87])):
        for seed, (z, m) in enumerate(zip(zs, mft)):
            run = tmp_path / method / f"seed-{seed}"
            res = {"method": method, "seed": seed, "sequence": ["a"], "probes": ["p"],
                   "metrics": {"MFT": m, "MFN": m, "MAA": m, "BWT": 0.0, "forgetting": 0.0},
                   "concept_forgetting": {"zero_shot": {"delta": {"p": z}, "mean_delta": z}}}
            write_json(run / "results.json", res)
            runs.append(run)
            results.append(res)
    header, rows, how = paired_rows(runs, results, "finetune")
    assert "3 shared seeds" in how and [r[0] for r in rows] == ["ldifs"]
    zs = rows[0][header.index("ZS delta (mean) minus finetune")]
    diffs = [0.21, 0.19, 0.21]
    mean, lo, hi = stats.seed_interval(diffs)
    assert zs.value == pytest.approx(0.20333333333333334) and (zs[1], zs[2]) == pytest.approx((lo, hi))
    assert lo > 0 and zs.noise is False  # separated from zero
    mft = rows[0][header.index("MFT minus finetune")]
    assert mft.value == pytest.approx(0.0, abs=1e-12) and mft.noise is True  # within noise
    header, rows = comparison_rows(runs, results)
    assert header[1] == "seeds" and rows[0][1] == 3 and rows[0][-1] == "t-interval over seeds (3)"


def test_runs_from_different_builds_or_models_are_not_paired(tmp_path):
    """A rebuild of a zoo model on another CPU can differ (mini-LLaVA did: a87ab56c against
    9ebc3fba); a difference between runs that started from different weights holds the
    weights' difference too, so it is refused, by name, over seeds and over items alike."""
    from retain.errors import RetainError
    from retain.io import write_json
    from retain.report import write_comparison
    from retain.report.compare import paired_rows

    def build(sha):
        return {"name": "mini-llava", "recipe_hash": "82e482ba2cc7", "sha256": {"model.safetensors": sha}}

    made = []

    def runs_of(builds: dict, models: dict | None = None, seeds=(0, 1)):
        made.append(1)
        runs, results = [], []
        for method, sha in builds.items():
            for seed in seeds:
                run = tmp_path / f"set-{len(made)}" / method / f"seed-{seed}"
                res = {"method": method, "seed": seed, "model": (models or {}).get(method, "mini-llava"),
                       "accuracy_matrix": [[0.1], [0.5 + seed / 10]],
                       "model_build": build(sha), "sequence": ["a"], "probes": [],
                       "metrics": {"MFT": 0.5 + seed / 10, "MFN": 0.5, "MAA": 0.5, "BWT": 0.0, "forgetting": 0.0},
                       "concept_forgetting": {}}
                write_json(run / "results.json", res)
                runs.append(run)
                results.append(res)
        return runs, results

    runs, results = runs_of({"lora_ft": "9ebc3fba" * 8, "olora": "9ebc3fba" * 8})
    header, rows, how = paired_rows(runs, results, "lora_ft")
    assert "2 shared seeds" in how and rows[0][header.index("MFT minus lora_ft")].value == pytest.approx(0)
    runs, results = runs_of({"lora_ft": "9ebc3fba" * 8, "olora": "a87ab56c" * 8})
    with pytest.raises(RetainError, match="different builds of mini-llava .*a87ab56ca87a.* and .*9ebc3fba9ebc"):
        paired_rows(runs, results, "lora_ft")
    one = [0]  # one seed each: paired over the test items, refused before any record is read
    runs, results = runs_of({"lora_ft": "9ebc3fba" * 8, "olora": "a87ab56c" * 8}, seeds=one)
    with pytest.raises(RetainError, match="different builds"):
        paired_rows(runs, results, "lora_ft")
    runs, results = runs_of({"finetune": "9ebc3fba" * 8, "ldifs": "a87ab56c" * 8}, seeds=one)
    md = write_comparison(runs, tmp_path / "cmp")  # the table still, and why there is no paired one
    assert "| ldifs |" in md and "No paired differences" in md and "different builds" in md
    assert "a87ab56ca87a" in (tmp_path / "cmp" / "comparison.html").read_text()  # the runs' builds are named
    with pytest.raises(RetainError, match="different builds"):  # asked for by name: refused
        write_comparison(runs, tmp_path / "cmp", baseline="finetune")
    runs, results = runs_of({"lora_ft": "9ebc3fba" * 8, "olora": "9ebc3fba" * 8},
                            models={"olora": "hf:llava-hf/llava-1.5-7b-hf"}, seeds=one)
    with pytest.raises(RetainError, match="trained hf:llava-hf.* and .* trained mini-llava: paired differences need one starting model"):
        paired_rows(runs, results, "lora_ft")


def test_runs_without_records_are_compared_without_paired_differences(tmp_path):
    from retain.errors import RetainError
    from retain.io import write_json
    from retain.report import write_comparison

    for name in ("finetune", "ldifs"):  # finished before per-item records were kept
        write_json(tmp_path / name / "results.json", {
            "method": name, "seed": 0, "model": "m", "sequence": ["a"], "probes": [], "accuracy_matrix": [[0.1], [0.8]],
            "metrics": {"MFT": 0.8, "MFN": 0.8, "MAA": 0.8, "BWT": 0.0, "forgetting": 0.0}, "concept_forgetting": {}})
    runs = [tmp_path / "finetune", tmp_path / "ldifs"]
    md = write_comparison(runs, tmp_path)
    assert "| ldifs |" in md and "No paired differences" in md and "records" in md
    with pytest.raises(RetainError, match="records"):  # asked for by name: the reason, not a silent table
        write_comparison(runs, tmp_path, baseline="finetune")


def test_mcnemar_exact_against_the_binomial_test():
    from scipy.stats import binomtest

    # 36 against 25 discordant items: 2 * P(X <= 25), X ~ Bin(61, 1/2) = 115310233177346785 / 2**59
    assert stats.mcnemar_exact(36, 25) == pytest.approx(115310233177346785 / 2 ** 59, rel=1e-12)
    assert stats.mcnemar_exact(36, 25) == pytest.approx(0.2000313685, rel=1e-9)
    for b, c in [(36, 25), (30, 10), (6, 0), (5, 0), (3, 4), (700, 600), (41, 80)]:
        assert stats.mcnemar_exact(b, c) == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
        assert stats.mcnemar_exact(b, c) == stats.mcnemar_exact(c, b)
    assert stats.mcnemar_exact(30, 10) < 0.01  # a change that must be detected
    assert stats.mcnemar_exact(6, 0) == 1 / 32 and stats.mcnemar_exact(5, 0) == 1 / 16  # 6 of 6 rejects, 5 of 5 not
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(12, 12) == 1.0


def test_mcnemar_counts_the_discordant_items_of_the_same_answers():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 0, 1, 1, 0, 0, 0], dtype=bool)
    r = stats.mcnemar(a, b)
    assert (r["n"], r["both"], r["neither"], r["a_only"], r["b_only"]) == (10, 3, 2, 4, 1)
    assert r["p"] == pytest.approx(2 * (1 + 5) / 2 ** 5)  # 2 P(X <= 1), X ~ Bin(5, 1/2)
    # the smallest gap that 61 discordant items need: it rejects, two fewer does not
    g = stats.mcnemar(np.r_[np.ones(31, bool), np.zeros(30, bool)], np.r_[np.zeros(31, bool), np.ones(30, bool)])
    gap = g["significant_gap"]
    assert g["a_only"] + g["b_only"] == 61 and gap % 2 == 1
    assert stats.mcnemar_exact((61 + gap) // 2, (61 - gap) // 2) < 0.05
    assert stats.mcnemar_exact((61 + gap - 2) // 2, (61 - gap + 2) // 2) >= 0.05
    assert gap == 17  # 39 against 22: p = 0.040; 38 against 23: p = 0.072
    assert stats.mcnemar(np.ones(5, bool), np.zeros(5, bool))["significant_gap"] is None  # 5 of 5 cannot reject
    with pytest.raises(RetainError, match="same items"):
        stats.mcnemar(a, b[:-1])


def test_ranking_stability_orders_each_seed_and_measures_agreement_by_kendall_tau():
    from retain.report.compare import ranking_stability

    same = {0: {"a": 0.9, "b": 0.5, "c": 0.1}, 1: {"a": 0.8, "b": 0.6, "c": 0.2}}
    r = ranking_stability(same)
    assert r["by_seed"] == {0: ["a", "b", "c"], 1: ["a", "b", "c"]} and r["mean_tau"] == pytest.approx(1.0)
    # one swap of the lowest two of four: tau = (5 concordant - 1 discordant) / 6
    swapped = {0: {"a": 4, "b": 3, "c": 2, "d": 1}, 1: {"a": 4, "b": 3, "c": 1, "d": 2},
               2: {"a": 1, "b": 2, "c": 3, "d": 4}}
    r = ranking_stability(swapped)
    taus = {tuple(t["seeds"]): t["tau"] for t in r["kendall_tau"]}
    assert taus[(0, 1)] == pytest.approx(4 / 6) and taus[(0, 2)] == pytest.approx(-1.0)
    assert taus[(1, 2)] == pytest.approx(-4 / 6)
    assert r["mean_tau"] == pytest.approx((4 / 6 - 1 - 4 / 6) / 3)
    # rows missing from a seed (or unscored) are left out of its pairs; fewer than 3 shared: no tau
    r = ranking_stability({0: {"a": 1, "b": 2, "c": 3}, 1: {"a": 1, "b": None, "c": 3}})
    assert r["by_seed"][1] == ["c", "a"] and r["kendall_tau"] == [] and r["mean_tau"] is None
