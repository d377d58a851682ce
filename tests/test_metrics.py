"""Metrics against accuracy matrices worked out by hand."""

import pytest

from retain import metrics

# Zero-shot row, then after task 1, 2, 3.
A = [
    [0.10, 0.20, 0.30],
    [0.80, 0.25, 0.35],
    [0.60, 0.90, 0.40],
    [0.50, 0.70, 0.95],
]


def test_hand_worked_matrix():
    # MFT: (0.80 + 0.90 + 0.95) / 3
    assert metrics.mean_fine_tuned(A) == pytest.approx(2.65 / 3)
    # MFN: (0.50 + 0.70 + 0.95) / 3
    assert metrics.mean_final(A) == pytest.approx(2.15 / 3)
    # MAA: (0.80 + (0.60 + 0.90) / 2 + (0.50 + 0.70 + 0.95) / 3) / 3
    assert metrics.mean_average_accuracy(A) == pytest.approx((0.80 + 0.75 + 2.15 / 3) / 3)
    # BWT: ((0.50 - 0.80) + (0.70 - 0.90)) / 2 = -0.25
    assert metrics.backward_transfer(A) == pytest.approx(-0.25)
    # forgetting: task 1 max(0.80, 0.60) - 0.50 = 0.30; task 2 0.90 - 0.70 = 0.20
    assert metrics.forgetting(A) == pytest.approx(0.25)
    # forward transfer: task 2 (0.25 - 0.20), task 3 (0.40 - 0.30)
    assert metrics.forward_transfer(A) == pytest.approx(0.075)


def test_forgetting_uses_the_maximum_not_the_diagonal():
    B = [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.9, 0.6, 0.0], [0.4, 0.6, 0.7]]
    # task 1 peaked after task 2 (0.9), so forgetting > -BWT for it
    assert metrics.forgetting(B) == pytest.approx(((0.9 - 0.4) + 0.0) / 2)
    assert metrics.backward_transfer(B) == pytest.approx(((0.4 - 0.5) + 0.0) / 2)


def test_single_task_and_bad_shape():
    assert metrics.backward_transfer([[0.1], [0.9]]) == 0.0
    assert metrics.mean_final([[0.1], [0.9]]) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        metrics.summary([[0.1, 0.2], [0.3, 0.4]])


def test_concept_forgetting_deltas():
    d = metrics.concept_forgetting({"a": 0.8, "b": 0.5}, {"a": 0.6, "b": 0.55})
    assert d == pytest.approx({"a": -0.2, "b": 0.05})
    with pytest.raises(ValueError):
        metrics.concept_forgetting({"a": 0.8}, {"b": 0.5})


def test_comparison_has_a_concept_forgetting_column_only_where_something_was_measured(tmp_path):
    """A run with no held-out EMT datasets must not show a made-up 0.0 delta."""
    from retain.io import write_json
    from retain.report import comparison_rows
    from retain.metrics import delta_summary

    metrics = {"MFT": 0.5, "MFN": 0.4, "MAA": 0.45, "BWT": -0.1, "forgetting": 0.1}
    empty = delta_summary({}, {})
    assert empty["mean_delta"] is None
    for name, cf in (("a", empty), ("b", empty)):
        write_json(tmp_path / name / "results.json", {"method": name, "probes": [], "metrics": metrics,
                                                      "concept_forgetting": {"emt": cf}})
    header, rows = comparison_rows([tmp_path / "a", tmp_path / "b"])
    assert not any("EMT" in h for h in header) and len(rows[0]) == len(header)
    measured = delta_summary({"digits": 0.5, "textile": 0.3}, {"digits": 0.2, "textile": 0.4})
    assert measured["mean_delta"] == pytest.approx(((0.2 - 0.5) + (0.4 - 0.3)) / 2)
    write_json(tmp_path / "b" / "results.json", {"method": "b", "probes": ["digits", "textile"], "metrics": metrics,
                                                 "concept_forgetting": {"emt": measured}})
    header, rows = comparison_rows([tmp_path / "a", tmp_path / "b"])
    col = header.index("EMT delta (mean)")
    assert rows[0][col] is None and rows[1][col] == pytest.approx(-0.1)
    assert rows[1][header.index("EMT delta digits")] == pytest.approx(-0.3)


def test_learned_tasks_needs_both_the_level_and_the_gain_over_zero_shot():
    from retain.metrics import learned_tasks

    A = [[0.0, 0.30, 0.1],
         [0.55, 0.30, 0.1],   # task 0: 55% from 0%: learned
         [0.40, 0.65, 0.1],   # task 1: 65%, 35 points above its zero-shot 30%: learned
         [0.40, 0.60, 0.49]]  # task 2: 49% < 50%: not learned
    assert learned_tasks(A, 0.5, 0.3) == [True, True, False]
    B = [[0.0, 0.40], [0.6, 0.1], [0.5, 0.69]]  # task 1: 69% but 29 points above its zero-shot 40%
    assert learned_tasks(B, 0.5, 0.3) == [True, False]
    assert learned_tasks([[float("nan"), 0.0], [0.9, 0.0], [0.9, 0.9]], 0.5, 0.3) == [None, True]
