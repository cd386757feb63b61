"""Curves of several training runs on one figure (from their `metrics.jsonl`).

    python bench/plot_runs.py ppo=runs/ppo apa=runs/apa drpo=runs/drpo \\
        --out docs/actor_critic.png

Panels: held-out greedy accuracy (engine eval), batch reward, KL to the reference
(per sequence), value loss, the critic's explained variance, and wall time per step, each
against the step; a key a run does not log is left out of its panel, a key no run logs
has no panel.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PANELS = [("eval/accuracy", "held-out accuracy (greedy)"), ("reward", "batch reward"),
          ("policy/kl", "KL to reference (nats / seq)"), ("loss/value", "value loss"),
          ("critic/explained_variance", "critic explained variance"),
          ("step_seconds", "seconds / step")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="label=output_dir")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {}
    for spec in args.runs:
        label, _, folder = spec.partition("=")
        rows = [json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
        runs[label] = rows
    panels = [(k, t) for k, t in PANELS if any(k in r for rows in runs.values() for r in rows)]
    cols = min(3, len(panels))
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.4 * cols, 3.3 * rows_n), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for label, rows in runs.items():
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=label,
                        marker="." if len(points) < 20 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
