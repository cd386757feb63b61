"""Online pair trainers, speed and memory: ours vs TRL, same run, same everything.

    python bench/pairs_vs_trl.py                         # both benches, TRL bf16 + autocast
    python bench/pairs_vs_trl.py --benches dpo --steps 8
    python bench/pairs_vs_trl.py --our-backend hf        # HF generate vs HF generate
    python bench/pairs_vs_trl.py --trl-configs bf16,autocast,fp32,bf16+gc,bf16+cb

Two benches, each one of our online pair trainers against its TRL counterpart:

  dpo   Online DPO: ours = `alignment.trainers.dpo.OnlineDPOTrainer` (algorithm dpo,
        `dpo.online: true`, `dpo.num_generations: 2`, β 0.1) vs TRL's experimental
        `trl.experimental.online_dpo.OnlineDPOTrainer` (β 0.1, `loss_type="sigmoid"`; it
        always samples 2 completions per prompt). TRL 1.16's trainer takes `reward_funcs`
        (callables, as GRPO's) besides reward models, so no judge class is needed: it gets
        reward functions, summed with `reward_weights`.
  copg  Online CoPG vs RLOO with k = 2: ours = `alignment.trainers.copg.OnlineCoPGTrainer`
        (algorithm copg, `copg.online: true`, `copg.num_generations: 2`, β 0.06) vs TRL's
        `trl.RLOOTrainer` with `num_generations=2`, β 0.06 (KL as a sequence-level reward
        penalty: with k = 2 its gradient is CoPG's, Flet-Berliac et al. 2024, Property 2),
        `num_iterations=1`, no advantage normalisation.

Both sides of a bench get: the bundled SmolLM2-135M-Instruct (the same local HF folder),
the first steps x prompts-per-step rows of data/arithmetic/add2/train.jsonl as
conversational prompts ([{"role": "user", "content": prompt}] through the model's chat
template, which adds its default system line on both sides: identical prompt tokens),
8 prompts x 2 samples per step (one micro-batch; --prompts-per-step), at most 16 new
tokens (--new-tokens), temperature 0.7 (the recipes'; --temperature), top-p 1, no top-k;
AdamW, lr 2e-5 constant (the recipes'), grad-norm clip 1.0, no gradient checkpointing
(TRL's configs turn it on by default: turned off here except in the `+gc` configs), a
frozen reference copy of the initial model on both sides, the same thread count, no eval,
no checkpoints, no logging to disk beyond what each trainer needs. Each run is its own
fresh process so that peak RSS (VmHWM) is its own. The prompts of a step are each trainer's
own (seeded) draw from the same rows. Ours samples one round per step
(`max_sampling_rounds` left at 1: no refill of tied pairs).

Left as each trainer does it (part of what is measured): TRL's online DPO runs both samples
of a prompt as separate rows (the prompt computed twice per pair; ours packs a pair with
one copy of its prompt) and takes log-probs at temperature 1 (ours: at the rollout
temperature, as sampled); TRL's RLOO computes "old" log-probs with an extra no-grad
forward even at num_iterations=1 (ours has no such pass: one reference forward, then
the update).

Reward (--reward): `tiebreak` (default) = exact answer + 0.001 x a tie-breaker, on both
sides as two reward parts (ours: `rewards:` [exact_answer, this file's `tie_break`, weight
0.001]; TRL: `reward_funcs` [a function calling `reward_models.is_correct`, the same
tie-breaker], `reward_weights` [1, 0.001]). The tie-breaker is a hash of the completion
text in [0, 1), so two samples tie only if their texts are identical. Why: TRL's online DPO
trains on every pair (a tie goes to the first sample), ours drops tied pairs (and skips a
step with none), and with the exact answer alone nearly every pair of this base model ties
(both wrong): ours would then skip most of the update and the s/step would compare less
work with more. `exact` = the exact answer alone (ours: the `exact_answer` scorer, which
uses is_correct; TRL: the function): the trainers as they would run on this reward; the
table then shows how many pairs ours trained per step. CoPG and RLOO both train on ties.

TRL configurations (--trl-configs, each run and printed; the ratio is against the fastest):
  bf16      bf16 weights (loaded in bf16, reference too), bf16=True: pure bf16 training,
            AdamW on the bf16 parameters (cheaper and less exact than our fp32 master copy)
  autocast  fp32 weights under bf16 autocast (bf16=True on an fp32 model: TRL's mixed
            precision; accelerate wraps the forward in autocast, `generate` included)
  fp32      fp32 weights, no autocast
  +gc       suffix: gradient checkpointing on (TRL's default; slower, less memory)
  +cb       suffix, RLOO only: transformers continuous batching for generation
            (`use_transformers_continuous_batching`); TRL casts the policy to bf16 for it
            under bf16=True, so only `bf16+cb` is allowed. Not in the default list: in a
            smoke test on this CPU (2 x 2 samples, 4 new tokens, 1 thread, another job
            running) it took ~14 s to generate and ~12 GB peak RSS, vs ~0.2 s / 2.3 GB
            with plain `generate`
Generation: TRL without vLLM (transformers `generate` on the policy): TRL 1.16's colocated
vLLM weight sync crashes with vLLM 0.32 on CPU, and patched to work it was slower than
without vLLM (ENVIRONMENT.md). Ours uses its `rollout.backend` (auto: an in-process vLLM
engine where vLLM is importable, else HF `generate`), or `--our-backend hf`. Ours runs at
--our-dtype (bf16 default: `model.dtype: bfloat16`, bf16 weights and compute, fp32 master
weights in the optimizer, rollout dtype auto = the policy's; fp32: fp32 everywhere).

What is timed: seconds per optimizer step in steady state, i.e. the mean over steps 2..N
(the first, warm-up, step is reported but not averaged). For TRL a TrainerCallback times
on_step_begin -> on_step_end (generation, rewards, reference / old log-probs, loss,
backward, optimizer step, TRL's own metric gathering); its split is measured by wrapping
its methods: generate (OnlineDPO `_generate`, RLOO `_generate_single_turn`), score
(`_calculate_rewards_from_functions` / `_calculate_rewards`), prepare = the no-grad
forwards (OnlineDPO: the reference `_forward`; RLOO: old and reference
`_get_per_token_logps_and_entropies`), update = the rest of the step. For ours
`step_seconds` from output_dir/metrics.jsonl (generate, score, prepare = collate +
reference log-probs, update, weight sync into the engine) with its split `time/*`. Not in
the per-step number: model loading, our set-up before the first step (reference copy,
rollout engine start, first weight sync; reported as `setup_seconds`), the final export.
Completion tokens generated per step and pairs trained per step are reported for both,
because sampled lengths differ between runs and the step time depends on them.
Results go to bench/pairs_vs_trl.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

from child_runs import (  # bench/: the script's folder
    peak_rss_gb,
    run_child,
    steady,
    trl_exact_answer,
    trl_prompts,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "data/arithmetic/add2/train.jsonl"
LR = 2e-5
BETA = {"dpo": 0.1, "copg": 0.06}
TIE_WEIGHT = 1e-3
BENCHES = {"dpo": "Online DPO: ours OnlineDPOTrainer vs TRL experimental OnlineDPOTrainer",
           "copg": "Online CoPG vs TRL RLOOTrainer (k = 2)"}
TRL_BASES = ("bf16", "autocast", "fp32")


def _hash01(text: str) -> float:
    return zlib.crc32(text.encode("utf-8")) / 2**32


def tie_break(prompts, completions, rows):
    """Our `rewards:` part (a function scorer): a deterministic value in [0, 1) per
    completion text, weighted 0.001 next to the exact answer."""
    return [_hash01(c) for c in completions]


def parse_trl_config(name: str, bench: str) -> dict:
    base, *flags = name.split("+")
    if base not in TRL_BASES or any(f not in ("gc", "cb") for f in flags):
        raise ValueError(f"TRL config {name!r}: a base ({', '.join(TRL_BASES)}) with "
                         "optional +gc / +cb")
    if "cb" in flags and (bench != "copg" or base != "bf16"):
        raise ValueError(f"TRL config {name!r}: +cb is RLOO only (bench copg), with bf16")
    return {"base": base, "gc": "gc" in flags, "cb": "cb" in flags}


# ---------------------------------------------------------------------- TRL
def run_trl(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback

    from alignment.models import load_tokenizer, resolve_model

    cfg = parse_trl_config(args.config, args.bench)
    path = resolve_model("smollm2-135m")
    dataset = trl_prompts(args.prompts)
    exact_answer = trl_exact_answer

    def tie_breaker(completions, **kwargs):
        return [_hash01(c[-1]["content"]) for c in completions]

    reward_funcs = [exact_answer]
    reward_weights = None
    if args.reward == "tiebreak":
        reward_funcs.append(tie_breaker)
        reward_weights = [1.0, TIE_WEIGHT]

    records: list[dict] = []   # one per optimizer step: seconds and its split
    current: dict = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            current.clear()
            current.update(generate=0.0, score=0.0, prepare=0.0, tokens=0, t=time.perf_counter())

        def on_step_end(self, *a, **k):
            records.append({**current, "step": time.perf_counter() - current.pop("t")})

    bf16 = cfg["base"] in ("bf16", "autocast")
    weights_dtype = torch.bfloat16 if cfg["base"] == "bf16" else torch.float32
    common = dict(
        output_dir=args.workdir + "/trl", use_cpu=True, bf16=bf16, fp16=False,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, max_steps=args.steps, seed=0, gradient_accumulation_steps=1,
        temperature=args.temperature, top_p=1.0, top_k=0, beta=BETA[args.bench],
        use_vllm=False, gradient_checkpointing=cfg["gc"], reward_weights=reward_weights,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=1,
        disable_tqdm=True)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype)
    tokenizer = load_tokenizer(path)
    if args.bench == "dpo":
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        config = OnlineDPOConfig(**common, per_device_train_batch_size=args.prompts_per_step,
                                 max_new_tokens=args.new_tokens, loss_type="sigmoid")
        trainer = OnlineDPOTrainer(model=model, reward_funcs=reward_funcs, args=config,
                                   train_dataset=dataset, processing_class=tokenizer,
                                   callbacks=[Timer()])
        names = {"generate": "_generate", "score": "_calculate_rewards_from_functions",
                 "prepare": "_forward"}
        count_tokens = lambda out: int(out[3].sum())  # noqa: E731 - completion_mask
        reward_key = "objective/scores"
    else:
        from trl import RLOOConfig, RLOOTrainer

        config = RLOOConfig(**common, per_device_train_batch_size=args.prompts_per_step * 2,
                            num_generations=2, max_completion_length=args.new_tokens,
                            num_iterations=1, epsilon=0.2, normalize_advantages=False,
                            use_transformers_continuous_batching=cfg["cb"],
                            log_completions=False)
        trainer = RLOOTrainer(model=model, reward_funcs=reward_funcs, args=config,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[Timer()])
        names = {"generate": "_generate_single_turn", "score": "_calculate_rewards",
                 "prepare": "_get_per_token_logps_and_entropies"}
        count_tokens = lambda out: sum(len(c) for c in out)  # noqa: E731
        reward_key = "reward"
    load_seconds = time.perf_counter() - start

    def timed(key: str, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            # "prepare": only the no-grad forwards (reference, old log-probs); the
            # policy's forward with grad belongs to the update
            if current and (key != "prepare" or not torch.is_grad_enabled()):
                current[key] += time.perf_counter() - t
                if key == "generate":
                    current["tokens"] += count_tokens(out)
            return out
        return wrapper

    for key, name in names.items():
        setattr(trainer, name, timed(key, getattr(trainer, name)))
    trainer.train()
    col = lambda key: [r[key] for r in records]  # noqa: E731
    update = [r["step"] - r["generate"] - r["score"] - r["prepare"] for r in records]
    rewards_logged = [h[reward_key] for h in trainer.state.log_history if reward_key in h]
    return {"step_seconds": col("step"), "load_seconds": load_seconds,
            "time_generate": col("generate"), "time_score": col("score"),
            "time_prepare": col("prepare"), "time_update": update,
            "completion_tokens": col("tokens"),
            "pairs": [args.prompts_per_step] * len(records), "reward": rewards_logged,
            "weights_dtype": str(weights_dtype).removeprefix("torch."), "bf16_flag": bf16,
            "gradient_checkpointing": cfg["gc"], "optim": str(trainer.args.optim),
            "generation": "hf-cb" if cfg["cb"] else "hf",
            "threads_after": torch.get_num_threads()}


# ---------------------------------------------------------------------- ours
def our_recipe(args, out: str) -> dict:
    rewards = [{"name": "exact_answer"}]
    if args.reward == "tiebreak":
        rewards.append({"name": "pairs_vs_trl:tie_break", "weight": TIE_WEIGHT})
    return {
        "algorithm": args.bench, "output_dir": out,
        "model": {"name": "smollm2-135m",
                  "dtype": "bfloat16" if args.config == "bf16" else "float32"},
        "data": {"train": args.prompts, "eval": None},
        "trainer": {"lr": LR, "batch_size": args.prompts_per_step * 2,
                    "max_steps": args.steps, "scheduler": "constant", "warmup_steps": 0,
                    "max_grad_norm": 1.0, "save_every": None, "eval_every": None,
                    "seed": 0, "threads": args.threads},
        args.bench: {"online": True, "beta": BETA[args.bench],
                     "prompts_per_step": args.prompts_per_step, "num_generations": 2,
                     "overlong_cache": 0, "mask_truncated": False},
        "rollout": {"backend": args.our_backend, "temperature": args.temperature,
                    "top_p": 1.0, "top_k": 0, "max_new_tokens": args.new_tokens,
                    "dtype": "auto"},
        "rewards": rewards,
        "eval": {"before_after": False},
        "logging": {"report_to": [], "progress_bar": False},
    }


def run_ours(args) -> dict:
    import torch

    from alignment.config import recipe_from_dict

    if args.bench == "dpo":
        from alignment.trainers.dpo import OnlineDPOTrainer as Trainer
    else:
        from alignment.trainers.copg import OnlineCoPGTrainer as Trainer

    out = args.workdir + "/ours"
    recipe = recipe_from_dict(our_recipe(args, out), base_dir=ROOT)
    start = time.perf_counter()
    trainer = Trainer(recipe)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.before_training()   # reference copy, rollout engine start-up (+ first weight sync)
    setup_seconds = time.perf_counter() - start
    trainer.before_training = lambda: None
    trainer.export_final = lambda: None  # saving is not timed (nor done) in the bench
    trainer.save_checkpoint = lambda history: None
    trainer.train()
    rows = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
    rows = [r for r in rows if "step_seconds" in r]
    col = lambda key: [r.get(key, 0.0) for r in rows]  # noqa: E731
    generated = args.prompts_per_step * 2
    return {"step_seconds": col("step_seconds"), "load_seconds": load_seconds,
            "setup_seconds": setup_seconds,
            "time_generate": col("time/generate"), "time_score": col("time/score"),
            "time_prepare": col("time/prepare"), "time_update": col("time/update"),
            "time_sync": col("time/sync"),
            "completion_tokens": [r.get("completion_length", 0.0) * generated for r in rows],
            "pairs": [r.get("samples", 0) // 2 for r in rows],
            "skipped_steps": int(sum(col("skipped"))),
            "groups_with_signal": col("groups_with_signal"),
            "reward": col("reward"), "accuracy": col("accuracy"),
            "weights_dtype": str(next(trainer.policy.parameters()).dtype).removeprefix("torch."),
            "generation": trainer.engine.backend, "threads_after": torch.get_num_threads()}


# ---------------------------------------------------------------------- driver
def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = run_trl(args) if args.child == "trl" else run_ours(args)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def launch(bench: str, which: str, config: str, args, prompts: str) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"bench-pairs-{bench}-{which}-")
    cmd = [sys.executable, __file__, "--child", which, "--bench", bench, "--config", config,
           "--prompts", prompts, "--workdir", workdir, "--steps", str(args.steps),
           "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
           "--prompts-per-step", str(args.prompts_per_step),
           "--temperature", str(args.temperature), "--reward", args.reward,
           "--our-backend", args.our_backend]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    try:
        result = run_child(cmd, env, f"{bench} {which} {config}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["config"] = config
    result["pairs_per_step"] = steady(result["pairs"])
    return result


def print_row(which: str, r: dict) -> None:
    split = " / ".join(f"{r[k]:.2f}" if k in r else "  - " for k in (
        "s_per_step_generate", "s_per_step_score", "s_per_step_prepare",
        "s_per_step_update", "s_per_step_sync"))
    print(f"{which:<6}{r['config']:<13}{r['generation']:<7}{r['s_per_step']:>8.2f}"
          f"{r['first_step_seconds']:>7.2f}{r['completion_tokens_per_step']:>9.0f}"
          f"{r['pairs_per_step']:>7.1f}{r['peak_rss_gb']:>9.2f}   {split}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benches", default="dpo,copg", help="dpo (online DPO vs TRL "
                   "OnlineDPOTrainer), copg (online CoPG vs TRL RLOOTrainer k=2)")
    p.add_argument("--steps", type=int, default=6, help="steps per run (the first is warm-up)")
    p.add_argument("--prompts-per-step", type=int, default=8, help="prompts per step (x 2 "
                   "samples each)")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reward", choices=["tiebreak", "exact"], default="tiebreak",
                   help="exact answer + 0.001 x text-hash tie-breaker (every pair trained "
                   "on both sides), or the exact answer alone")
    p.add_argument("--trl-configs", default="bf16,autocast",
                   help="comma list: bf16 | autocast | fp32, optional +gc (gradient "
                   "checkpointing) / +cb (RLOO, bf16 only: continuous batching)")
    p.add_argument("--our-dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--our-backend", choices=["auto", "vllm", "hf"], default="auto",
                   help="our rollout.backend (auto = vllm where importable, else hf)")
    p.add_argument("--only", choices=["trl", "ours"], help="run one side only")
    p.add_argument("--json", default=str(ROOT / "bench/pairs_vs_trl.json"))
    p.add_argument("--child", choices=["trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--bench", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the first step is warm-up)")
    benches = args.benches.split(",")
    trl_configs = args.trl_configs.split(",")
    for bench in benches:
        if bench not in BENCHES:
            p.error(f"--benches: unknown {bench!r} (dpo, copg)")
        for config in trl_configs:
            if config.endswith("+cb") and bench != "copg":
                continue   # continuous batching is an RLOO option: skipped for dpo
            try:
                parse_trl_config(config, bench)
            except ValueError as exc:
                p.error(str(exc))

    prompts = Path(tempfile.mkdtemp(prefix="bench-pairs-")) / "prompts.jsonl"
    with open(DATA) as f:
        prompts.write_text("".join(next(f) for _ in range(args.steps * args.prompts_per_step)))
    print(f"Pairs bench: {args.steps} steps (first = warm-up, not averaged) x "
          f"{args.prompts_per_step} prompts x 2 samples, {args.new_tokens} new tokens, "
          f"temperature {args.temperature}, {args.threads} threads, reward {args.reward}; "
          f"TRL: HF generate; ours: {args.our_dtype}, backend {args.our_backend}", flush=True)
    results: dict = {"config": {
        "model": "smollm2-135m", "data": str(DATA.relative_to(ROOT)), "steps": args.steps,
        "prompts_per_step": args.prompts_per_step, "num_generations": 2,
        "max_new_tokens": args.new_tokens, "temperature": args.temperature, "lr": LR,
        "beta": BETA, "reward": args.reward, "threads": args.threads,
        "our_dtype": args.our_dtype, "our_backend": args.our_backend,
        "trl_configs": trl_configs, "trl_generation": "hf (no vLLM)",
        "timing": "mean s/step over steps 2..N"}}
    head = (f"{'':<6}{'config':<13}{'gen':<7}{'s/step':>8}{'1st':>7}{'tok/step':>9}"
            f"{'pairs':>7}{'peak GB':>9}   split s/step (generate / score / prepare / "
            "update / sync)")
    for bench in benches:
        print(f"\n{BENCHES[bench]}\n{head}", flush=True)
        section: dict = {}
        if args.only != "ours":
            for config in trl_configs:
                if config.endswith("+cb") and bench != "copg":
                    continue
                section[f"trl-{config}"] = r = launch(bench, "trl", config, args, str(prompts))
                print_row("TRL", r)
        if args.only != "trl":
            section[f"ours-{args.our_dtype}"] = r = launch(bench, "ours", args.our_dtype, args,
                                                           str(prompts))
            print_row("ours", r)
            skipped = (f", {r['skipped_steps']} step(s) skipped (no untied pair)"
                       if r["skipped_steps"] else "")
            print(f"{'':<6}set-up {r['setup_seconds']:.1f} s (reference copy + engine start + "
                  f"first sync; not in s/step), model load {r['load_seconds']:.1f} s{skipped}",
                  flush=True)
        if not args.only:
            trl = {k: v for k, v in section.items() if k.startswith("trl-")}
            fastest = min(trl, key=lambda k: trl[k]["s_per_step"])
            ours = section[f"ours-{args.our_dtype}"]
            best = trl[fastest]
            ratio = best["s_per_step"] / ours["s_per_step"]
            rss = best["peak_rss_gb"] / ours["peak_rss_gb"]
            lowest_rss = min(v["peak_rss_gb"] for v in trl.values()) / ours["peak_rss_gb"]
            section["ratio"] = {"trl_fastest": fastest, "trl_over_ours_s_per_step": ratio,
                                "trl_over_ours_peak_rss": rss,
                                "trl_lowest_over_ours_peak_rss": lowest_rss}
            print(f"{'ratio':<6}{fastest.removeprefix('trl-'):<13}{'':<7}{ratio:>7.2f}x  "
                  f"(TRL's fastest s/step / ours; its peak RSS / ours {rss:.2f}x, TRL's "
                  f"lowest / ours {lowest_rss:.2f}x)", flush=True)
        results[bench] = section
    shutil.rmtree(prompts.parent, ignore_errors=True)
    write_json(Path(args.json), results)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
