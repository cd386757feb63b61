#!/usr/bin/env bash
# `make demo`: the main job on the bundled default model, end to end.
# Until a trainer lands this measures the bundled model's baseline accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
mkdir -p runs/demo
.venv/bin/alignment model smollm2-135m
.venv/bin/alignment eval --model smollm2-135m --data data/arithmetic/rl/test.jsonl \
    --n 200 --output runs/demo/base_eval.json
