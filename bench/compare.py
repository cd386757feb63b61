"""Every trainer on the same task, budget and seeds: one table and its plots (issue #17).

    make compare                # all 12 trainers x 3 seeds on the bundled model (the
                                # README says how long it took); every first seed first
    make compare-quick          # the same code path on a tiny random model: ~2 min
    python bench/compare.py --trainers grpo,ppo --seeds 42,43
    python bench/compare.py --override dpo:dpo.beta=0.2   # re-runs DPO's runs only
    python bench/compare.py --report-only           # the table from the runs cached so far
    python bench/compare.py --dry-run               # the plan: commands, keys, what is cached

Each trainer runs from its shipped recipe (`TRAINERS` below) through `alignment train`, in
a child process of its own, with only these overrides: the budget (`trainer.max_steps`;
SPIN also `spin.iterations`), `trainer.seed`, `output_dir`, and for DPO/IPO the task
(their shipped recipes train on the mixed-task pairs and evaluate on all six tasks; here
they get the add2 pairs and add2 eval, as the README's offline comparison and
`recipes/copg.yaml` do). `--set` / `--override` add more, last (so they win).

Task: 2-digit addition. Every run is evaluated on the same 100 held-out problems
(`data/arithmetic/add2/test.jsonl`, greedy, 64 new tokens: each recipe's `eval:`), and
trains on the same 400 add2 prompts: online trainers sample from `add2/train.jsonl`,
offline DPO/IPO/CoPG read them as right-vs-wrong worked-solution pairs
(`add2_preference`), SPIN as worked demonstrations (`add2_sft_plain`). The online recipes
prompt with a one-line system prompt ("You are a calculator..."); the offline ones and SPIN
with none, so their "before" differs (11% vs 14% on the bundled model).

Budget: matched in samples, not wall-clock (the trainers have no time limit). Every run
consumes `--samples` completions (default 1600): online trainers generate them (64 per
step in every shipped online recipe: 25 steps), offline pair trainers read them from
their pairs (two per pair, 8 pairs per step: 100 steps, 2 passes over the 400 pairs), SPIN
trains on real + generated pairs (2 iterations over the 400 demonstrations). 1600 is what
fits 24 runs in about two hours on 2 cores (PPO's step is ~16 s); `--samples 6400` is the
budget nearest the shipped online recipes' own (60-120 steps). What a sample
costs differs by design (PPO's two epochs through policy and critic, a reference pass,
DAPO's refill rounds, which generate beyond the budget), and that is what the wall-time
column and the accuracy-vs-time plot show.

Cache: a run is keyed by a hash of its resolved recipe (after every override; output_dir
left out) and of the contents of the data files it names; it lives in
`<runs>/<trainer>-s<seed>-<key>/` and is done when `compare.json` is there (written last,
atomically). A re-run skips done runs, re-runs anything whose recipe changed, and starts a
run that was killed over from scratch (so wall time and peak RSS are of one whole run).
Code changes do not change the key: delete the run's folder to re-run it. Checkpoints are
deleted after a run (`final/` is kept) unless --keep-checkpoints.

Measured per run: held-out greedy accuracy before/after (the run's eval_before.json /
eval_after.json), its eval curve (metrics.jsonl rows, timed by when they appeared), the
training reward and KL to the reference over the last 10 logged steps where the trainer
logs them, wall time and peak RSS of the child (wait4's rusage: the trainer with its
in-process rollout engine; a descendant process would count by its own peak, not added),
and a held-out probe that is the same for every trainer: one sample per eval prompt from
the trained policy at temperature 1, its reward (exact answer + 0.5 x digit match, the
online recipes' reward without the length ramp) and its KL to the initial model (mean of
log pi - log pi_ref over the sampled sequence, fp32).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from alignment import atomic  # noqa: E402
from alignment.config import load_recipe, recipe_to_dict  # noqa: E402
from alignment.config.schema import CRITIC, Recipe, is_online, uses_rollout  # noqa: E402

# The add2 pairs and eval for the two recipes whose shipped data is the mixed-task set
# (the command of the README's offline DPO/IPO/CoPG comparison).
ADD2_PAIRS = ("data.train=data/arithmetic/add2_preference/train.jsonl",
              "data.eval=data/arithmetic/add2_preference/test.jsonl", "data.train_limit=null",
              "data.max_length=160", "data.max_prompt_length=96",
              "eval.data=data/arithmetic/add2/test.jsonl", "eval.limit=100")

# name -> (recipe, task overrides). Every algorithm the toolkit trains a policy with.
TRAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dpo": ("recipes/dpo.yaml", ADD2_PAIRS),
    "ipo": ("recipes/ipo.yaml", ADD2_PAIRS),
    "copg": ("recipes/copg.yaml", ()),
    "spin": ("recipes/spin.yaml", ()),
    "online_dpo": ("recipes/online_dpo.yaml", ()),
    "online_copg": ("recipes/online_copg.yaml", ()),
    "ppo": ("recipes/ppo.yaml", ()),
    "apa": ("recipes/apa.yaml", ()),
    "drpo": ("recipes/drpo.yaml", ()),
    "grpo": ("recipes/grpo.yaml", ()),
    "dapo": ("recipes/dapo.yaml", ()),
    "dr_grpo": ("recipes/dr_grpo.yaml", ()),
}

FULL = {"samples": 1600, "seeds": "42,43,44", "runs": "runs/compare", "out": "bench",
        "probe_prompts": 100}
# --quick: a tiny random model (2 layers, 32 wide, the bundled tokenizer), HF generate,
# 4 eval prompts, 32 training rows; 128 samples = 2 online steps, 8 offline steps, 2 SPIN
# iterations of 4 steps.
QUICK = {"samples": 128, "seeds": "42", "runs": "runs/compare-quick", "out": "runs/compare-quick",
         "probe_prompts": 4}
# One thread: a tiny model gains nothing from two, and two busy-waiting threads on cores
# other jobs share made steps up to 30x slower in a trial.
QUICK_OVERRIDES = ("model.dtype=float32", "trainer.threads=1", "data.train_limit=32",
                   "data.eval_limit=4", "eval.limit=4", "eval.max_new_tokens=8",
                   "trainer.eval_every=1", "logging.report_to=[]")
QUICK_ROLLOUT = ("rollout.backend=hf",)   # for the recipes that generate
# Online recipes in quick mode: a random model never writes the answer, so every sample
# would score the same and GRPO, online DPO and DAPO would skip every update; an "x"
# anywhere (about 1 sample in 4 of the tiny model's) gives their groups a reward spread.
QUICK_ONLINE = ('rewards=[{name: exact_answer}, {name: digit_match, weight: 0.5}, '
                '{name: regex, pattern: x, weight: 0.5}]',)
LAST_STEPS = 10          # training reward / KL: mean over this many last logged steps
PLACEHOLDER = "runs/compare-key"   # output_dir while hashing (the key names the folder)


@dataclass
class Run:
    name: str
    seed: int
    recipe_path: str
    overrides: list[str]          # everything after the recipe, output_dir last
    key: str
    dir: Path
    steps: int
    samples_per_step: int
    recipe: Recipe = field(repr=False)

    @property
    def done(self) -> bool:
        return (self.dir / "compare.json").is_file()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "alignment", "train", self.recipe_path, *self.overrides]


# ------------------------------------------------------------------ the plan
def samples_per_step(recipe: Recipe) -> int:
    """Completions one step of this recipe consumes: generated (online) or read from the
    data, two per pair (offline pair losses; SPIN: real + generated)."""
    world = recipe.launch.num_processes or 1
    algo = getattr(recipe, recipe.algorithm)
    if recipe.algorithm == "grpo" or (is_online(recipe) and recipe.algorithm not in CRITIC):
        return algo.prompts_per_step * algo.num_generations * world
    if recipe.algorithm in CRITIC:
        return algo.prompts_per_step * algo.samples_per_prompt * world
    return 2 * recipe.trainer.batch_size * recipe.trainer.grad_accum * world


def budget_overrides(recipe: Recipe, samples: int) -> tuple[list[str], int]:
    """(overrides, steps) that give `recipe` a budget of `samples` completions."""
    steps = max(1, math.ceil(samples / samples_per_step(recipe)))
    out = [f"trainer.max_steps={steps}"]
    if recipe.algorithm == "spin":   # its schedule is iterations x passes over the demos
        from alignment.data import read_rows
        from alignment.trainers.batching import steps_per_epoch

        rows = len(read_rows(recipe.data.train)[:recipe.data.train_limit])
        per_iteration = recipe.spin.epochs * steps_per_epoch(
            max(1, rows // recipe.trainer.batch_size), recipe.trainer.grad_accum,
            recipe.launch.num_processes or 1)
        out.append(f"spin.iterations={max(1, math.ceil(steps / max(per_iteration, 1)))}")
    return out, steps


def run_key(recipe: Recipe) -> str:
    """Hash of the resolved recipe (output_dir left out) and of its data files' bytes."""
    resolved = recipe_to_dict(recipe)
    resolved.pop("output_dir", None)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode())
    for path in sorted({recipe.data.train, recipe.data.eval, recipe.eval.data} - {None}):
        if Path(path).is_file():
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()[:12]


def per_trainer(specs: list[str]) -> dict[str, list[str]]:
    """`--override NAME:key=value` -> {NAME: [key=value, ...]}."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, override = spec.partition(":")
        if not sep or name not in TRAINERS or "=" not in override:
            sys.exit(f"--override {spec!r}: expected NAME:key=value with NAME one of "
                     f"{', '.join(TRAINERS)}")
        out.setdefault(name, []).append(override)
    return out


def plan(names: list[str], seeds: list[int], samples: int, runs_dir: Path,
         common: list[str], overrides: dict[str, list[str]], quick_model: str | None = None
         ) -> list[Run]:
    """The runs, each with its overrides in this order: task, quick mode, budget, seed,
    --set, --override (a later one wins), output_dir."""
    runs = []
    for name in names:
        path, task = TRAINERS[name]
        head = [*task]
        if quick_model:
            head += [f"model.name={quick_model}", *QUICK_OVERRIDES]
            base = load_recipe(ROOT / path, head)
            head += [*(QUICK_ROLLOUT if uses_rollout(base) else ()),
                     *(QUICK_ONLINE if is_online(base) else ())]
        user = [*common, *overrides.get(name, [])]
        shape = load_recipe(ROOT / path, [*head, *user])   # the batch shape the budget uses
        budget, steps = budget_overrides(shape, samples)
        for seed in seeds:
            body = [*head, *budget, f"trainer.seed={seed}", *user]
            recipe = load_recipe(ROOT / path, [*body, f"output_dir={PLACEHOLDER}"])
            key = run_key(recipe)
            folder = runs_dir / f"{name}-s{seed}-{key}"
            recipe.output_dir = str(folder)
            runs.append(Run(name, seed, path, [*body, f"output_dir={folder}"], key, folder,
                            steps, samples_per_step(recipe), recipe))
    # Every trainer's first seed before any second one: a run stopped half-way leaves a
    # whole table for one seed, not two seeds of half the trainers.
    return sorted(runs, key=lambda run: seeds.index(run.seed))


# ------------------------------------------------------------------ running one
class RowClock(threading.Thread):
    """Notes when each line of metrics.jsonl first appears (seconds since the child
    started): the x of the eval curve, whatever each trainer counts in its step time."""

    def __init__(self, path: Path, start: float, period: float):
        super().__init__(daemon=True)
        self.path, self.t0, self.period = path, start, period
        self.times: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            self.poll()

    def poll(self) -> None:
        try:
            complete = self.path.read_text().count("\n")
        except (FileNotFoundError, UnicodeDecodeError):
            return
        now = time.monotonic() - self.t0
        self.times += [now] * (complete - len(self.times))


def train(run: Run, poll_period: float) -> dict:
    """Run the child from scratch; its wall time, peak RSS and row times."""
    if run.dir.exists():   # a killed run: never half-read, start it over
        atomic.remove_dir(run.dir)
    run.dir.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    clock = RowClock(run.dir / "metrics.jsonl", start, poll_period)
    with (run.dir / "train.log").open("w") as log:
        proc = subprocess.Popen(run.command(), cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            clock.start()
            _, status, usage = os.wait4(proc.pid, 0)   # rusage of this child alone
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    clock.stopped.set()
    clock.join()
    clock.poll()
    return {"returncode": proc.returncode, "wall_seconds": round(wall, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 1024**2, 3),   # ru_maxrss: KiB
            "row_seconds": [round(t, 2) for t in clock.times]}


def collect(run: Run, child: dict) -> dict:
    """What the run wrote, read back: accuracies, the eval curve, training reward / KL."""
    def read(name: str) -> dict:
        return json.loads((run.dir / name).read_text())

    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    times = child["row_seconds"]
    curve = []   # (seconds, greedy accuracy through the engine, step)
    for i, row in enumerate(rows):
        acc = row.get("eval/accuracy", row.get("spin/accuracy_after_iteration"))
        if acc is not None and row["step"] > 0:
            curve.append([times[i] if i < len(times) else child["wall_seconds"], acc,
                          row["step"]])
    steps = [r for r in rows if "step_seconds" in r][-LAST_STEPS:]
    summary = read("summary.json")
    return {"accuracy_before": read("eval_before.json")["accuracy"],
            "accuracy_after": read("eval_after.json")["accuracy"],
            "curve": curve, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
            "train_reward": _mean([r["reward"] for r in steps if "reward" in r]),
            "train_kl": _mean([k for r in steps if (k := logged_kl(r, run.recipe)) is not None])}


def logged_kl(row: dict, recipe: Recipe) -> float | None:
    """KL to the reference per sequence (nats, on the step's own samples, at the rollout
    temperature) where the trainer logs one; None where it does not (offline losses read
    the data's completions, not samples of the policy; GRPO's recipes load no reference)."""
    if "policy/kl" in row:                      # PPO, APA, DR-PO: sum_t k1
        return row["policy/kl"]
    if "copg/logratio" in row and is_online(recipe):   # mean log pi/pi_ref of its samples
        return row["copg/logratio"]
    if recipe.algorithm == "dpo" and is_online(recipe) and "rewards/chosen" in row:
        # the implicit rewards are beta x log-ratio of the best and the worst sample
        return (row["rewards/chosen"] + row["rewards/rejected"]) / (2 * recipe.dpo.beta)
    return None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def execute(run: Run, probe_settings: dict, keep_checkpoints: bool, poll_period: float) -> dict:
    """The run's record: read from the cache when done (the probe redone if its settings
    changed), else trained, read back, probed and written."""
    if run.done:
        record = json.loads((run.dir / "compare.json").read_text())
        if record.get("probe", {}).get("settings") != probe_settings:
            record["probe"] = probe(run, probe_settings)
            atomic.write_json(run.dir / "compare.json", record)
        return record
    print(f"[compare] {run.name} seed {run.seed}: {run.steps} steps x {run.samples_per_step} "
          f"samples -> {run.dir}", file=sys.stderr, flush=True)
    child = train(run, poll_period)
    record = {"trainer": run.name, "seed": run.seed, "key": run.key,
              "recipe": run.recipe_path, "overrides": run.overrides[:-1],
              "samples_per_step": run.samples_per_step, "planned_steps": run.steps,
              **{k: child[k] for k in ("wall_seconds", "peak_rss_gib")}}
    if child["returncode"] != 0:
        tail = (run.dir / "train.log").read_text()[-3000:]
        print(f"[compare] {run.name} seed {run.seed} FAILED (rc {child['returncode']}), "
              f"log: {run.dir / 'train.log'}\n{tail}", file=sys.stderr, flush=True)
        return {**record, "status": "failed", "returncode": child["returncode"]}
    record.update(collect(run, child), status="done")
    record["probe"] = probe(run, probe_settings)
    if not keep_checkpoints:
        shutil.rmtree(run.dir / "checkpoints", ignore_errors=True)
    atomic.write_json(run.dir / "compare.json", record)   # last: the run is done
    print(f"[compare] {run.name} seed {run.seed}: accuracy {record['accuracy_before']:.0%} -> "
          f"{record['accuracy_after']:.0%}, {record['wall_seconds']:.0f} s, "
          f"{record['peak_rss_gib']:.1f} GiB", file=sys.stderr, flush=True)
    return record


# ------------------------------------------------------------------ the held-out probe
def probe(run: Run, settings: dict) -> dict:
    """One sample per held-out prompt from the trained policy at temperature 1: the mean
    verifier reward and the KL to the initial model, the same measurement for every
    trainer (offline ones included)."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignment.data import load_examples, render_prompt
    from alignment.models import load_tokenizer, resolve_model
    from alignment.rollout.hf import HFEngine
    from alignment.rollout.types import SamplingParams
    from alignment.trainers.sequences import collate_sequences, completion_logps
    from reward_models.verifiers import DigitMatchScorer, ExactAnswerScorer

    recipe = run.recipe
    ref_path = resolve_model(recipe.model.reference or recipe.model.name)
    tokenizer = load_tokenizer(ref_path)   # the prompts the run trained on, for both models
    examples = load_examples(recipe.eval.data, "prompt", limit=settings["prompts"])
    prompts = [tokenizer(render_prompt(tokenizer, ex.prompt,
                                       chat_template=recipe.data.chat_template,
                                       system_prompt=recipe.data.system_prompt, plain=ex.plain),
                         add_special_tokens=False)["input_ids"] for ex in examples]
    models = {tag: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
              for tag, path in (("policy", str(run.dir / "final")), ("reference", ref_path))}
    sampling = SamplingParams(temperature=1.0, max_new_tokens=settings["max_new_tokens"])
    out = HFEngine(models["policy"], tokenizer).generate(
        prompts, n=1, sampling=sampling, seeds=[settings["seed"] + i for i in range(len(prompts))])
    logps = {}
    with torch.no_grad():
        for tag, model in models.items():
            parts = []
            for i in range(0, len(out), 32):
                batch = collate_sequences(out.prompt_ids[i:i + 32], out.completion_ids[i:i + 32],
                                          tokenizer.pad_token_id)
                parts.append(completion_logps(model, batch))
            logps[tag] = torch.cat(parts)
    exact, digits = ExactAnswerScorer(), DigitMatchScorer()
    rewards, right = [], []
    for ex, text in zip(examples, out.texts, strict=True):
        row = {"answer": ex.extra["answer"]}
        right.append(exact.score_one(ex.prompt, text, row))
        rewards.append(right[-1] + 0.5 * digits.score_one(ex.prompt, text, row))
    return {"settings": settings, "n": len(rewards), "reward": _mean(rewards),
            "sample_accuracy": _mean(right),
            "kl": float((logps["policy"] - logps["reference"]).mean()),
            "completion_length": _mean([len(c) for c in out.completion_ids])}


# ------------------------------------------------------------------ main
def tiny_model(runs_dir: Path) -> str:
    """The quick mode's model, made once in a fixed place (its path is part of the key)."""
    from alignment.models import ensure_bundled, make_tiny_model

    folder = runs_dir / "tiny-model"
    if not (folder / "config.json").is_file():
        with atomic.atomic_dir(folder) as tmp:
            make_tiny_model(tmp, seed=0, tokenizer_from=str(ensure_bundled("smollm2-135m")))
    return str(folder)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random model, HF generate, "
                    f"{QUICK['samples']} samples, tiny evals: every trainer in minutes")
    ap.add_argument("--trainers", default=",".join(TRAINERS),
                    help=f"comma-separated subset of {','.join(TRAINERS)}")
    ap.add_argument("--seeds", help=f"trainer.seed values (default {FULL['seeds']}, quick "
                    f"{QUICK['seeds']})")
    ap.add_argument("--samples", type=int, help="budget: completions per run (default "
                    f"{FULL['samples']}, quick {QUICK['samples']})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every trainer (after the budget: it wins)")
    ap.add_argument("--override", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="an override for one trainer (after the budget: it wins)")
    ap.add_argument("--runs-dir", type=Path, help=f"cache (default {FULL['runs']}, quick "
                    f"{QUICK['runs']})")
    ap.add_argument("--out-dir", type=Path, help="COMPARISON.md, compare.json, PNGs "
                    f"(default {FULL['out']}/, quick {QUICK['out']}/)")
    ap.add_argument("--probe-prompts", type=int, help="held-out prompts of the probe "
                    f"(default {FULL['probe_prompts']}, quick {QUICK['probe_prompts']})")
    ap.add_argument("--keep-checkpoints", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    ap.add_argument("--report-only", action="store_true",
                    help="write the report from the runs already done, run nothing")
    args = ap.parse_args(argv)
    mode = QUICK if args.quick else FULL
    args.seeds = [int(s) for s in (args.seeds or mode["seeds"]).split(",")]
    args.samples = args.samples or mode["samples"]
    args.runs_dir = (args.runs_dir or ROOT / mode["runs"]).resolve()
    args.out_dir = (args.out_dir or ROOT / mode["out"]).resolve()
    args.probe_prompts = args.probe_prompts or mode["probe_prompts"]
    args.trainers = [t.strip() for t in args.trainers.split(",") if t.strip()]
    unknown = sorted(set(args.trainers) - set(TRAINERS))
    if unknown:
        ap.error(f"unknown trainer(s) {', '.join(unknown)}; known: {', '.join(TRAINERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from compare_report import write_report

    args = parse_args(argv)
    os.chdir(ROOT)   # recipe paths and data paths are relative to the repository
    runs = plan(args.trainers, args.seeds, args.samples, args.runs_dir, args.set,
                per_trainer(args.override), tiny_model(args.runs_dir) if args.quick else None)
    if args.dry_run:
        for run in runs:
            state = "done" if run.done else "to run"
            print(f"{run.name} seed {run.seed} [{run.key}, {state}]: {run.steps} steps x "
                  f"{run.samples_per_step} samples\n  {' '.join(run.command()[1:])}")
        return 0
    if args.quick:
        import torch

        torch.set_num_threads(1)   # the probe's, as the runs' (QUICK_OVERRIDES)
    probe_settings = {"prompts": args.probe_prompts, "seed": 1234,
                      "max_new_tokens": 8 if args.quick else 64}
    records, ran = [], 0
    poll = 0.2 if args.quick else 1.0
    for run in runs:
        if args.report_only and not run.done:
            continue
        ran += not run.done
        records.append(execute(run, probe_settings, args.keep_checkpoints, poll))
    write_report(args.out_dir, runs, records,
                 {"samples": args.samples, "seeds": args.seeds, "quick": args.quick,
                  "runs_dir": str(args.runs_dir), "trainers": args.trainers,
                  "set": args.set, "override": args.override, "probe": probe_settings})
    failed = [r for r in records if r.get("status") != "done"]
    print(f"[compare] {len(records) - ran} cached, {ran} run, {len(failed)} failed -> "
          f"{args.out_dir / 'COMPARISON.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
