"""What the trainer-vs-TRL benches share: each configuration runs in a fresh child process
(so that its peak RSS is its own) and prints one `RESULT {json}` line; the parent turns the
per-step lists into steady-state means."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def steady(values: list[float]) -> float:
    """Mean without the first (warm-up) step."""
    rest = values[1:]
    return sum(rest) / len(rest) if rest else float("nan")


def run_child(cmd: list[str], env: dict, label: str) -> dict:
    """Run one child, read its RESULT line; add wall time, the engine start-up the trainer
    reported, and steady-state means of every per-step list (`time_*` -> `s_per_step_*`)."""
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{label} failed (rc {out.returncode}):\n{out.stderr[-6000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = time.perf_counter() - start
    said = re.search(r"rollout engine: (\w+) \(([\d.]+) s to start\)", out.stderr)
    if said:   # the trainer's own figure (engine only; setup_seconds has more)
        result["engine_start_reported"] = float(said.group(2))
    steps = result["step_seconds"]
    result["s_per_step"] = steady(steps)
    result["first_step_seconds"] = steps[0] if steps else float("nan")
    for key in [k for k in result if k.startswith("time_")]:
        result[key.replace("time_", "s_per_step_")] = steady(result[key])
    result["completion_tokens_per_step"] = steady(result["completion_tokens"])
    return result


def trl_prompts(path: str):
    """The bench's prompt rows as a TRL dataset: conversational prompts + their answer."""
    from datasets import Dataset

    rows = [json.loads(line) for line in open(path)]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "answer": str(r["answer"])} for r in rows])


def trl_exact_answer(completions, answer, **kwargs) -> list[float]:
    """TRL reward function: what our `exact_answer` scorer computes (`is_correct`)."""
    from reward_models import is_correct

    return [float(is_correct(c[-1]["content"], a)) for c, a in zip(completions, answer,
                                                                   strict=True)]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
