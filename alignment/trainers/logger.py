"""Metrics out: a live progress bar, `metrics.jsonl`, the experiment trackers of
`logging.report_to` (TensorBoard, wandb, trackio, mlflow: Accelerate's tracker classes),
and at the end a `summary.json` plus `curves.png` of the logged curves. Only the main
process writes.

The trackers are built here rather than through `Accelerator(log_with=...)`: this is
already the one object that writes on the main process only and knows the step a run
resumes from (TensorBoard's purge step, the wandb / mlflow run to continue), which the
Accelerator, built before the checkpoint is found, does not.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from alignment import atomic

# shown in the progress bar, in this order, when present
BAR_KEYS = ("loss", "rewards/margin", "rewards/accuracy", "reward", "accuracy",
            "completion_length", "step_seconds", "eval/loss", "eval/accuracy",
            "eval/rewards/accuracy")
RUN_IDS = "tracking.json"   # in output_dir: the tracker runs a resumed run continues


class MetricsLogger:
    def __init__(self, output_dir: str | Path, *, enabled: bool, total_steps: int,
                 start_step: int = 0, report_to: Sequence[str] = ("tensorboard",),
                 run_name: str | None = None, project: str = "alignment",
                 config: dict | None = None, progress_bar: bool = True):
        """report_to: tracker names (see `logging.report_to`); config: the resolved recipe
        (`recipe_to_dict`), logged as each tracker run's config."""
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.history: list[dict] = []
        self.trackers: list = []
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
        names = [n for n in report_to if n != "none"]
        if names:
            self.trackers = start_trackers(names, self.dir, start_step=start_step,
                                           run_name=run_name or self.dir.resolve().name,
                                           project=project, config=config or {})
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
        for tracker in self.trackers:
            tracker.log({k: v for k, v in row.items() if k != "step"}, step=step)
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
        for tracker in self.trackers:
            tracker.finish()
        if summary is not None:
            atomic.write_json(self.dir / "summary.json", summary)
            plot_curves(self.history, self.dir / "curves.png")


def start_trackers(names: Sequence[str], out: Path, *, start_step: int, run_name: str,
                   project: str, config: dict) -> list:
    """Start Accelerate's trackers for `names` and log `config` (the resolved recipe) as each
    run's config. A fresh run (start_step 0) starts new tracker runs; a resumed one
    continues those whose ids `out/tracking.json` holds (TensorBoard: same folder, events
    after the checkpoint purged)."""
    from accelerate import PartialState, tracking

    PartialState()   # (the trackers log through Accelerate's logger, which needs its state)
    resumed = start_step > 0
    ids_file = out / RUN_IDS
    if not resumed:
        ids_file.unlink(missing_ok=True)   # a new run: never continue an older run's ids
    ids = json.loads(ids_file.read_text()) if ids_file.is_file() else {}
    flat = _flatten(config)   # TensorBoard hparams and mlflow params take flat scalars
    trackers = []
    for name in names:
        if name == "tensorboard":
            tracker = tracking.TensorBoardTracker(run_name, out / "logs",
                                                  purge_step=start_step + 1)
            tracker.start()
            tracker.store_init_configuration(flat)
            tracker.writer.add_text("recipe", _as_markdown_code(config), start_step)
        elif name == "wandb":
            ids.setdefault("wandb", uuid.uuid4().hex[:8])
            # (Accelerate hands its first argument to wandb.init as the project)
            tracker = tracking.WandBTracker(project, name=run_name, id=ids["wandb"],
                                            resume="allow",
                                            dir=os.environ.get("WANDB_DIR") or str(out))
            tracker.start()
            tracker.store_init_configuration(config)   # wandb keeps the nesting
        elif name == "trackio":
            # (its store_init_configuration calls dict.update with a wandb-only keyword:
            # the config goes in at init instead; a resumed run continues by name)
            tracker = tracking.TrackioTracker(project, name=run_name, config=config,
                                              resume="allow" if resumed else "never")
            tracker.start()
        elif name == "mlflow":
            tracker = tracking.MLflowTracker(project, run_id=ids.get("mlflow"),
                                             run_name=run_name)
            tracker.start()
            if "mlflow" not in ids:   # params are write-once: log them when the run starts
                tracker.store_init_configuration(flat)
                ids["mlflow"] = tracker.active_run.info.run_id
        else:
            raise ValueError(f"unknown tracker {name!r}")   # the recipe check said so first
        trackers.append(tracker)
    if ids:
        atomic.write_json(ids_file, ids)
    return trackers


def _flatten(config: dict, prefix: str = "") -> dict:
    """{'trainer': {'lr': 1e-5}} -> {'trainer.lr': 1e-5}; values other than a bool, number
    or string (lists, null) as JSON text."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            plain = isinstance(value, (bool, int, float, str))
            flat[f"{prefix}{key}"] = value if plain else json.dumps(value)
    return flat


def _as_markdown_code(config: dict) -> str:
    """The recipe as YAML in a Markdown code block (TensorBoard renders text as Markdown)."""
    import yaml

    text = yaml.safe_dump(config, sort_keys=False)
    return "\n".join("    " + line for line in text.splitlines())


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
