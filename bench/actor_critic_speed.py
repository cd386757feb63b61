"""Seconds per step of PPO, APA and DR-PO against GRPO at the same samples per step, with
the time split, on the bundled model (each algorithm from its shipped recipe).

    python bench/actor_critic_speed.py                     # 8 steps each, all four
    python bench/actor_critic_speed.py --steps 6 --algorithms ppo grpo --json out.json

Every recipe samples 64 completions per step (GRPO 8 prompts x 8, the others 16 x 4) of at
most 16 tokens at temperature 0.7 with the same reward; each run is a fresh
`alignment train` process with evaluation and checkpoints off. Reported: the mean over
steps 2..N (step 1 is warm-up) of the step time and of its parts: generate (engine),
score (verifier), prepare (no-grad passes of pi_old / pi_ref / critic, GAE; GRPO: pi_ref
only when beta > 0), update (forward + backward + optimizer, all epochs), sync (weights
into the engine); and the run's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("generate", "score", "prepare", "update", "sync")


def run(algorithm: str, steps: int, out: Path) -> dict:
    overrides = [f"output_dir={out}", f"trainer.max_steps={steps}", "trainer.eval_every=null",
                 "trainer.save_every=null", "eval.before_after=false", "data.eval=null",
                 "logging.progress_bar=false", "logging.report_to=[]"]
    # a fresh wrapper per run: RUSAGE_CHILDREN is then this run's peak alone
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "alignment", "train",
           str(ROOT / "recipes" / f"{algorithm}.yaml"), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{algorithm} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_seconds" in r][1:]   # steady state: steps 2..N
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    return {"algorithm": algorithm, "steps": len(rows), "samples": mean("samples"),
            "s_per_step": mean("step_seconds"),
            **{p: mean(f"time/{p}") for p in PARTS},
            "peak_rss_gb": int(proc.stdout.split()[-1]) / 1024**2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--algorithms", nargs="+", default=["grpo", "ppo", "apa", "drpo"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in args.algorithms:
            results.append(run(algorithm, args.steps, Path(tmp) / algorithm))
            r = results[-1]
            print(f"{algorithm:5s} {r['s_per_step']:6.2f} s/step ({r['samples']:.0f} samples) | "
                  + " ".join(f"{p} {r[p]:.2f}" for p in PARTS)
                  + f" | peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
    base = next((r for r in results if r["algorithm"] == "grpo"), None)
    if base:
        for r in results:
            print(f"{r['algorithm']}: {r['s_per_step'] / base['s_per_step']:.2f}x GRPO's s/step")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
