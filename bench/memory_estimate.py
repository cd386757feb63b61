"""The start-up memory estimate (alignment/memory_estimate.py) against the measured peak
resident memory of every shipped recipe.

    .venv/bin/python bench/memory_estimate.py --json bench/memory_estimate.json
    .venv/bin/python bench/memory_estimate.py --recipes dpo,grpo
    .venv/bin/python bench/memory_estimate.py --report bench/memory_estimate.json   # no runs:
                                                  # re-estimate the saved measurements

Each recipe runs as a real `alignment train` for a few steps, in its own process, with
overrides that shorten it without changing what the estimate sizes (model, dtype, batch
size, max_length, LoRA, optimizer, rollout batch and engine are the recipe's own):

    trainer.max_steps=2 trainer.save_every=2   the optimizer state exists from the first
                                               step; a checkpoint is written, as in a real run
    trainer.eval_every=null                    data.eval only at the end (the same engine
                                               KV cache: it is sized for that pass anyway)
    eval.before_after=false                    the HF generate passes before and after
    data.train_limit=64                        fewer rows to tokenise and to precompute
                                               reference log-probs for (SPIN: to generate)
    logging.report_to=[]

The estimate is computed for the same overridden recipe (it matters for SPIN only: its
engine's KV cache holds one iteration's generations, i.e. train_limit sequences). A recipe
whose model is a previous run's output that is not on disk (runs/sft_mix for the two
*_mix_columns recipes) runs on the bundled model instead: the same architecture and size.
The recipe's `memory_check` is off for the runs (the bench measures; it does not refuse).

Measured peak: the kernel's high-water mark of the training process (ru_maxrss from wait4,
exact), and the largest sample of `PeakRss` (bench/scaling.py, every 0.1 s), which also
covers launched worker processes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scaling import PeakRss  # noqa: E402 - bench/: the script's folder

GB = 1e9
SHORT = ["trainer.max_steps=2", "trainer.save_every=2", "trainer.eval_every=null",
         "eval.before_after=false", "data.train_limit=64", "logging.report_to=[]",
         "trainer.memory_check=false"]


def recipe_paths(names: str | None) -> list[Path]:
    if not names or names == "all":
        return sorted((ROOT / "recipes").glob("*.yaml"))
    return [Path(n) if n.endswith(".yaml") else ROOT / "recipes" / f"{n}.yaml"
            for n in names.split(",")]


def overrides_for(path: Path, out: Path) -> tuple[list[str], str | None]:
    """The run's overrides, and a note when the model had to be replaced."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    model = (raw.get("model") or {}).get("name", "smollm2-135m")
    extra, note = [], None
    if model.startswith("runs/") and not (ROOT / model).exists():
        extra, note = ["model.name=smollm2-135m"], f"{model} absent: bundled model"
    return [f"output_dir={out}", *SHORT, *extra], note


def estimate(path: Path, overrides: list[str]) -> dict:
    from alignment.config import load_recipe
    from alignment.memory_estimate import data_lengths, estimate_memory

    recipe = load_recipe(path, overrides)
    est = estimate_memory(recipe, lengths=data_lengths(recipe))
    return {"estimate_gb": est.total / GB, "terms_gb": {k: v / GB for k, v in est.terms().items()},
            "processes": est.processes}


def measure(path: Path, overrides: list[str], log: Path) -> dict:
    cmd = [sys.executable, "-m", "alignment", "train", str(path), *overrides]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                stdout=out, stderr=subprocess.STDOUT)
        sampled = PeakRss(proc)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampled_gb = sampled.stop() * 2**30 / GB
    row = {"wall_s": round(time.perf_counter() - start, 1),
           "peak_rss_gb": usage.ru_maxrss * 1024 / GB,        # (Linux: KiB)
           "sampled_peak_rss_gb": sampled_gb}
    if proc.returncode:
        row["error"] = f"exit {proc.returncode}: " + log.read_text()[-2000:]
    return row


def _error_and_terms(row: dict) -> tuple[float, list[tuple[str, float]]]:
    """The estimate's error in % of the measured peak, and its four largest terms."""
    err = 100 * (row["estimate_gb"] - row["peak_rss_gb"]) / row["peak_rss_gb"]
    return err, sorted(row["terms_gb"].items(), key=lambda kv: -kv[1])[:4]


def report(rows: list[dict]) -> str:
    lines = [f"{'recipe':<20} {'estimate GB':>11} {'measured GB':>11} {'error':>7}  "
             "largest terms (GB)"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['recipe']:<20} {r['estimate_gb']:>11.2f} {'failed':>11}")
            continue
        err, top = _error_and_terms(r)
        r["error_pct"] = round(err, 1)
        terms = ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.005)
        lines.append(f"{r['recipe']:<20} {r['estimate_gb']:>11.2f} {r['peak_rss_gb']:>11.2f} "
                     f"{err:>+6.1f}%  {terms}{'  (' + r['note'] + ')' if r.get('note') else ''}")
    errors = [abs(r["error_pct"]) for r in rows if "error_pct" in r]
    if errors:
        lines.append(f"largest |error|: {max(errors):.1f}% over {len(errors)} recipes")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    """The table for bench/RESULTS.md."""
    out = ["| recipe | estimate | measured peak RSS | error | largest terms of the estimate |",
           "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['recipe']} | {r['estimate_gb']:.2f} GB | failed | | |")
            continue
        err, top = _error_and_terms(r)
        note = f" ({r['note']})" if r.get("note") else ""
        out.append(f"| {r['recipe']}{note} | {r['estimate_gb']:.2f} GB | "
                   f"{r['peak_rss_gb']:.2f} GB | {err:+.1f}% | "
                   + ", ".join(f"{k} {v:.2f}" for k, v in top) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="all", help="comma-separated names or paths (default: "
                   "every recipes/*.yaml)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra override for every run (and its estimate), e.g. "
                   "model.gradient_checkpointing=true")
    p.add_argument("--logs", default=None, help="keep each run's output in this folder")
    p.add_argument("--markdown", action="store_true", help="with --report: also the "
                   "table as markdown (bench/RESULTS.md)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --json "
                   "that ran without error, run only the other recipes")
    p.add_argument("--report", default=None, help="a JSON written by --json: re-estimate its "
                   "recipes against its measurements, run nothing")
    args = p.parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        rows = []
        for r in saved["rows"]:
            rows.append({**r, **estimate(ROOT / r["path"], r["overrides"])})
        print(report(rows))
        if args.markdown:
            print(markdown(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({**saved, "rows": rows}, indent=1) + "\n")
        return
    rows = []
    if args.resume and args.json and Path(args.json).is_file():
        rows = [r for r in json.loads(Path(args.json).read_text())["rows"] if "error" not in r]
    done = {r["recipe"] for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for path in recipe_paths(args.recipes):
            if path.stem in done:
                continue
            out = Path(tmp) / path.stem
            overrides, note = overrides_for(path, out)
            overrides += args.set
            row = {"recipe": path.stem, "path": str(path.relative_to(ROOT)),
                   "overrides": overrides, "note": note}
            logs = Path(args.logs or tmp)
            logs.mkdir(parents=True, exist_ok=True)
            row.update(measure(path, overrides, logs / f"{path.stem}.log"))
            shutil.rmtree(out, ignore_errors=True)   # (checkpoints: GBs per run)
            try:
                row.update(estimate(path, overrides))
            except Exception as exc:   # (the measurement is kept: --report re-estimates)
                row.update({"estimate_gb": float("nan"), "terms_gb": {},
                            "estimate_error": repr(exc)})
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("overrides",)}),
                  flush=True)
            if args.json:   # after every run: a long bench keeps what it measured
                Path(args.json).write_text(json.dumps({
                    "date": datetime.date.today().isoformat(),
                    "command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    print(report(rows))


if __name__ == "__main__":
    main()
