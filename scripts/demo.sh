#!/usr/bin/env bash
# `make demo`: the main job on the bundled default, end to end. By default the GRPO
# showcase (recipes/grpo.yaml): the bundled model learns 2-digit addition from a verifier
# reward, with its held-out greedy accuracy before and after saved in runs/grpo/.
#   scripts/demo.sh                      # recipes/grpo.yaml
#   scripts/demo.sh recipes/dpo.yaml     # any recipe, then key=value overrides
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
source .venv/bin/activate
recipe=recipes/grpo.yaml
if [[ $# -gt 0 && "$1" == *.yaml ]]; then recipe=$1; shift; fi
out=$(alignment check "$recipe" "$@" | sed -n 's/^output_dir: //p')
alignment model smollm2-135m >/dev/null          # convert the bundled model once
start=$(date +%s)
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no \
    --dynamo_backend no "$recipe" "$@"
echo
echo "wall time: $(( $(date +%s) - start )) s"
echo "before: $out/eval_before.json   after: $out/eval_after.json"
echo "model:  $out/final   curves: $out/curves.png   summary: $out/summary.json"
