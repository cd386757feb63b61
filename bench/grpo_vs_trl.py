"""GRPO training speed and memory: TRL's GRPOTrainer vs ours, same run, same everything.

    python bench/grpo_vs_trl.py                          # bf16 and fp32, 8 steps each
    python bench/grpo_vs_trl.py --dtypes bf16 --steps 12
    python bench/grpo_vs_trl.py --our-backend hf         # HF generate vs HF generate
    python bench/grpo_vs_trl.py --prompts-per-step 8 --generations 8 --new-tokens 16

Both trainers get: the bundled SmolLM2-135M-Instruct (the same local HF folder), the first
steps x 2 rows of data/arithmetic/add2/train.jsonl as conversational prompts ([{"role":
"user", "content": prompt}] through the model's chat template, which adds its default system
line on both sides: identical prompt tokens), 2 prompts x 4 generations per step (8
sequences, one micro-batch; --prompts-per-step, --generations), at most 32 new tokens
(--new-tokens), temperature 1.0, top-p 1, no top-k;
reward = exact answer (ours: the recipe's `exact_answer` scorer; TRL: a reward function
calling `reward_models.is_correct`, which is what that scorer uses); group-normalised
advantages (std-scaled), β = 0 (no reference model), clip ε = 0.2, μ = 1 update per batch,
loss aggregation "grpo" (mean over sequences of per-sequence token means) on both sides;
AdamW, lr 1e-5 constant, grad-norm clip 1.0, no gradient checkpointing (TRL's GRPOConfig
turns it on by default: turned off here), the same dtype and thread count, no eval, no
checkpoints, no logging to disk beyond what each trainer needs. Each trainer runs in its own
fresh process so that peak RSS (VmHWM) is its own. The prompts of a step are each trainer's
own (seeded) draw from the same rows.

Generation: TRL without vLLM (transformers `generate` on the policy): its best
configuration on this CPU; TRL 1.16's colocated vLLM weight sync crashes with vLLM 0.32
on CPU, and patched to work it was slower than without vLLM (see ENVIRONMENT.md). Ours
uses its `rollout.backend` (auto: an in-process vLLM engine where vLLM is importable,
else HF `generate`), or `--our-backend hf` for HF-generate vs HF-generate.

dtype: fp32 = fp32 weights on both sides. bf16 = ours with `model.dtype: bfloat16` (bf16
weights and compute, fp32 master weights in the optimizer) and rollout dtype auto (the
policy's); TRL with `--trl-bf16 weights` (default) loads the model in bf16 and trains it
in pure bf16 (bf16=True; AdamW on the bf16 parameters, cheaper and less exact than our
fp32 master copy), or with `--trl-bf16 autocast` keeps fp32 weights under bf16 autocast
(bf16=True on an fp32 model: TRL's mixed precision; accelerate wraps the model's forward in
autocast, so its `generate` runs under autocast too).

What is timed: seconds per optimizer step in steady state, i.e. the mean over steps 2..N
(the first, warm-up, step is reported but not averaged). For TRL a TrainerCallback times
on_step_begin -> on_step_end (generation, rewards, log-prob and loss, backward, optimizer
step, TRL's own metric gathering); TRL's generate and reward time are also measured by
wrapping its `_generate_single_turn` / `_calculate_rewards`. For ours `step_seconds` from
output_dir/metrics.jsonl (generate, score, update, weight sync into the engine) with its
split `time/generate`, `time/score`, `time/update`, `time/sync`. Not in the per-step
number: model loading, our rollout engine's start-up (reported separately as
`engine_start_seconds`), the final export. Completion tokens per step are reported for
both because sampled lengths differ between the runs and the step time depends on them.
Results go to bench/grpo_vs_trl.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from child_runs import (  # bench/: the script's folder
    peak_rss_gb,
    run_child,
    trl_exact_answer,
    trl_prompts,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data/arithmetic/add2/train.jsonl"
LR = 1e-5


# ---------------------------------------------------------------------- TRL
def run_trl(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignment.models import load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m")
    dataset = trl_prompts(args.prompts)
    exact_answer = trl_exact_answer

    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    bf16 = args.dtype == "bf16"
    weights_dtype = torch.bfloat16 if bf16 and args.trl_bf16 == "weights" else torch.float32
    config = GRPOConfig(
        output_dir=args.workdir + "/trl", use_cpu=True, bf16=bf16, fp16=False,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, max_steps=args.steps, seed=0,
        per_device_train_batch_size=args.prompts_per_step * args.generations,
        gradient_accumulation_steps=1, num_generations=args.generations,
        max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, num_iterations=1, epsilon=0.2, loss_type="grpo", scale_rewards="group",
        use_vllm=False, gradient_checkpointing=False,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1,
        disable_tqdm=True, log_completions=False)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype)
    trainer = GRPOTrainer(model=model, reward_funcs=[exact_answer], args=config,
                          train_dataset=dataset, processing_class=load_tokenizer(path),
                          callbacks=[Timer()])
    load_seconds = time.perf_counter() - start

    # TRL logs no time split: measure its generation and reward calls by wrapping them
    split = {"generate": [], "score": []}
    lengths: list[int] = []
    generate, rewards = trainer._generate_single_turn, trainer._calculate_rewards

    def timed_generate(*a, **k):
        t = time.perf_counter()
        out = generate(*a, **k)
        split["generate"].append(time.perf_counter() - t)
        lengths.append(sum(len(c) for c in out[0]))
        return out

    def timed_rewards(*a, **k):
        t = time.perf_counter()
        out = rewards(*a, **k)
        split["score"].append(time.perf_counter() - t)
        return out

    trainer._generate_single_turn = timed_generate
    trainer._calculate_rewards = timed_rewards
    trainer.train()
    rewards_logged = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {"step_seconds": step_times, "load_seconds": load_seconds,
            "time_generate": split["generate"], "time_score": split["score"],
            "completion_tokens": lengths, "reward": rewards_logged,
            "weights_dtype": str(weights_dtype).removeprefix("torch."),
            "generation": "hf", "threads_after": torch.get_num_threads()}


# ---------------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import torch

    from alignment.config import recipe_from_dict
    from alignment.trainers.grpo import GRPOTrainer

    out = args.workdir + "/ours"
    recipe = recipe_from_dict({
        "algorithm": "grpo", "output_dir": out,
        "model": {"name": "smollm2-135m",
                  "dtype": "bfloat16" if args.dtype == "bf16" else "float32"},
        "data": {"train": args.prompts, "eval": None},
        "trainer": {"lr": LR, "batch_size": args.prompts_per_step * args.generations,
                    "max_steps": args.steps, "scheduler": "constant", "warmup_steps": 0,
                    "max_grad_norm": 1.0, "save_every": None, "eval_every": None,
                    "seed": 0, "threads": args.threads, "optimizer": args.our_optimizer},
        "grpo": {"prompts_per_step": args.prompts_per_step, "num_generations": args.generations,
                 "beta": 0.0, "aggregation": "grpo", "iterations": 1, "clip_low": 0.2,
                 "clip_high": 0.2, "scale_rewards": True},
        "rollout": {"backend": args.our_backend, "temperature": 1.0, "top_p": 1.0,
                    "top_k": 0, "max_new_tokens": args.new_tokens, "dtype": "auto"},
        "rewards": [{"name": "exact_answer"}],
        "eval": {"before_after": False},
        "logging": {"report_to": [], "progress_bar": False},
    })
    start = time.perf_counter()
    trainer = GRPOTrainer(recipe)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.before_training()            # rollout engine start-up (+ first weight sync)
    engine_seconds = time.perf_counter() - start
    trainer.before_training = lambda: None
    trainer.export_final = lambda: None  # saving is not timed (nor done) in the bench
    trainer.save_checkpoint = lambda history: None
    trainer.train()
    rows = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
    rows = [r for r in rows if "step_seconds" in r]
    col = lambda key: [r.get(key, 0.0) for r in rows]  # noqa: E731
    return {"step_seconds": col("step_seconds"), "load_seconds": load_seconds,
            "engine_start_seconds": engine_seconds,
            "time_generate": col("time/generate"), "time_score": col("time/score"),
            "time_update": col("time/update"), "time_sync": col("time/sync"),
            "completion_tokens": [r["completion_length"] * r["samples"] for r in rows],
            "reward": col("reward"), "generation": trainer.engine.backend,
            "threads_after": torch.get_num_threads()}


# ---------------------------------------------------------------------- driver
def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = run_trl(args) if args.child == "trl" else run_ours(args)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def launch(which: str, dtype: str, args, prompts: str) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"bench-grpo-{which}-{dtype}-")
    cmd = [sys.executable, __file__, "--child", which, "--dtype", dtype, "--prompts", prompts,
           "--workdir", workdir, "--steps", str(args.steps), "--threads", str(args.threads),
           "--new-tokens", str(args.new_tokens), "--our-backend", args.our_backend,
           "--trl-bf16", args.trl_bf16, "--prompts-per-step", str(args.prompts_per_step),
           "--generations", str(args.generations), "--our-optimizer", args.our_optimizer]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    try:
        result = run_child(cmd, env, f"{which} {dtype}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8, help="steps per run (the first is warm-up)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--generations", type=int, default=4, help="G, samples per prompt")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--our-backend", choices=["auto", "vllm", "hf"], default="auto",
                   help="our rollout.backend (auto = vllm where importable, else hf)")
    p.add_argument("--trl-bf16", choices=["weights", "autocast"], default="weights",
                   help="TRL at bf16: bf16 weights (pure bf16) or fp32 weights + autocast")
    p.add_argument("--only", choices=["trl", "ours"], help="run one trainer only")
    p.add_argument("--our-optimizer", choices=["adamw", "adamw_kahan"], default="adamw",
                   help="our trainer.optimizer (adamw_kahan: no fp32 master copy)")
    p.add_argument("--json", default=str(ROOT / "bench/grpo_vs_trl.json"))
    p.add_argument("--child", choices=["trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bf16", help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the first step is warm-up)")

    prompts = Path(tempfile.mkdtemp(prefix="bench-grpo-")) / "prompts.jsonl"
    with open(DATA) as f:
        prompts.write_text("".join(next(f) for _ in range(args.steps * args.prompts_per_step)))
    print(f"GRPO bench: {args.steps} steps (first = warm-up, not averaged) x "
          f"{args.prompts_per_step} prompts x {args.generations} generations, "
          f"{args.new_tokens} new tokens, {args.threads} threads; TRL: HF generate; ours: backend "
          f"{args.our_backend}", flush=True)
    head = (f"{'dtype':<6}{'trainer':<9}{'gen':<6}{'s/step':>8}{'1st':>7}{'tok/step':>9}"
            f"{'peak GB':>9}   split s/step (generate / score / update / sync)")
    print(head, flush=True)
    results: dict = {"config": {
        "model": "smollm2-135m", "data": str(DATA.relative_to(ROOT)), "steps": args.steps,
        "prompts_per_step": args.prompts_per_step, "num_generations": args.generations,
        "max_new_tokens": args.new_tokens, "temperature": 1.0, "lr": LR, "beta": 0.0,
        "loss": "grpo", "threads": args.threads, "our_backend": args.our_backend,
        "our_optimizer": args.our_optimizer,
        "trl_bf16": args.trl_bf16, "trl_generation": "hf (no vLLM)",
        "timing": "mean s/step over steps 2..N"}}
    which_list = [args.only] if args.only else ["trl", "ours"]
    for dtype in args.dtypes.split(","):
        for which in which_list:
            r = launch(which, dtype, args, str(prompts))
            results[f"{which}-{dtype}"] = r
            split = " / ".join(f"{r[k]:.2f}" if k in r else "  - " for k in (
                "s_per_step_generate", "s_per_step_score", "s_per_step_update",
                "s_per_step_sync"))
            print(f"{dtype:<6}{which:<9}{r['generation']:<6}{r['s_per_step']:>8.2f}"
                  f"{r['first_step_seconds']:>7.2f}{r['completion_tokens_per_step']:>9.0f}"
                  f"{r['peak_rss_gb']:>9.2f}   {split}", flush=True)
            if which == "ours":
                print(f"{'':<6}{'':<9}engine start {r['engine_start_seconds']:.1f} s "
                      f"(not in s/step), model load {r['load_seconds']:.1f} s", flush=True)
        if not args.only:
            trl, ours = results[f"trl-{dtype}"], results[f"ours-{dtype}"]
            ratio = trl["s_per_step"] / ours["s_per_step"]
            results[f"ratio-{dtype}"] = {
                "trl_over_ours_s_per_step": ratio,
                "trl_over_ours_peak_rss": trl["peak_rss_gb"] / ours["peak_rss_gb"]}
            print(f"{dtype:<6}{'ratio':<9}{'':<6}{ratio:>7.2f}x  (TRL s/step / ours; "
                  f"peak RSS TRL / ours {trl['peak_rss_gb'] / ours['peak_rss_gb']:.2f}x)",
                  flush=True)
    shutil.rmtree(prompts.parent, ignore_errors=True)
    write_json(Path(args.json), results)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
