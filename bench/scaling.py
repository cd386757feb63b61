"""One recipe, several launch settings, same global batch: time per step and throughput.

    .venv/bin/python bench/scaling.py --json bench/scaling.json
    .venv/bin/python bench/scaling.py --recipe recipes/dpo.yaml --steps 10 --global-batch 8

Each variant is a real `alignment train` run (its own processes, started by the same
launcher a user gets) on the bundled model: 1 process, 2 processes (DDP), DeepSpeed ZeRO-2
and ZeRO-3 on 2 processes. The micro-batch is the global batch divided by the largest
process count; fewer processes accumulate more micro-batches per step, so every variant
takes the same optimiser steps on the same micro-batches (bf16 losses then agree to
rounding; fp32 exactly, see tests/test_distributed.py). Numbers
come from each run's summary.json (steps and tokens only: loading, reference log-probs and
saving are outside the timed loop) and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "1 process": (1, None),
    "2 processes, DDP": (2, None),
    "2 processes, ZeRO-2": (2, "launch/deepspeed_zero2.yaml"),
    "2 processes, ZeRO-3": (2, "launch/deepspeed_zero3.yaml"),
}


def run(name: str, processes: int, config: str | None, args, out: Path) -> dict:
    most = max(n for n, _ in VARIANTS.values())
    overrides = [f"output_dir={out}", f"trainer.max_steps={args.steps}",
                 f"trainer.batch_size={args.global_batch // most}",
                 f"trainer.grad_accum={most // processes}",
                 "trainer.save_every=null", "trainer.eval_every=null", "data.eval=null",
                 f"data.train_limit={args.train_limit}", "eval.before_after=false",
                 f"model.dtype={args.dtype}", "logging.report_to=[]",
                 f"launch.num_processes={processes}"]
    if config:
        overrides.append(f"launch.config_file={config}")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "alignment", "train", args.recipe, *overrides],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"variant": name, "error": f"exit {proc.returncode}"}
    summary = json.loads((out / "summary.json").read_text())
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_seconds"] for r in steps if "step_seconds" in r][1:]   # first = warm-up
    return {"variant": name, "processes": processes, "config": config,
            "s_per_step": round(sum(times) / len(times), 3),
            "tokens_per_s": summary["tokens_per_s"], "wall_s": round(wall, 1),
            "losses": [round(r["loss"], 5) for r in steps if "loss" in r]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="recipes/dpo.yaml")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--train-limit", type=int, default=160)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--only", nargs="*", default=None, help="variant names to run")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (processes, config)) in enumerate(VARIANTS.items()):
            if args.only and name not in args.only:
                continue
            out = Path(tmp) / f"run{i}"
            results.append(run(name, processes, config, args, out))
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps(results[-1]), flush=True)
    base = next((r for r in results if r.get("processes") == 1), None)
    print(f"\n{args.recipe}, {args.dtype}, global batch {args.global_batch}, {args.steps} steps")
    print(f"{'variant':<24} {'s/step':>8} {'tokens/s':>9} {'vs 1 process':>13}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<24} {r['error']}")
            continue
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        print(f"{r['variant']:<24} {r['s_per_step']:>8.2f} {r['tokens_per_s']:>9.1f} {ratio:>13}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
