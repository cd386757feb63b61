# Both main targets set up the project-local .venv themselves (idempotent).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test test-fast docs docs-build demo demo-dpo lint data bench-dpo bench-grpo bench-pairs bench-rm bench-rollout bench-scaling bench-actor-critic bench-kill bench-layout bench-cost bench-shapes clean

setup:
	bash scripts/setup.sh

# The whole suite; pytest's "no tests collected" (exit 5) is not a failure.
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# Everything but the tests that load the real bundled model or start vLLM.
test-fast: setup
	$(PY) -m pytest -q -m "not bundled and not vllm and not slow" $(PYTEST_ARGS)

# The documentation site (MkDocs Material): built with --strict (no broken link, no page
# left out), then served on http://127.0.0.1:8000. docs-build: build only, into site/.
docs: docs-build
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

docs-build: setup
	$(PY) scripts/recipe_reference.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The main job on the bundled default: the GRPO showcase (recipes/grpo.yaml, ~25 min).
demo: setup
	bash scripts/demo.sh

# DPO on the shipped preference pairs (recipes/dpo.yaml, ~10 min).
demo-dpo: setup
	bash scripts/demo.sh recipes/dpo.yaml

# TRL's DPOTrainer vs ours on the bundled model, same data/batch/dtype/threads, one run.
bench-dpo: setup
	HF_HUB_OFFLINE=1 $(PY) bench/dpo_vs_trl.py --json bench/dpo_vs_trl.json

# TRL's GRPOTrainer vs ours, same GRPO configuration, one run.
bench-grpo: setup
	HF_HUB_OFFLINE=1 $(PY) bench/grpo_vs_trl.py --json bench/grpo_vs_trl.json

# Online DPO vs TRL's OnlineDPOTrainer, online CoPG vs TRL's RLOOTrainer (k = 2), one run.
bench-pairs: setup
	HF_HUB_OFFLINE=1 $(PY) bench/pairs_vs_trl.py --json bench/pairs_vs_trl.json

# Reward-model training vs TRL's RewardTrainer: same pairs, steps, init, LoRA 32 (the
# recipe's set-up); accuracy, tokens/s. RM_INIT: the causal LM both start from.
RM_INIT ?= smollm2-135m
bench-rm: setup
	HF_HUB_OFFLINE=1 $(PY) bench/reward_model_vs_trl.py --model $(RM_INIT) --lora 32 --lr 5e-4 --ours-lr 2e-4 --steps 100 --speed-steps 8 --trl-configs fp32,fp32+len --output bench/reward_model_vs_trl.json

# PPO / APA / DR-PO vs GRPO: s/step at 64 samples per step, time split, peak RSS.
bench-actor-critic: setup
	HF_HUB_OFFLINE=1 $(PY) bench/actor_critic_speed.py --json bench/actor_critic_speed.json

# vLLM vs HF generate tokens/s (batch 32 and 128) and sync_weights time.
bench-rollout: setup
	HF_HUB_OFFLINE=1 $(PY) bench/rollout.py --json bench/rollout.json

# Online samples grouped (prompt once, one row per prompt) vs one row per sample:
# forward+backward time over G and completion lengths, and the layout cost rule (~15 min).
bench-layout: setup
	HF_HUB_OFFLINE=1 $(PY) bench/group_layout.py --json bench/group_layout.json

# GRPO s/step vs completion length and group size, DPO tokens/s vs sequence length, vs TRL.
bench-cost: setup
	HF_HUB_OFFLINE=1 $(PY) bench/cost_growth.py

# Realistic shapes (135M, 360M- and 0.5B-shaped models; 512-2048 tokens): DPO/SFT tokens/s,
# GRPO s/step, ours vs TRL's fastest configuration per point, peak RSS, share of the CPU's
# bf16 GEMM throughput. The whole grid takes hours on 2 cores: narrow it with SHAPES_ARGS,
# e.g. SHAPES_ARGS="--models smollm2-135m --lengths 512 --parts dpo".
SHAPES_ARGS ?=
bench-shapes: setup
	HF_HUB_OFFLINE=1 $(PY) bench/shapes.py --json bench/shapes.json $(SHAPES_ARGS)

# One DPO recipe on 1 process, 2 (DDP), ZeRO-2 and ZeRO-3: s/step, tokens/s.
bench-scaling: setup
	HF_HUB_OFFLINE=1 $(PY) bench/scaling.py --json bench/scaling.json

# SIGKILL DPO and GRPO runs at random moments and mid-step / mid-checkpoint / mid-sync,
# resume, compare with uninterrupted runs (tiny models, ~3 min).
bench-kill: setup
	HF_HUB_OFFLINE=1 $(PY) bench/kill_resume.py --kills 24 --json bench/kill_resume.json

# Every trainer on add2 from its shipped recipe: same samples budget, same seeds, each run
# cached under the hash of its resolved recipe (bench/COMPARISON.md, bench/compare_*.png;
# 3 seeds: about 3 h on 2 cores, from 1 h 57 min measured for 2). compare-quick: the same code path on a tiny random
# model (~2 min; runs/compare-quick/COMPARISON.md).
.PHONY: compare compare-quick
compare: setup
	HF_HUB_OFFLINE=1 $(PY) bench/compare.py

compare-quick: setup
	HF_HUB_OFFLINE=1 $(PY) bench/compare.py --quick

lint: setup
	.venv/bin/ruff check alignment reward_models tests bench data

data:
	python3 data/make_data.py

clean:
	rm -rf runs .pytest_cache
