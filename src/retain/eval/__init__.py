"""Evaluators: functions of (model, task) -> scores and per-item records."""
