"""Recipes under several launch settings, same global batch: time per step, throughput,
peak memory per process, and whether each run followed one process's losses.

    .venv/bin/python bench/scaling.py --json bench/scaling.json          # DPO, bundled, bf16
    .venv/bin/python bench/scaling.py --recipes all --tiny --steps 3      # every trainer

Each variant is a real `alignment train` run (its own processes, started by the same
launcher a user gets): 1 process, and on 2 processes DDP, DeepSpeed ZeRO-2, ZeRO-3 and
FSDP2 (`launch/fsdp.yaml`). Offline trainers: the micro-batch is the global batch divided
by the largest process count and fewer processes accumulate more micro-batches per step;
online trainers: each process samples its share of the step's prompts. So every variant
takes the same optimiser steps on the same data, and its losses should follow the one
process's (fp32 to ~1e-6, bf16 to rounding; tests/test_sharding.py checks models).
`--tiny` trains a tiny random Llama with the bundled tokenizer in fp32 (seconds per run: the
equality check over every trainer); the default is the bundled model in bf16 (the speed
and memory of each launch setting).

Timing comes from each run's metrics.jsonl (steps after the first; loading, reference
log-probs and saving are outside it). Peak RSS per process is sampled every 0.1 s from
the run's worker processes (those with a LOCAL_RANK, or the one process) and reported for
the largest rank.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "1 process": (1, None),
    "2 processes, DDP": (2, None),
    "2 processes, ZeRO-2": (2, "launch/deepspeed_zero2.yaml"),
    "2 processes, ZeRO-3": (2, "launch/deepspeed_zero3.yaml"),
    "2 processes, FSDP2": (2, "launch/fsdp.yaml"),
}
ALL_RECIPES = ["dpo", "ipo", "copg", "spin", "sft_mix", "reward_model", "grpo", "online_dpo",
               "ppo", "apa", "drpo"]


class PeakRss:
    """The largest resident memory of any worker process of a run, sampled in a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.peak, self.done = proc, 0, False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        import psutil

        top = psutil.Process(self.proc.pid)
        while not self.done:
            try:
                family = top.children(recursive=True)
                workers = [p for p in family if _is_worker(p)] or [top]
                self.peak = max([self.peak] + [_rss(p) for p in workers])
            except psutil.Error:
                pass
            time.sleep(0.1)

    def stop(self) -> float:
        self.done = True
        self.thread.join()
        return self.peak / 2**30


def _is_worker(p) -> bool:
    try:
        return "LOCAL_RANK" in p.environ()
    except Exception:   # (gone, or not ours)
        return False


def _rss(p) -> int:
    try:
        return p.memory_info().rss
    except Exception:
        return 0


def overrides(recipe: dict, processes: int, args, out: Path) -> list[str]:
    most = max(n for n, _ in VARIANTS.values())
    algo = recipe["algorithm"]
    section = recipe.get(algo) or {}
    common = [f"output_dir={out}", f"trainer.max_steps={args.steps}", "trainer.save_every=null",
              "trainer.eval_every=null", "data.eval=null", f"data.train_limit={args.train_limit}",
              "eval.before_after=false", "logging.report_to=[]",
              f"launch.num_processes={processes}"]
    if args.tiny:
        common += [f"model.name={args.tiny}", "model.dtype=float32", f"model.lora.r={args.lora}",
                   "model.lora.alpha=8"]
        if args.lora and algo in ("ppo", "apa", "drpo"):   # the critic's adapters too
            common += [f"critic.lora.r={args.lora}", "critic.lora.alpha=8"]
    else:
        common.append(f"model.dtype={args.dtype}")
    if "prompts_per_step" in section:   # online: each process samples its share
        online = [f"{algo}.prompts_per_step={args.global_prompts // processes}",
                  "rollout.backend=hf", f"rollout.max_new_tokens={args.new_tokens}"]
        if args.tiny:   # (a random model answers nothing right: reward what varies, the
            online.append('rewards=[{name: regex, pattern: "^ "}]')   # leading space)
        return common + online
    extra = ["rollout.backend=hf", f"rollout.max_new_tokens={args.new_tokens}"] \
        if algo == "spin" else []
    return common + extra + [f"trainer.batch_size={args.global_batch // most}",
                             f"trainer.grad_accum={most // processes}"]


def run(name: str, processes: int, config: str | None, recipe_path: str, args,
        out: Path) -> dict:
    recipe = yaml.safe_load(Path(recipe_path).read_text())
    cmd = [sys.executable, "-m", "alignment", "train", recipe_path,
           *overrides(recipe, processes, args, out)]
    if config:
        cmd.append(f"launch.config_file={config}")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = PeakRss(proc)
    _, stderr = proc.communicate()
    peak = rss.stop()
    wall = time.perf_counter() - start
    row = {"recipe": recipe_path, "variant": name, "processes": processes, "config": config}
    if proc.returncode:
        print(stderr[-3000:], file=sys.stderr)
        return {**row, "error": f"exit {proc.returncode}"}
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_seconds"] for r in steps if "step_seconds" in r][1:]   # first: warm-up
    tokens = [r["tokens"] for r in steps if "tokens" in r][1:]
    return {**row, "s_per_step": round(sum(times) / max(len(times), 1), 3),
            "tokens_per_s": round(sum(tokens) / max(sum(times), 1e-9), 1),
            "peak_rss_gb": round(peak, 2), "wall_s": round(wall, 1),
            "losses": [r["loss"] for r in steps if "loss" in r]}


def report(results: list[dict], args) -> None:
    print(f"\n{'dtype fp32, tiny model' if args.tiny else f'{args.dtype}, bundled model'}, "
          f"{args.steps} steps{f', LoRA r={args.lora}' if args.lora else ''}")
    print(f"{'recipe':<22} {'variant':<22} {'s/step':>7} {'tok/s':>8} {'vs 1':>6} "
          f"{'peak RSS/proc':>13} {'max |Δloss| vs 1':>17}")
    for r in results:
        base = next((b for b in results if b["recipe"] == r["recipe"]
                     and b.get("processes") == 1 and "error" not in b), None)
        name = Path(r["recipe"]).stem
        if "error" in r:
            print(f"{name:<22} {r['variant']:<22} {r['error']}")
            continue
        ratio = (f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x"
                 if base and base["tokens_per_s"] else "-")
        gap = (max(abs(a - b) for a, b in zip(r["losses"], base["losses"], strict=True))
               if base and r["losses"] and len(base["losses"]) == len(r["losses"])
               else float("nan"))   # (nan: no step had a loss to compare)
        print(f"{name:<22} {r['variant']:<22} {r['s_per_step']:>7.2f} {r['tokens_per_s']:>8.1f} "
              f"{ratio:>6} {r['peak_rss_gb']:>10.2f} GB {gap:>17.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="dpo", help="comma-separated recipe names or paths, "
                   f"or 'all' ({', '.join(ALL_RECIPES)})")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--global-batch", type=int, default=8, help="offline: examples per step")
    p.add_argument("--global-prompts", type=int, default=4, help="online: prompts per step")
    p.add_argument("--new-tokens", type=int, default=16, help="online / SPIN generation budget")
    p.add_argument("--train-limit", type=int, default=160)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tiny", action="store_true",
                   help="a tiny random Llama in fp32 (fast: the equality check)")
    p.add_argument("--lora", type=int, default=0,
                   help="with --tiny: LoRA rank of the policy (and critic); 0 = full fine-tuning")
    p.add_argument("--only", nargs="*", default=None, help="variant names to run")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    names = ALL_RECIPES if args.recipes == "all" else args.recipes.split(",")
    paths = [n if n.endswith(".yaml") else f"recipes/{n}.yaml" for n in names]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from alignment.models import make_tiny_model

            args.tiny = make_tiny_model(Path(tmp) / "tiny", seed=1)
        for path in paths:
            for i, (name, (processes, config)) in enumerate(VARIANTS.items()):
                if args.only and name not in args.only:
                    continue
                out = Path(tmp) / f"{Path(path).stem}-{i}"
                results.append(run(name, processes, config, path, args, out))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "losses"}),
                      flush=True)
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                              indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
