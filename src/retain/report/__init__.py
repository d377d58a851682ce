"""Reports: tables across runs and self-contained HTML pages (`page` holds the building blocks)."""

from retain.report.page import pct
from retain.report.runs import (comparison_rows, find_runs, format_table, mean_and_spread, points_rows,
                                write_comparison, write_report)

__all__ = ["comparison_rows", "find_runs", "format_table", "mean_and_spread", "pct", "points_rows",
           "write_comparison", "write_report"]
