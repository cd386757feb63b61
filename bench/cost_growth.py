"""How cost grows: GRPO s/step vs completion length and group size, DPO tokens/s vs sequence
length; ours vs TRL in the same run, one figure.

    python bench/cost_growth.py                      # everything (~30 min on 2 cores)
    python bench/cost_growth.py --parts grpo-length --steps 3

Each point is one invocation of the same-run benches (`bench/grpo_vs_trl.py`,
`bench/dpo_vs_trl.py`), every trainer in its own fresh process:
  grpo-length  2 prompts x 4 samples, at most 16 / 64 / 256 new tokens (bf16)
  grpo-group   2 prompts x G = 4 / 8 / 16 samples, at most 32 new tokens (bf16)
  dpo-length   4 steps of 4 pairs, each answer written 1 / 4 / 16 times (bf16; TRL in the
               fastest configuration of the last `bench/dpo_vs_trl.json`, or --dpo-trl-config)
GRPO completions stop at EOS: the mean completion tokens actually generated per step are
recorded next to each time (a longer budget is only as costly as what the policy writes).
Writes bench/cost_growth.json and bench/cost_growth.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"grpo-length": ("new-tokens", [16, 64, 256]),
         "grpo-group": ("generations", [4, 8, 16]),
         "dpo-length": ("repeat", [1, 4, 16])}


def run(cmd: list[str]) -> dict:
    out_json = Path(tempfile.mkdtemp(prefix="cost-growth-")) / "result.json"
    print("$", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run([*cmd, "--json", str(out_json)], check=False, text=True,
                          stdout=sys.stdout, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(out_json.read_text())


def grpo_point(knob: str, value: int, steps: int) -> dict:
    args = {"new-tokens": 32, "generations": 4, knob: value}
    r = run([sys.executable, str(ROOT / "bench/grpo_vs_trl.py"), "--dtypes", "bf16",
             "--steps", str(steps), "--new-tokens", str(args["new-tokens"]),
             "--generations", str(args["generations"])])
    point = {knob: value}
    for who in ("trl", "ours"):
        x = r[f"{who}-bf16"]
        point[who] = {"s_per_step": x["s_per_step"], "peak_rss_gb": x["peak_rss_gb"],
                      "completion_tokens_per_step": x["completion_tokens_per_step"]}
    point["trl_over_ours"] = point["trl"]["s_per_step"] / point["ours"]["s_per_step"]
    return point


def dpo_point(repeat: int, trl_config: str) -> dict:
    r = run([sys.executable, str(ROOT / "bench/dpo_vs_trl.py"), "--repeat", str(repeat),
             "--steps", "4", "--batch", "4", "--max-length", str(192 * repeat),
             "--trl-configs", trl_config])
    ours, trl = r["ours-bf16"], r[f"trl-{trl_config}"]
    tokens = r["config"]["tokens"]
    per_sequence = tokens / (2 * r["config"]["steps"] * r["config"]["batch"])
    return {"repeat": repeat, "tokens_per_sequence": per_sequence,
            "ours": {"tokens_per_s": ours["tokens_per_s"], "peak_rss_gb": ours["peak_rss_gb"]},
            "trl": {"tokens_per_s": trl["tokens_per_s"], "peak_rss_gb": trl["peak_rss_gb"],
                    "config": trl_config},
            "ours_over_trl": ours["tokens_per_s"] / trl["tokens_per_s"]}


def fastest_dpo_config() -> str:
    saved = ROOT / "bench/dpo_vs_trl.json"
    if saved.exists():
        return json.loads(saved.read_text()).get("fastest_trl", "trl-bf16-nogc-pre")[4:]
    return "bf16-nogc-pre"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PARTS if p in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, part in zip(axes[0], panels, strict=True):
        points = results[part]
        if part == "dpo-length":
            x = [round(p["tokens_per_sequence"]) for p in points]
            key, ylabel = "tokens_per_s", "tokens/s (higher is better)"
            title, xlabel = "DPO: throughput vs sequence length", "tokens per sequence"
        else:
            knob = PARTS[part][0]
            x = [p[knob] for p in points]
            key, ylabel = "s_per_step", "s/step (lower is better)"
            xlabel = "max new tokens" if knob == "new-tokens" else "samples per prompt (G)"
            title = f"GRPO: s/step vs {xlabel}"
        for who, label in (("ours", "ours"), ("trl", "TRL (fastest config)")):
            ax.plot(x, [p[who][key] for p in points], "o-", label=label)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale="log", ylim=(0, None))
        ax.set_xticks(x, [str(v) for v in x])
        ax.minorticks_off()
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=", ".join(PARTS))
    p.add_argument("--steps", type=int, default=3, help="GRPO steps per run (first = warm-up)")
    p.add_argument("--dpo-trl-config", default=None,
                   help="TRL's DPO configuration (default: the fastest in bench/dpo_vs_trl.json)")
    p.add_argument("--out", default=str(ROOT / "bench/cost_growth"))
    p.add_argument("--plot-only", action="store_true", help="redraw from the saved JSON")
    args = p.parse_args()
    if args.plot_only:
        return plot(json.loads(Path(args.out + ".json").read_text()), Path(args.out + ".png"))
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        p.error(f"unknown --parts {sorted(unknown)}; allowed: {', '.join(PARTS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_json = Path(args.out + ".json")
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    trl_dpo = args.dpo_trl_config or fastest_dpo_config()
    for part in parts:
        knob, values = PARTS[part]
        results[part] = [dpo_point(v, trl_dpo) if part == "dpo-length"
                         else grpo_point(knob, v, args.steps) for v in values]
        out_json.write_text(json.dumps(results, indent=1))   # after each part: resumable
        for point in results[part]:
            print(part, json.dumps(point), flush=True)
    plot(results, Path(args.out + ".png"))
    print(f"wrote {out_json} and {args.out}.png")


if __name__ == "__main__":
    main()
