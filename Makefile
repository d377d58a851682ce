# The README's two commands. Both set everything up from nothing, then run.
.PHONY: setup quickstart test bench

setup:
	./scripts/setup.sh

quickstart: setup
	.venv/bin/retain run configs/quickstart.yaml

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider tests

bench: setup
	.venv/bin/python bench/run_all.py
