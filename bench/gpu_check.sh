#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): retain's runs on CUDA in bf16 against the CPU in float32,
# with throughput and peak memory. On a machine where `make setup` ran it uses .venv; on one
# where it did not (a lent GPU machine with its own torch), the system python3 with src/ on the path.
#   bench/gpu_check.sh            # on a GPU machine; results in bench/results/gpu_check.json
#   bench/gpu_check.sh --dry      # the same check on the CPU, tiny models and budgets (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PY" bench/gpu_check.py "$@"
