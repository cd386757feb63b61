"""Kill anywhere, resume exactly: SIGKILL DPO and GRPO runs at random moments and at the
kill points of `alignment.faults` (mid-step, mid-checkpoint-write, mid weight sync), start
the same command again until the run finishes, and compare with an uninterrupted run.

    .venv/bin/python bench/kill_resume.py --kills 24 --json bench/kill_resume.json

Expect ~3 min on 2 cores and "kill points survived 24/24, lost steps 0, repeated steps 0".
Tiny random Llamas (2 layers, 32 wide), one thread per run, two runs at a time.
Checked after every kill: every `checkpoints/step-*` folder loads (state, trainer.pt,
weights, recipe). At the end of each killed-and-resumed run: every step exactly once in
metrics.jsonl, every logged value but wall-clock times equal to the uninterrupted run's
(relative 1e-6; on CPU they are bitwise equal), the same GRPO samples, the same final
weights, no hidden leftovers. A kill survives when all of that holds for its run.
`tests/test_kill_resume.py` runs a short campaign through `run_case`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "alignment", "train"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
WALL_CLOCK = ("seconds", "tokens_per_s", "time/")   # metric keys that differ run to run
RTOL = 1e-6
POINTS = ("step", "checkpoint", "sync")   # the kill points of alignment.faults


@dataclass
class Kill:
    """One SIGKILL. `how`: a kill point ("step", "checkpoint", "sync": the process kills
    itself the `nth` time it passes there in this launch; nth 0: the pass at fraction `at`
    of those left in the run), "random" (the harness kills it `delay` s after the step at
    fraction `at` of those left is logged), or "start" (`delay` s after the launch: during
    start-up or the resume itself)."""

    how: str
    nth: int = 0
    at: float = 0.0
    delay: float = 0.0


# ------------------------------------------------------------------ set-up
def setup(root: Path) -> dict[str, str]:
    """A tiny random policy and the first 16 rows of the shipped pairs and prompts."""
    from alignment.models import make_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    files = {"model": make_tiny_model(root / "policy", seed=1, tokenizer_from="smollm2-135m")}
    for name, source in (("pairs", "preference_chat"), ("prompts", "add2")):
        rows = (ROOT / f"data/arithmetic/{source}/train.jsonl").read_text().splitlines()[:16]
        (root / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
        files[name] = str(root / f"{name}.jsonl")
    return files


def write_recipe(root: Path, algorithm: str, name: str, files: dict[str, str],
                 max_steps: int | None = None, processes: int = 1) -> Path:
    """DPO: LoRA with dropout (so that the resumed run needs the saved torch RNG state),
    12 steps over 2 epochs of 8, warm-up then linear decay, eval every 4, a checkpoint
    every 3. GRPO (HF engine): 8 steps, 2 prompts x 4 samples, a checkpoint
    every 2; the reward ("starts with a space") splits the tiny model's samples."""
    common = {"output_dir": str(root / name), "eval": {"before_after": False},
              "logging": {"report_to": [], "progress_bar": False}}
    if algorithm == "dpo":
        recipe = {"algorithm": "dpo", "model": {"name": files["model"], "dtype": "float32",
                                                "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
                  "data": {"train": files["pairs"], "eval": files["pairs"], "eval_limit": 4},
                  "trainer": {"batch_size": 2, "lr": 1e-3, "max_steps": 12, "save_every": 3,
                              "keep_checkpoints": 2, "eval_every": 4, "warmup_steps": 2,
                              "threads": 1}}
    else:
        recipe = {"algorithm": "grpo", "model": {"name": files["model"], "dtype": "float32"},
                  "data": {"train": files["prompts"], "eval": files["prompts"],
                           "eval_limit": 4, "max_prompt_length": 96, "max_length": 128},
                  "trainer": {"lr": 1e-3, "batch_size": 4, "max_steps": 8, "save_every": 2,
                              "keep_checkpoints": 2, "eval_every": 4, "seed": 3,
                              "threads": 1},
                  "grpo": {"prompts_per_step": 2, "num_generations": 4},
                  "rollout": {"backend": "hf", "max_new_tokens": 6, "temperature": 1.0},
                  "rewards": [{"name": "regex", "pattern": "^ "}]}
    if max_steps:
        recipe["trainer"]["max_steps"] = max_steps
    if processes > 1:   # DDP on CPU (torchrun + gloo, started by `alignment train`)
        recipe["launch"] = {"num_processes": processes, "main_process_port": free_port()}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**recipe, **common}))
    return path


# ------------------------------------------------------------------ one launch
def launch(recipe: Path, kill: Kill | None = None, step_seconds: float = 0.05,
           timeout: float = 300) -> dict:
    """Run the recipe once, SIGKILLed as `kill` says. Returns rc, whether it was killed,
    the step it resumed from and the end of its stderr. Runs of several processes take
    kill points only (torchrun's workers have sessions of their own: the harness's kill
    would not reach them)."""
    out = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    env = dict(ENV)
    start_step = latest_step(out)
    if kill and kill.how in POINTS:
        kill = Kill(kill.how, nth=kill.nth or _pick_pass(kill, recipe, start_step))
        env["ALIGNMENT_KILL_AT"] = f"{kill.how}:{kill.nth}"
    with tempfile.TemporaryFile() as err:
        # own session: the kill reaches the run and anything it started, nothing else
        proc = subprocess.Popen(CLI + [str(recipe)], env=env, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        if kill and kill.how in ("random", "start"):
            _kill_later(proc, out, kill, start_step, step_seconds, recipe)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    # (several processes: a rank's SIGKILL makes the launcher exit 1 and report it)
    killed = rc == -signal.SIGKILL or (rc != 0 and re.search(r"exitcode\s*:\s*-9\b", stderr)
                                       is not None)
    return {"rc": rc, "killed": killed, "from_step": start_step,
            "kill": asdict(kill) if kill else None, "stderr": stderr[-3000:]}


def _pick_pass(kill: Kill, recipe: Path, start_step: int) -> int:
    """The pass of a kill point at fraction `kill.at` of the passes left in the run."""
    trainer = yaml.safe_load(recipe.read_text())["trainer"]
    steps = range(start_step + 1, trainer["max_steps"] + 1)
    if kill.how == "checkpoint":   # every save_every steps, and the final save
        passes = sum(s % trainer["save_every"] == 0 for s in steps) + 1
    else:                          # once per step
        passes = len(steps)
    return 1 + int(kill.at * passes)


def _kill_later(proc: subprocess.Popen, out: Path, kill: Kill, start_step: int,
                step_seconds: float, recipe: Path) -> None:
    if kill.how == "random":   # wait for a step of this launch, then a fraction of a step
        total = yaml.safe_load(recipe.read_text())["trainer"]["max_steps"]
        target = start_step + 1 + int(kill.at * max(1, total - 1 - start_step))
        while proc.poll() is None and logged_step(out) < target:
            time.sleep(0.002)
    deadline = time.perf_counter() + kill.delay
    while proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.001)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_step(out: Path) -> int:
    from alignment.trainers.checkpoint import latest_checkpoint

    last = latest_checkpoint(out)
    return int(last.name.split("-")[1]) if last else 0


def logged_step(out: Path) -> int:
    """The last training step in metrics.jsonl (0 when none)."""
    rows = read_jsonl(out / "metrics.jsonl")
    return max((r["step"] for r in rows if "step_seconds" in r), default=0)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:   # (a line being written as we read)
                continue
    return rows


# ------------------------------------------------------------------ checks
def check_checkpoints(out: Path) -> list[str]:
    """Problems with any `checkpoints/step-*` folder: each must match its manifest and load
    completely."""
    import torch
    from safetensors.torch import load_file

    from alignment.trainers.checkpoint import damage

    problems = []
    root = out / "checkpoints"
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith("."):
            continue   # a killed save's leftover: ignored and removed on restart
        if (why := damage(folder)) is not None:
            problems.append(f"{folder.name}: {why}")
            continue
        try:
            state = json.loads((folder / "trainer_state.json").read_text())
            assert state["step"] == int(folder.name.split("-")[1]), "step mismatch"
            torch.load(folder / "trainer.pt", map_location="cpu", weights_only=False)
            weights = "adapter_model" if (folder / "model" / "adapter_config.json").is_file() \
                else "model"
            load_file(str(folder / "model" / f"{weights}.safetensors"))
            yaml.safe_load((folder / "recipe.yaml").read_text())
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            problems.append(f"{folder.name}: {type(exc).__name__}: {exc}")
    return problems


def compare(reference: Path, out: Path) -> dict:
    """The resumed run against the uninterrupted one: lost and repeated steps, values."""
    import torch
    from safetensors.torch import load_file

    ref_rows, rows = read_jsonl(reference / "metrics.jsonl"), read_jsonl(out / "metrics.jsonl")
    ref_steps = [r["step"] for r in ref_rows if "step_seconds" in r]
    steps = [r["step"] for r in rows if "step_seconds" in r]
    problems, worst = [], 0.0
    if len(rows) != len(ref_rows):
        problems.append(f"{len(rows)} metric rows, uninterrupted {len(ref_rows)}")
    for a, b in zip(ref_rows, rows, strict=False):
        if a.keys() != b.keys():
            problems.append(f"step {a['step']}: keys differ: {sorted(a.keys() ^ b.keys())}")
            continue
        for key in a:
            if any(w in key for w in WALL_CLOCK):
                continue
            rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
            worst = max(worst, rel)
            if rel > RTOL:
                problems.append(f"step {a['step']} {key}: {b[key]!r} vs {a[key]!r}")
    samples = [read_jsonl(d / "samples.jsonl") for d in (reference, out)]
    if samples[0] != samples[1]:
        problems.append("samples.jsonl differs (GRPO rollouts)")
    wa = load_file(str(reference / "final" / "model.safetensors"))
    wb = load_file(str(out / "final" / "model.safetensors"))
    weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    if weight_diff > 0 and not all(torch.allclose(wa[k], wb[k], rtol=RTOL, atol=0) for k in wa):
        problems.append(f"final weights differ by up to {weight_diff:.3g}")
    hidden = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    if hidden:
        problems.append(f"leftovers in checkpoints/: {hidden}")
    return {"lost": len(set(ref_steps) - set(steps)), "repeated": len(steps) - len(set(steps)),
            "max_rel_diff": worst, "max_weight_diff": weight_diff, "problems": problems[:10]}


# ------------------------------------------------------------------ a case, a campaign
def run_case(recipe: Path, reference: Path, kills: list[Kill], step_seconds: float) -> dict:
    """Launch the recipe under each kill in turn, then once more to the end; compare."""
    out = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    launches = []
    for kill in kills:
        result = launch(recipe, kill, step_seconds)
        result["checkpoint_problems"] = check_checkpoints(out)
        launches.append(result)
        if result["rc"] == 0:   # finished before the kill point came: nothing more to kill
            break
        if not result["killed"]:
            return {"recipe": str(recipe), "launches": launches, "ok": False,
                    "error": f"rc {result['rc']} without a kill"}
    final = launch(recipe) if launches[-1]["rc"] != 0 else launches[-1]
    final["checkpoint_problems"] = check_checkpoints(out)
    if final["rc"] != 0:
        return {"recipe": str(recipe), "launches": [*launches, final], "ok": False,
                "error": f"the resumed run failed (rc {final['rc']})"}
    if final is not launches[-1]:
        launches.append(final)
    result = compare(reference, out)
    killed = [x for x in launches if x["killed"]]
    ok = not result["problems"] and not any(x["checkpoint_problems"] for x in launches)
    for x in launches:
        x.pop("stderr") if ok else None
    return {"recipe": str(recipe), "kills": len(killed), "survived": len(killed) if ok else 0,
            "ok": ok, **result, "launches": launches}


def reference_run(recipe: Path) -> tuple[Path, float]:
    """The uninterrupted run; its output folder and median step time."""
    result = launch(recipe)
    if result["rc"] != 0:
        sys.exit(f"reference run {recipe} failed:\n{result['stderr']}")
    out = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    seconds = [r["step_seconds"] for r in read_jsonl(out / "metrics.jsonl") if "step_seconds" in r]
    return out, statistics.median(seconds)


def plan(n_kills: int, seed: int, first: int = 0) -> list[tuple[str, list[Kill]]]:
    """Cases of 2-4 kills each, alternating DPO and GRPO (case numbers from `first`), until
    `n_kills` kills: a random moment (2 in 5 or 6), a kill point, or during start-up."""
    rng = random.Random(seed)
    cases, count = [], 0
    while count < n_kills:
        algorithm = "dpo" if (first + len(cases)) % 2 == 0 else "grpo"
        kinds = ["random", "random", "start", *POINTS[:3 if algorithm == "grpo" else 2]]
        kills = []
        for _ in range(min(rng.randint(2, 4), n_kills - count)):
            how = rng.choice(kinds)
            if how == "random":
                kills.append(Kill("random", at=rng.random(), delay=rng.uniform(0, 2)))
            elif how == "start":
                kills.append(Kill("start", delay=rng.uniform(1, 8)))
            else:
                kills.append(Kill(how, at=rng.random()))
        cases.append((algorithm, kills))
        count += len(kills)
    return cases


def campaign(root: Path, n_kills: int, seed: int = 0, jobs: int = 2,
             cases: list[tuple[str, list[Kill]]] | None = None) -> dict:
    """Reference runs, then the `cases` (default: planned for `n_kills`), `jobs` runs at a
    time; planned kills that came too late (the run had finished) are made up for by more
    cases, up to three rounds."""
    files = setup(root)
    recipes = {a: write_recipe(root, a, f"{a}-reference", files) for a in ("dpo", "grpo")}
    done: list[dict] = []
    with ThreadPoolExecutor(jobs) as pool:
        refs = dict(zip(recipes, pool.map(reference_run, recipes.values()), strict=True))
        todo = cases or plan(n_kills, seed)
        for round_ in range(3):
            batch = [(write_recipe(root, a, f"{a}-case{len(done) + i}", files), refs[a], kills)
                     for i, (a, kills) in enumerate(todo)]
            # random delays scale with the step time: a kill lands inside a step, a log
            # write or a checkpoint save (kill-point kills need no timing)
            done += pool.map(lambda c: run_case(c[0], c[1][0], [_scaled(k, c[1][1])
                                                                for k in c[2]], c[1][1]),
                             batch)
            short = n_kills - _killed(done)
            if cases or short <= 0:
                break
            todo = plan(short, seed + 1 + round_, first=len(done))
    killed = [x for c in done for x in c["launches"] if x["killed"]]
    kinds = sorted({x["kill"]["how"] for x in killed})
    return {"kills": len(killed), "survived": sum(c.get("survived", 0) for c in done),
            "by_kind": {k: sum(x["kill"]["how"] == k for x in killed) for k in kinds},
            "in_resumed_launches": sum(x["from_step"] > 0 for x in killed),
            "lost_steps": sum(c.get("lost", 0) for c in done),
            "repeated_steps": sum(c.get("repeated", 0) for c in done),
            "max_rel_diff": max(c.get("max_rel_diff", 0.0) for c in done),
            "step_seconds": {a: refs[a][1] for a in refs}, "cases": done}


def _killed(cases: list[dict]) -> int:
    return sum(x["killed"] for c in cases for x in c["launches"])


def _scaled(kill: Kill, step_seconds: float) -> Kill:
    if kill.how == "random":
        return Kill("random", at=kill.at, delay=kill.delay * step_seconds)
    return kill


def summary_line(result: dict) -> str:
    return (f"kill points survived {result['survived']}/{result['kills']}, lost steps "
            f"{result['lost_steps']}, repeated steps {result['repeated_steps']}")


def _describe(launch: dict) -> str:
    """e.g. "checkpoint:2 from step 6": the kill, and the step its launch resumed from."""
    kill = launch["kill"]
    name = f"{kill['how']}:{kill['nth']}" if kill["how"] in POINTS else kill["how"]
    return f"{name} from step {launch['from_step']}" + ("" if launch["killed"]
                                                         else " (finished first)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        result = campaign(Path(args.workdir or tmp), args.kills, args.seed, args.jobs)
    result["seconds"] = round(time.perf_counter() - start, 1)
    for case in result["cases"]:
        print(f"{Path(case['recipe']).stem:<12} {'ok ' if case['ok'] else 'BAD'} "
              + ", ".join(_describe(x) for x in case["launches"] if x["kill"])
              + ("" if case["ok"] else f"  {case.get('error', '')} {case.get('problems')}"))
    print(f"kills by kind {result['by_kind']}, {result['in_resumed_launches']} of them in "
          f"launches that had resumed from a checkpoint")
    print(f"{summary_line(result)} ({result['seconds']} s, max relative difference "
          f"{result['max_rel_diff']:.3g})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    sys.exit(0 if result["survived"] == result["kills"] and result["kills"] else 1)


if __name__ == "__main__":
    main()
