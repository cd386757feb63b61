#!/usr/bin/env bash
# `make demo`: the main job on the bundled default, end to end:
# DPO on the shipped arithmetic preference pairs, with the held-out exact-answer accuracy
# of the base model (before) and of the result (after) printed and saved in runs/dpo/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
source .venv/bin/activate
alignment model smollm2-135m >/dev/null          # convert the bundled model once
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no \
    --dynamo_backend no recipes/dpo.yaml "$@"
echo
echo "before: runs/dpo/eval_before.json   after: runs/dpo/eval_after.json"
echo "model:  runs/dpo/final   curves: runs/dpo/curves.png   summary: runs/dpo/summary.json"
