"""DPO training speed and memory: TRL's DPOTrainer vs ours, same run, same everything.

    python bench/dpo_vs_trl.py            # every TRL configuration below, 8 steps of 4 pairs
    python bench/dpo_vs_trl.py --trl-configs bf16-nogc-pre --steps 12

Both trainers get: the bundled SmolLM2-135M-Instruct, the same first steps x batch pairs of
data/arithmetic/preference_chat/train.jsonl (conversational form, same chat template; the
token sequences are identical, see tests/test_dpo_trainer.py), β = 0.1, lr 5e-6, AdamW,
the same batch, max length and thread count, one epoch over those pairs. Each trainer runs
in its own fresh process so that peak RSS (VmHWM) is its own.

TRL is run in every configuration of its options that bear on speed here, and ours is
compared with the FASTEST of them (every one is printed):
  weights      bf16 (the model loaded in bfloat16)  |  fp32 + bf16 autocast (`bf16=True`)
  gc           gradient checkpointing on (DPOConfig's default) | off
  pre          `precompute_ref_log_probs=True` (one reference pass before training) | off
               (a reference forward inside every step)
Ours runs in bf16 (bf16 weights, fp32 master copies in the optimizer, its default).

What is timed: the whole `train()` call of each, which includes the reference log-probs
wherever they are computed (TRL's precompute pass, ours before the first step) and the
steps. Tokens are those of the two sequences of each pair (prompt+chosen,
prompt+rejected), counted identically for both. Model loading and saving are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data/arithmetic/preference_chat/train.jsonl"


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def lengthen(row: dict, repeat: int) -> dict:
    """The pair with each answer written `repeat` times (for the cost-growth bench: longer
    sequences of the same kind; repeat 1 = the data as it is)."""
    if repeat == 1:
        return row
    out = dict(row)
    for key in ("chosen", "rejected"):
        out[key] = [{**m, "content": "\n".join([m["content"]] * repeat)} for m in row[key]]
    return out


def pair_tokens(pairs_file: str) -> int:
    from alignment.data import load_examples, tokenize_examples
    from alignment.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    tokenized, _ = tokenize_examples(tokenizer, load_examples(pairs_file, "preference"),
                                     max_length=10_000, max_prompt_length=5_000)
    return sum(2 * len(t.prompt_ids) + len(t.completion_ids["chosen"])
               + len(t.completion_ids["rejected"]) for t in tokenized)


TRL_CONFIGS = {   # name -> (weights, gradient checkpointing, precompute reference log-probs)
    f"{w}-{'gc' if gc else 'nogc'}-{'pre' if pre else 'step'}": (w, gc, pre)
    for w in ("bf16", "autocast") for gc in (True, False) for pre in (False, True)}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from alignment.models import load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m")
    rows = [json.loads(line) for line in open(args.pairs)]
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    weights, checkpointing, precompute = TRL_CONFIGS[args.trl_config]
    config = DPOConfig(output_dir=args.workdir + "/trl", beta=0.1, learning_rate=5e-6,
                       per_device_train_batch_size=args.batch, max_steps=args.steps,
                       max_length=args.max_length, bf16=True,
                       gradient_checkpointing=checkpointing,
                       precompute_ref_log_probs=precompute,
                       precompute_ref_batch_size=args.batch,
                       use_cpu=True, report_to=[], save_strategy="no", logging_steps=1,
                       lr_scheduler_type="constant", seed=0, disable_tqdm=True)
    dtype = torch.bfloat16 if weights == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(path), callbacks=[Timer()])
    start = time.perf_counter()
    trainer.train()          # includes the precompute pass when it is on
    return {"seconds": time.perf_counter() - start, "step_seconds": step_times}


def run_ours(args) -> dict:
    from alignment.config import recipe_from_dict
    from alignment.trainers.dpo import DPOTrainer

    recipe = recipe_from_dict({
        "algorithm": "dpo", "output_dir": args.workdir + "/ours",
        "model": {"name": "smollm2-135m",
                  "dtype": "bfloat16"},
        "data": {"train": args.pairs, "eval": None, "max_length": args.max_length},
        "trainer": {"lr": 5e-6, "batch_size": args.batch, "max_steps": args.steps,
                    "scheduler": "constant", "save_every": None, "seed": 0,
                    "optimizer": args.our_optimizer},
        "dpo": {"beta": 0.1}, "eval": {"before_after": False},
        "logging": {"report_to": [], "progress_bar": False},
    })
    trainer = DPOTrainer(recipe)
    trainer.export_final = lambda: None  # saving is not timed (nor done) in the bench
    trainer.save_checkpoint = lambda history: None
    start = time.perf_counter()
    trainer.train()                      # includes the reference pass before the first step
    seconds = time.perf_counter() - start
    steps = [r["step_seconds"] for r in _history(args.workdir + "/ours") if "step_seconds" in r]
    return {"seconds": seconds, "step_seconds": steps}


def _history(out: str) -> list[dict]:
    return [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = run_trl(args) if args.worker == "trl" else run_ours(args)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result))


def launch(which: str, trl_config: str, args, pairs: str, workdir: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--trl-config", trl_config,
           "--pairs", pairs,
           "--workdir", workdir, "--steps", str(args.steps), "--batch", str(args.batch),
           "--max-length", str(args.max_length), "--threads", str(args.threads),
           "--our-optimizer", args.our_optimizer]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{which} {trl_config} failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--repeat", type=int, default=1,
                   help="write each answer this many times (longer sequences)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--trl-configs", default=",".join(TRL_CONFIGS),
                   help="comma-separated, from: " + ", ".join(TRL_CONFIGS))
    p.add_argument("--our-optimizer", choices=["adamw", "adamw_kahan"], default="adamw",
                   help="our trainer.optimizer (adamw_kahan: no fp32 master copy)")
    p.add_argument("--worker", choices=["trl", "ours"])
    p.add_argument("--trl-config", default="bf16-nogc-pre")
    p.add_argument("--pairs")
    p.add_argument("--workdir")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.worker:
        return worker(args)

    workdir = tempfile.mkdtemp(prefix="bench-dpo-")
    pairs = Path(workdir) / "pairs.jsonl"
    with open(DATA) as f:
        rows = [json.loads(next(f)) for _ in range(args.steps * args.batch)]
    pairs.write_text("".join(json.dumps(lengthen(r, args.repeat)) + "\n" for r in rows))
    tokens = pair_tokens(str(pairs))
    print(f"DPO bench: {args.steps} steps x {args.batch} pairs ({tokens} tokens, answers x "
          f"{args.repeat}), "
          f"max_length {args.max_length}, {args.threads} threads")
    unknown = set(args.trl_configs.split(",")) - set(TRL_CONFIGS)
    if unknown:
        sys.exit(f"unknown --trl-configs {sorted(unknown)}; allowed: {', '.join(TRL_CONFIGS)}")
    print(f"{'trainer':<26}{'s/step':>8}{'tok/s':>9}{'peak RSS GB':>13}")
    results = {}
    runs = [("trl", c) for c in args.trl_configs.split(",")] + [("ours", "bf16")]
    for which, config in runs:
        r = launch(which, config, args, str(pairs), workdir)
        r["tokens_per_s"] = tokens / r["seconds"]
        r["s_per_step"] = r["seconds"] / args.steps
        name = f"trl-{config}" if which == "trl" else "ours-bf16"
        results[name] = r
        print(f"{name:<26}{r['s_per_step']:>8.2f}{r['tokens_per_s']:>9.1f}"
              f"{r['peak_rss_gb']:>13.2f}", flush=True)
    ours = results.pop("ours-bf16")
    best = max(results, key=lambda k: results[k]["tokens_per_s"])
    lowest = min(results, key=lambda k: results[k]["peak_rss_gb"])
    print(f"ours / fastest TRL ({best}): "
          f"{ours['tokens_per_s'] / results[best]['tokens_per_s']:.2f}x tokens/s, "
          f"peak RSS {ours['peak_rss_gb']:.2f} vs {results[best]['peak_rss_gb']:.2f} GB "
          f"(TRL's lowest: {results[lowest]['peak_rss_gb']:.2f} GB, {lowest})")
    results["ours-bf16"] = ours
    results["fastest_trl"] = best
    results["config"] = {"our_optimizer": args.our_optimizer, "steps": args.steps,
                         "batch": args.batch, "repeat": args.repeat,
                         "max_length": args.max_length, "tokens": tokens,
                         "threads": args.threads}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
