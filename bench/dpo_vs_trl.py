"""DPO training speed and memory: TRL's DPOTrainer vs ours, same run, same everything.

    python bench/dpo_vs_trl.py                      # bf16 and fp32, 8 steps of 4 pairs
    python bench/dpo_vs_trl.py --dtypes bf16 --steps 12 --batch 4

Both trainers get: the bundled SmolLM2-135M-Instruct, the same first steps x batch pairs of
data/arithmetic/preference/train.jsonl (conversational form, same chat template; the
token sequences are identical, see tests/test_dpo_trainer.py), β = 0.1, lr 5e-6, AdamW,
the same batch, max length, dtype and thread count, one epoch over those pairs. Each
trainer runs in its own fresh process so that peak RSS (VmHWM) is its own.

What is timed: the training steps plus the reference log-prob computation (TRL runs the
reference model inside every step; ours runs it once, batched, before the first step), so
"tokens/s" is end to end over the same work. Tokens are those of the two sequences of each
pair (prompt+chosen, prompt+rejected), counted identically for both. Model loading and
saving are not timed.
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


def pair_tokens(pairs_file: str) -> int:
    from alignment.data import load_examples, tokenize_examples
    from alignment.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m"))
    tokenized, _ = tokenize_examples(tokenizer, load_examples(pairs_file, "preference"),
                                     max_length=10_000, max_prompt_length=5_000)
    return sum(2 * len(t.prompt_ids) + len(t.completion_ids["chosen"])
               + len(t.completion_ids["rejected"]) for t in tokenized)


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

    config = DPOConfig(output_dir=args.workdir + "/trl", beta=0.1, learning_rate=5e-6,
                       per_device_train_batch_size=args.batch, max_steps=args.steps,
                       max_length=args.max_length, bf16=args.dtype == "bf16",
                       use_cpu=True, report_to=[], save_strategy="no", logging_steps=1,
                       lr_scheduler_type="constant", seed=0, disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(path), callbacks=[Timer()])
    trainer.train()
    return {"seconds": sum(step_times), "step_seconds": step_times}


def run_ours(args) -> dict:
    from alignment.config import recipe_from_dict
    from alignment.trainers.dpo import DPOTrainer

    recipe = recipe_from_dict({
        "algorithm": "dpo", "output_dir": args.workdir + "/ours",
        "model": {"name": "smollm2-135m",
                  "dtype": "bfloat16" if args.dtype == "bf16" else "float32"},
        "data": {"train": args.pairs, "eval": None, "max_length": args.max_length},
        "trainer": {"lr": 5e-6, "batch_size": args.batch, "max_steps": args.steps,
                    "scheduler": "constant", "save_every": None, "seed": 0},
        "dpo": {"beta": 0.1}, "eval": {"before_after": False},
        "logging": {"tensorboard": False, "progress_bar": False},
    })
    trainer = DPOTrainer(recipe)
    start = time.perf_counter()
    trainer.before_training()           # the reference pass, timed as part of the work
    reference_seconds = time.perf_counter() - start
    trainer.before_training = lambda: None
    trainer.export_final = lambda: None  # saving is not timed (nor done) in the bench
    trainer.save_checkpoint = lambda history: None
    trainer.train()
    steps = [r["step_seconds"] for r in _history(args.workdir + "/ours") if "step_seconds" in r]
    return {"seconds": reference_seconds + sum(steps), "step_seconds": steps,
            "reference_seconds": reference_seconds}


def _history(out: str) -> list[dict]:
    return [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = run_trl(args) if args.worker == "trl" else run_ours(args)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result))


def launch(which: str, dtype: str, args, pairs: str, workdir: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--dtype", dtype, "--pairs", pairs,
           "--workdir", workdir, "--steps", str(args.steps), "--batch", str(args.batch),
           "--max-length", str(args.max_length), "--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{which} {dtype} failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--worker", choices=["trl", "ours"])
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--pairs")
    p.add_argument("--workdir")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.worker:
        return worker(args)

    workdir = tempfile.mkdtemp(prefix="bench-dpo-")
    pairs = Path(workdir) / "pairs.jsonl"
    with open(DATA) as f:
        rows = [next(f) for _ in range(args.steps * args.batch)]
    pairs.write_text("".join(rows))
    tokens = pair_tokens(str(pairs))
    print(f"DPO bench: {args.steps} steps x {args.batch} pairs ({tokens} tokens), "
          f"max_length {args.max_length}, {args.threads} threads")
    print(f"{'dtype':<6}{'trainer':<8}{'s/step':>8}{'tok/s':>9}{'peak RSS GB':>13}")
    results = {}
    for dtype in args.dtypes.split(","):
        for which in ("trl", "ours"):
            r = launch(which, dtype, args, str(pairs), workdir)
            r["tokens_per_s"] = tokens / r["seconds"]
            r["s_per_step"] = r["seconds"] / args.steps
            results[f"{which}-{dtype}"] = r
            print(f"{dtype:<6}{which:<8}{r['s_per_step']:>8.2f}{r['tokens_per_s']:>9.1f}"
                  f"{r['peak_rss_gb']:>13.2f}", flush=True)
        trl, ours = results[f"trl-{dtype}"], results[f"ours-{dtype}"]
        print(f"{dtype:<6}{'ratio':<8}{'':>8}{ours['tokens_per_s'] / trl['tokens_per_s']:>8.2f}x"
              f"{ours['peak_rss_gb'] / trl['peak_rss_gb']:>12.2f}x  (ours / TRL)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
