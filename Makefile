# The README's two commands. Both set everything up from nothing, then run.
.PHONY: setup quickstart test test-slow bench

setup:
	./scripts/setup.sh

quickstart: setup
	.venv/bin/retain run configs/quickstart.yaml

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider tests

# The slow tests: the mini-CLIP build's determinism and sanity, mini-LLaVA smoke builds,
# the SmolLM2 conversion (builds mini-CLIP first when it is not cached: minutes).
test-slow: setup
	RETAIN_SLOW=1 .venv/bin/python -m pytest -q -p no:cacheprovider -m slow tests

bench: setup
	.venv/bin/python bench/run_all.py
