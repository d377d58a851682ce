"""Reports: tables across runs and self-contained HTML pages (`page` holds the building blocks)."""

from retain.report.page import pct
from retain.report.compare import comparison_rows, paired_rows
from retain.report.runs import find_runs, format_table, points_rows, write_comparison, write_report

__all__ = ["comparison_rows", "find_runs", "format_table", "paired_rows", "pct", "points_rows",
           "write_comparison", "write_report"]
