"""Reward-model training: ours vs TRL's `RewardTrainer`, same run, same pairs, same steps.

    python bench/reward_model_vs_trl.py                      # 100 steps x 16 pairs
    python bench/reward_model_vs_trl.py --steps 8 --trl-configs fp32+len,bf16+len,autocast+gc
    python bench/reward_model_vs_trl.py --kind classifier --ours-lr 5e-4   # head vs head

Both sides get: the same causal LM (--model: the bundled SmolLM2-135M-Instruct), the first
steps x batch pairs of data/arithmetic/add2_rm/train.jsonl in TRL's conversational form
(the same chat template: identical token sequences, tests/test_reward_model_use.py), the
Bradley-Terry loss without centring, full fine-tuning or (--lora R) LoRA of rank R with
alpha 2R on every linear layer and the score head trained in full, AdamW (β 0.9/0.999,
weight decay 0), --lr with 10 warm-up steps then cosine decay, grad-norm clip 1.0, one
pass over the same pairs (each side shuffles them with its own seeded sampler), no eval or
checkpoint during training, the same thread count. Each configuration trains in its own
fresh process (peak RSS = VmHWM is its own); the parent then scores every saved model with
the same code (`alignment eval --reward-model`) on data/arithmetic/add2_rm/test.jsonl (300 held-out
pairs: seen, unseen and bare phrasings).

What is trained: TRL's `RewardTrainer` trains its one kind, a fresh one-output score head on
the last token (`AutoModelForSequenceClassification`) at --lr; ours trains --kind (default
the recipe's: `likelihood`, r = beta * log p(y|x) under the LM itself, beta 0.1) at --ours-lr
(each side at the learning rate that suits its kind: 5e-4 for a LoRA head, 2e-4 for the
likelihood model); `--kind classifier` trains the same head as TRL (same seed).

Ours runs at `model.dtype: auto` (bf16 weights and compute with fp32 master weights where
the CPU has bf16 instructions, fp32 elsewhere). TRL configurations (--trl-configs; each
run; the ratio is against the fastest):
  fp32       fp32 weights, bf16=False
  bf16       bf16 weights, bf16=True: pure bf16 training (AdamW on bf16 parameters)
  autocast   fp32 weights under bf16 autocast (bf16=True on an fp32 model)
  +gc        suffix: gradient checkpointing on (TRL's RewardConfig default)
  +len       suffix: transformers' length-grouped sampler (batches of similar length: less
             padding; ours groups by length too)
With --speed-steps K (default 8) every TRL configuration first runs K steps to find the
fastest; only that one then runs the full --steps (accuracy needs the full run, and on 2
cores the full run of every configuration would take most of an hour).

Timed: the optimizer steps (TRL: a TrainerCallback from on_step_begin to on_step_end; ours:
the trainer's per-step seconds), steady state = mean of steps 2..N. Tokens/s = real tokens
of both sequences of every pair trained / timed seconds (identical token counts on both
sides). Results go to bench/reward_model_vs_trl.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from child_runs import peak_rss_gb, steady, write_json  # noqa: E402

TRAIN = ROOT / "data/arithmetic/add2_rm/train.jsonl"
TEST = ROOT / "data/arithmetic/add2_rm/test.jsonl"


def pairs_file(n: int, folder: Path) -> Path:
    rows = TRAIN.read_text().splitlines()[:n]
    path = folder / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def pair_tokens(path: Path, model: str) -> list[int]:
    from alignment.data import load_examples, tokenize_examples
    from alignment.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(model))
    tokenized, _ = tokenize_examples(tokenizer, load_examples(str(path), "preference"),
                                     max_length=10_000, max_prompt_length=5_000)
    return [2 * len(t.prompt_ids) + len(t.completion_ids["chosen"])
            + len(t.completion_ids["rejected"]) for t in tokenized]


# ---------------------------------------------------------------- children
def run_ours(args, out: Path, data: Path) -> dict:
    from alignment.config import recipe_from_dict
    from alignment.trainers.reward_model import RewardModelTrainer

    recipe = recipe_from_dict({
        "algorithm": "reward_model", "output_dir": str(out),
        "model": {"name": args.model, "dtype": "auto",
                  "lora": {"r": args.lora, "alpha": max(1, 2 * args.lora)}},
        "data": {"train": str(data), "max_length": 192, "max_prompt_length": 128},
        "reward_model": {"kind": args.kind},
        "trainer": {"batch_size": args.batch, "lr": args.ours_lr, "epochs": 1,
                    "warmup_steps": 10, "scheduler": "cosine", "eval_every": None,
                    "save_every": None, "seed": args.seed,
                    "weight_decay": 0.0, "max_grad_norm": 1.0},
        "logging": {"report_to": [], "progress_bar": False}})
    trainer = RewardModelTrainer(recipe)
    trainer.train()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [s["step_seconds"] for s in steps if "step_seconds" in s]
    return {"step_seconds": seconds, "model": str(out / "final")}


def run_trl(args, out: Path, data: Path, config: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from alignment.models import load_tokenizer, resolve_model

    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    bf16_weights = config.startswith("bf16")
    autocast = bf16_weights or config.startswith("autocast")
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.bfloat16 if bf16_weights else torch.float32)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                  "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                  "rejected": [{"role": "assistant", "content": r["rejected"]}]}
                                 for r in rows])
    if "+len" in config:    # a length column for the length-grouped sampler
        dataset = dataset.add_column("length", pair_tokens(data, args.model))
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    cfg = RewardConfig(
        output_dir=str(out), max_steps=len(rows) // args.batch, num_train_epochs=1,
        per_device_train_batch_size=args.batch, learning_rate=args.lr,
        lr_scheduler_type="cosine", warmup_steps=10, weight_decay=0.0, max_grad_norm=1.0,
        bf16=autocast, gradient_checkpointing="+gc" in config, use_cpu=True,
        train_sampling_strategy="group_by_length" if "+len" in config else "random",
        remove_unused_columns="+len" not in config,   # (the sampler reads `length`)
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=10,
        dataloader_num_workers=0, seed=args.seed, max_length=192,
        center_rewards_coefficient=None)
    peft = None
    if args.lora:
        from peft import LoraConfig

        from alignment.config.schema import ALL_LINEAR

        peft = LoraConfig(r=args.lora, lora_alpha=2 * args.lora, lora_dropout=0.0,
                          target_modules=list(ALL_LINEAR), task_type="SEQ_CLS",
                          modules_to_save=["score"])
    trainer = RewardTrainer(model=model, args=cfg, processing_class=tokenizer,
                            train_dataset=dataset, callbacks=[StepTimer()], peft_config=peft)
    trainer.train()
    final = trainer.model.merge_and_unload() if args.lora else trainer.model
    final.float().save_pretrained(str(out / "final"))
    tokenizer.save_pretrained(str(out / "final"))
    return {"step_seconds": times, "model": str(out / "final")}


def child(args) -> None:
    torch_threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    out, data = Path(args.out), Path(args.data)
    result = run_ours(args, out, data) if args.child == "ours" else \
        run_trl(args, out, data, args.config)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent
def launch(args, side: str, config: str, steps: int, work: Path) -> dict:
    import subprocess

    folder = work / f"{side}-{config}-{steps}"
    folder.mkdir(parents=True, exist_ok=True)
    data = pairs_file(steps * args.batch, folder)
    cmd = [sys.executable, __file__, "--child", side, "--config", config, "--out",
           str(folder / "run"), "--data", str(data), "--batch", str(args.batch),
           "--lr", str(args.lr), "--ours-lr", str(args.ours_lr), "--kind", args.kind,
           "--seed", str(args.seed), "--model", args.model,
           "--lora", str(args.lora)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{side} {config} failed (rc {proc.returncode}):\n{proc.stderr[-5000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    tokens = pair_tokens(data, args.model)
    per_step = [sum(tokens[i * args.batch:(i + 1) * args.batch])
                for i in range(len(result["step_seconds"]))]
    result.update({"side": side, "config": config, "steps": len(result["step_seconds"]),
                   "wall_seconds": time.perf_counter() - t0,
                   "s_per_step": steady(result["step_seconds"]),
                   "tokens_per_s": sum(per_step[1:]) / sum(result["step_seconds"][1:])})
    print(f"  {side:<5} {config:<10} {result['steps']:>4} steps  {result['s_per_step']:.3f} "
          f"s/step  {result['tokens_per_s']:.0f} tok/s  peak RSS "
          f"{result['peak_rss_gb']:.2f} GB", flush=True)
    return result


def accuracy(model: str) -> dict:
    from alignment.rm_eval import evaluate_reward_model

    r = evaluate_reward_model(model, str(TEST), by=("phrasing",), dtype="float32")
    return {"accuracy": r["accuracy"],
            "by_phrasing": {k: v["accuracy"] for k, v in r["by"]["phrasing"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="the causal LM both start from")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--speed-steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=16, help="pairs per step")
    p.add_argument("--lr", type=float, default=5e-4, help="TRL's learning rate")
    p.add_argument("--ours-lr", type=float, default=2e-4, help="our learning rate")
    p.add_argument("--kind", choices=["likelihood", "classifier"], default="likelihood",
                   help="what ours trains (TRL: always a classifier head)")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank on both sides (alpha = 2r, "
                   "every linear layer, the score head trained in full); 0 = full fine-tuning")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--trl-configs", default="fp32,fp32+len,autocast+len,bf16+len",
                   help="TRL configurations to try (see the module doc); on a CPU without "
                   "bf16 instructions autocast/bf16 are emulated and ~3.5x slower")
    p.add_argument("--output", default=str(ROOT / "bench/reward_model_vs_trl.json"))
    p.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    # child-only
    p.add_argument("--child", choices=["ours", "trl"])
    p.add_argument("--config", default="bf16")
    p.add_argument("--out")
    p.add_argument("--data")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="rm_bench_"))
    configs = [c.strip() for c in args.trl_configs.split(",") if c.strip()]
    print(f"reward model from {args.model}, {args.batch} pairs/step, ours: {args.kind} at lr "
          f"{args.ours_lr}, TRL: classifier at lr {args.lr}, {os.cpu_count()} CPUs")
    speed = []
    if len(configs) > 1:
        print(f"TRL configurations, {args.speed_steps} steps each:")
        speed = [launch(args, "trl", c, args.speed_steps, work) for c in configs]
        fastest = min(speed, key=lambda r: r["s_per_step"])["config"]
    else:
        fastest = configs[0]
    print(f"full runs, {args.steps} steps (TRL: its fastest, {fastest}):")
    ours = launch(args, "ours", args.kind, args.steps, work)
    trl = launch(args, "trl", fastest, args.steps, work)
    for r in (ours, trl):
        r.update(accuracy(r["model"]))
    result = {"model": args.model, "lora": args.lora, "steps": args.steps, "batch": args.batch,
              "lr": args.lr, "ours_lr": args.ours_lr, "kind": args.kind,
              "cpus": os.cpu_count(), "trl_speed_runs": speed, "ours": ours, "trl": trl,
              "tokens_per_s_ratio": ours["tokens_per_s"] / trl["tokens_per_s"]}
    write_json(Path(args.output), result)
    print(f"{'':<22}{'ours':>10}{'TRL ' + fastest:>16}")
    for key, fmt in (("accuracy", "{:.1%}"), ("tokens_per_s", "{:.0f}"),
                     ("s_per_step", "{:.3f}"), ("peak_rss_gb", "{:.2f}")):
        print(f"{key:<22}{fmt.format(ours[key]):>10}{fmt.format(trl[key]):>16}")
    for k in ours["by_phrasing"]:
        print(f"  {k:<20}{ours['by_phrasing'][k]:>10.1%}{trl['by_phrasing'][k]:>16.1%}")
    print(f"tokens/s ratio ours / TRL best: {result['tokens_per_s_ratio']:.2f}x -> {args.output}")


if __name__ == "__main__":
    main()
