"""Data at scale: a generated 100k-row conversational preference set to the first DPO step.

Issue 30 item 3. Times `alignment train recipes/dpo.yaml` end to end, as a user sees it,
on a generated conversational preference jsonl (TRL format: prompt = [system?, user],
chosen / rejected = [assistant]):

  old        the data path before the rewrite (git ee9e3e8, run from a worktree)
  new first  alignment.data.sources + prepare.tokenize_source, fresh caches
  new cached the same command again with the same ALIGNMENT_CACHE / HF_DATASETS_CACHE

For each run: seconds to the "training dpo for" line (data + model set up), seconds to
the "step 1:" line, total seconds, and peak RSS: summed over the process tree, of the
largest single process, and anonymous RSS (less memory-mapped files such as the Arrow
cache), polled every 0.2 s. The model is a tiny random Llama with the bundled tokenizer
(alignment.models.make_tiny_model) so the time is about data; dpo.reference=model because
precomputing reference log-probs for 100k pairs would be the whole time to the first step
(hours with a 49k-token vocabulary), not the data path.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/data_scale.py --rows 100000 --json bench/data_scale.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "ee9e3e8"

SUBJECTS = ["the model", "a small team", "the compiler", "this recipe", "the river", "my sister",
            "the committee", "our cache", "the old library", "a careful reader", "the scheduler",
            "every student", "the garden", "the second run", "a tired engineer", "the museum"]
VERBS = ["explains", "ignores", "measures", "rewrites", "remembers", "compares", "describes",
         "questions", "improves", "shortens", "follows", "checks", "borrows", "repairs"]
OBJECTS = ["the proof", "a long letter", "the weather report", "every failing test",
           "the budget", "a recipe for bread", "the history of Rome", "the training loss",
           "a broken bicycle", "the map of the city", "two different answers", "the last step",
           "a short poem", "the shipping schedule", "the quarterly numbers", "an open question"]
TAILS = ["before lunch", "with great care", "in three steps", "without any help", "again",
         "for the first time", "because it matters", "as quickly as possible", "at night",
         "in plain words", "using only a pencil", "while the kettle boils", "", "", ""]
QUESTIONS = ["Can you explain why", "Please summarise how", "Tell me whether", "Describe how",
             "Write a short note on why", "What happens when", "Give an example of how"]
SYSTEMS = ["You are a helpful assistant.", "You are a concise assistant. Answer briefly.",
           "You are a patient teacher who explains things step by step."]


def sentence(rng: random.Random) -> str:
    words = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
    if rng.random() < 0.3:
        words += f", and {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.2:
        words += f" (step {rng.randint(1, 999)})"
    return words.strip().capitalize() + "."


def text(rng: random.Random, n_words: int) -> str:
    out, count = [], 0
    while count < n_words:
        s = sentence(rng)
        out.append(s)
        count += len(s.split())
    return " ".join(out)


def generate(path: Path, rows: int, seed: int = 0) -> dict:
    """Conversational preference rows; prompt ~30-200 words, answers ~20-300 words."""
    rng = random.Random(seed)
    words = 0
    with path.open("w") as f:
        for _ in range(rows):
            user = f"{rng.choice(QUESTIONS)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} " \
                   f"{rng.choice(OBJECTS)}? " + text(rng, rng.randint(25, 195))
            prompt = [{"role": "user", "content": user}]
            if rng.random() < 0.5:
                prompt.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
            # answer lengths skewed towards short, with a long tail up to ~300 words
            chosen = text(rng, int(20 + 280 * rng.random() ** 1.7))
            rejected = text(rng, int(20 + 280 * rng.random() ** 1.7))
            words += sum(len(t.split()) for t in (user, chosen, rejected))
            f.write(json.dumps({"prompt": prompt,
                                "chosen": [{"role": "assistant", "content": chosen}],
                                "rejected": [{"role": "assistant", "content": rejected}]}) + "\n")
    return {"rows": rows, "mb": round(path.stat().st_size / 1e6, 1),
            "mean_words_per_row": round(words / rows, 1)}


def rss_anon(pid: int) -> int:
    """Anonymous resident bytes (RSS less memory-mapped files such as Arrow tables)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def run(cmd: list[str], cwd: Path, env: dict, log: Path, timeout: float) -> dict:
    """Run cmd, timestamp its stderr lines, poll the tree's RSS every 0.2 s."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks: dict[str, float] = {}
    lines: list[str] = []

    def reader():
        for line in proc.stdout:
            t = time.perf_counter() - t0
            lines.append(f"{t:9.2f} {line.rstrip()}")
            if "training dpo for" in line and "setup" not in marks:
                marks["setup"] = t
            if line.startswith("step 1:") and "step1" not in marks:
                marks["step1"] = t

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    top = psutil.Process(proc.pid)
    peak_tree = peak_one = peak_anon = 0
    while proc.poll() is None:
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            break
        try:
            procs = [top] + top.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        rss, anon = [], 0
        for p in procs:
            try:
                rss.append(p.memory_info().rss)
                anon += rss_anon(p.pid)
            except (psutil.NoSuchProcess, OSError):
                pass
        peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss, default=0))
        peak_anon = max(peak_anon, anon)
        time.sleep(0.2)
    proc.wait()
    thread.join(timeout=5)
    total = time.perf_counter() - t0
    log.write_text("\n".join(lines) + "\n")
    return {"rc": proc.returncode, "to_training_s": round(marks.get("setup", float("nan")), 1),
            "to_step1_s": round(marks.get("step1", float("nan")), 1), "total_s": round(total, 1),
            "peak_rss_tree_gb": round(peak_tree / 2**30, 2),
            "peak_rss_max_proc_gb": round(peak_one / 2**30, 2),
            "peak_rss_anon_tree_gb": round(peak_anon / 2**30, 2), "log": str(log),
            "tail": lines[-6:] if proc.returncode else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--old-rows", type=int, default=None,
                    help="rows for the old path (default --rows)")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--work", default=None, help="work folder (default a temp dir, removed)")
    ap.add_argument("--model", default="tiny", help="tiny (make_tiny_model) or a model name")
    ap.add_argument("--reference", default="model", choices=["model", "precompute"])
    ap.add_argument("--runs", default="old,new,new", help="comma list of old/new, in order")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="data_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    py = str(ROOT / ".venv" / "bin" / "python")
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    base_env.pop("PYTHONPATH", None)

    rows_new, rows_old = args.rows, args.old_rows or args.rows
    data = {}
    for n in sorted({rows_new, rows_old}):
        path = work / f"pref_{n}.jsonl"
        t = time.perf_counter()
        data[n] = generate(path, n) | {"path": str(path),
                                       "gen_s": round(time.perf_counter() - t, 1)}
        print(f"generated {data[n]}", flush=True)

    model = args.model
    if model == "tiny":
        sys.path.insert(0, str(ROOT))
        from alignment.models import make_tiny_model
        model = make_tiny_model(work / "tiny_model")

    uses_old = "old" in args.runs.split(",")
    old = ROOT
    if uses_old:
        old = Path(tempfile.mkdtemp(prefix="old_alignment_")) / "wt"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), OLD_COMMIT], cwd=ROOT,
                       check=True, capture_output=True)
    caches = work / "caches"
    env_new = base_env | {"ALIGNMENT_CACHE": str(caches / "alignment"),
                          "HF_DATASETS_CACHE": str(caches / "hf_datasets")}
    env_old = base_env | {"PYTHONPATH": str(old), "ALIGNMENT_CACHE": str(work / "old_cache"),
                          "HF_DATASETS_CACHE": str(work / "old_hf_datasets")}

    results, new_seen = [], 0
    try:
        if uses_old:
            which = subprocess.run([py, "-c", "import alignment; print(alignment.__file__)"],
                                   cwd=old, env=env_old, capture_output=True, text=True)
            imported = which.stdout.strip()
            print(f"old path imports {imported}", flush=True)
            assert imported.startswith(str(old)), imported
        for i, kind in enumerate(args.runs.split(",")):
            n = rows_old if kind == "old" else rows_new
            label = kind if kind == "old" else ("new first" if new_seen == 0 else "new cached")
            new_seen += kind == "new"
            cmd = [py, "-m", "alignment", "train", "recipes/dpo.yaml",
                   f"data.train={data[n]['path']}",
                   "data.eval=null", "data.train_limit=null", "data.max_length=1024",
                   "data.max_prompt_length=512", "trainer.max_steps=1", "eval.before_after=false",
                   f"dpo.reference={args.reference}", f"output_dir={work / f'out_{i}'}",
                   f"model.name={model}"]
            print(f"[{label}] {' '.join(cmd[2:])}", flush=True)
            load0 = os.getloadavg()[0]
            r = run(cmd, old if kind == "old" else ROOT, env_old if kind == "old" else env_new,
                    work / f"run_{i}_{kind}.log", args.timeout)
            r = {"rows": n, "path": label, "load1_before": round(load0, 1),
                 "load1_after": round(os.getloadavg()[0], 1)} | r
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        if uses_old:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
            shutil.rmtree(old.parent, ignore_errors=True)

    flags = subprocess.run("grep -o 'avx512_bf16\\|amx_bf16' /proc/cpuinfo | sort -u",
                           shell=True, capture_output=True, text=True).stdout.split()
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu_flags": flags or ["none"], "cores": os.cpu_count(),
            "model": args.model, "dpo.reference": args.reference, "data": list(data.values()),
            "loadavg_end": os.getloadavg()}
    print(f"\n{meta['date']}  cpu flags: {' '.join(meta['cpu_flags'])}  model: {args.model}  "
          f"dpo.reference={args.reference}")
    print(f"{'rows':>7} {'path':<11} {'to training s':>13} {'to step 1 s':>11} {'total s':>8} "
          f"{'peak RSS tree GB':>16} {'max proc GB':>11} {'anon tree GB':>12} {'load1':>9}")
    for r in results:
        print(f"{r['rows']:>7} {r['path']:<11} {r['to_training_s']:>13} {r['to_step1_s']:>11} "
              f"{r['total_s']:>8} {r['peak_rss_tree_gb']:>16} {r['peak_rss_max_proc_gb']:>11} "
              f"{r['peak_rss_anon_tree_gb']:>12} "
              f"{r['load1_before']:>4}/{r['load1_after']:<4}"
              + (f"  rc={r['rc']}" if r["rc"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "runs": results}, indent=1) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
