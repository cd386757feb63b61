"""Metrics out: a live progress bar, TensorBoard, `metrics.jsonl`, and at the end a
`summary.json` plus `curves.png` of the logged curves. Only the main process writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignment import atomic

# shown in the progress bar, in this order, when present
BAR_KEYS = ("loss", "rewards/margin", "rewards/accuracy", "reward", "accuracy",
            "completion_length", "step_seconds", "eval/loss", "eval/accuracy",
            "eval/rewards/accuracy")


class MetricsLogger:
    def __init__(self, output_dir: str | Path, *, enabled: bool, total_steps: int,
                 start_step: int = 0, tensorboard: bool = True, progress_bar: bool = True):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.history: list[dict] = []
        self.writer = None
        self.bar = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "metrics.jsonl"
        if start_step == 0 and self.jsonl.exists():
            self.jsonl.unlink()  # a fresh run: do not mix with an old one's curves
        elif self.jsonl.exists():  # resumed: keep the curve up to the checkpoint only
            rows = _read_rows(self.jsonl)
            # (rows of the checkpoint's own step holding only eval/* values were logged
            # after it was saved: the final evaluation, which the resumed run redoes)
            self.history = [r for r in rows if r["step"] < start_step or (
                r["step"] == start_step and not all(k.startswith("eval/") for k in r
                                                    if k != "step"))]
            atomic.write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.history))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.dir / "logs"), purge_step=start_step + 1)
        if progress_bar and sys.stderr.isatty():  # otherwise one plain line per log
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step",
                            dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            shown = {_short(k): f"{row[k]:.4g}" for k in BAR_KEYS if k in row}
            self.bar.set_postfix(shown, refresh=False)
        else:
            text = " ".join(f"{_short(k)}={row[k]:.4g}" for k in BAR_KEYS if k in row)
            print(f"step {step}: {text}", file=sys.stderr, flush=True)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self, summary: dict | None = None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if summary is not None:
            atomic.write_json(self.dir / "summary.json", summary)
            plot_curves(self.history, self.dir / "curves.png")


def _read_rows(path: Path) -> list[dict]:
    """The rows of metrics.jsonl; a last line that a kill cut short is dropped (its step
    comes after the checkpoint, so the resumed run logs it again)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _short(key: str) -> str:
    return {"eval/loss": "eval", "eval/accuracy": "eval_acc", "completion_length": "len",
            "step_seconds": "s/step", "rewards/accuracy": "pair_acc",
            "eval/rewards/accuracy": "eval_pair_acc"}.get(key, key.split("/")[-1])


def plot_curves(history: list[dict], path: Path, max_panels: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("eval/accuracy", "reward", "policy/kl", "loss/value",
                        "critic/explained_variance", "accuracy", "completion_length", "loss",
                        "eval/loss", "rewards/margin", "rewards/accuracy", "rewards/chosen",
                        "rewards/rejected", "kl", "lr", "grad_norm")
            if len({r[k] for r in history if k in r}) > 1][:max_panels]   # flat: not shown
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        points = [(r["step"], r[key]) for r in history if key in r]
        ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
