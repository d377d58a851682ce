"""The EMT rule matcher against the table of hand-judged answers (tests/eval/emt_judged.yaml).

Writes bench/results/emt_matcher.json: the agreement (answers the matcher scores as the
careful judge did, outcome and class both), the number of answers, the label sets with
their answer counts, and every disagreement; prints the disagreements as markdown.

    .venv/bin/python bench/emt_matcher_table.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from retain.eval.emt_match import agreement, disagreements_markdown

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "eval" / "emt_judged.yaml"
OUT = Path(__file__).parent / "results"


def main() -> None:
    table = yaml.safe_load(TABLE.read_text())
    rate, disagreements = agreement(table)
    res = {"table": str(TABLE.relative_to(ROOT)), "agreement": round(rate, 4), "n": len(table["cases"]),
           "agreed": len(table["cases"]) - len(disagreements),
           "label_sets": dict(Counter(case[0] for case in table["cases"])), "disagreements": disagreements}
    OUT.mkdir(exist_ok=True)
    (OUT / "emt_matcher.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"agreement {res['agreed']}/{res['n']} = {100 * rate:.1f}% over {len(res['label_sets'])} label sets\n")
    print(disagreements_markdown(disagreements))


if __name__ == "__main__":
    main()
