"""`make compare` (bench/compare.py): the plan every trainer runs under (budget, task,
seeds), the cache keys, the report, and the quick mode end to end with its cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import compare  # noqa: E402
import compare_report  # noqa: E402


def _plan(tmp_path, samples=6400, overrides=(), names=None):
    return compare.plan(names or list(compare.TRAINERS), [42, 43], samples, tmp_path, [],
                        compare.per_trainer(list(overrides)))


def test_every_trainer_gets_the_same_samples_task_and_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = _plan(tmp_path)
    assert {r.name for r in runs} == set(compare.TRAINERS) and len(runs) == 24
    for run in runs:
        recipe = run.recipe
        # 6400 completions: 100 online steps of 64, 400 offline steps of 8 pairs
        assert run.steps * run.samples_per_step == 6400, run.name
        assert recipe.trainer.max_steps == run.steps
        assert recipe.eval.data == "data/arithmetic/add2/test.jsonl" and recipe.eval.limit == 100
        assert recipe.eval.max_new_tokens == 64
        assert "/add2" in recipe.data.train, (run.name, recipe.data.train)
        assert recipe.trainer.seed == run.seed and str(run.dir).startswith(str(tmp_path))
        assert recipe.output_dir == str(run.dir)
    spin = next(r for r in runs if r.name == "spin")
    assert spin.recipe.spin.iterations == 8          # 8 x 50 steps of the 400 demonstrations
    # only the budget, the seed and output_dir (and DPO/IPO's task) are overridden
    assert [o.partition("=")[0] for o in next(r for r in runs if r.name == "ppo").overrides] \
        == ["trainer.max_steps", "trainer.seed", "output_dir"]


def test_key_is_the_resolved_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    first = {(r.name, r.seed): r.key for r in _plan(tmp_path)}
    again = {(r.name, r.seed): r.key for r in _plan(tmp_path / "elsewhere")}
    assert first == again                        # output_dir is not part of the key
    assert len(set(first.values())) == len(first)  # every run (and seed) its own
    changed = {(r.name, r.seed): r.key for r in _plan(tmp_path, overrides=["dpo:dpo.beta=0.2"])}
    assert {k for k in first if first[k] != changed[k]} == {("dpo", 42), ("dpo", 43)}
    # a value spelled differently but resolving the same is the same run
    same = {(r.name, r.seed): r.key for r in _plan(tmp_path, overrides=["dpo:dpo.beta=1e-1"])}
    assert same == first


def test_bad_override_is_refused():
    with pytest.raises(SystemExit, match="expected NAME:key=value"):
        compare.per_trainer(["nosuch:trainer.lr=1"])


def test_logged_kl_per_trainer(monkeypatch):
    monkeypatch.chdir(ROOT)
    from alignment.config import load_recipe

    online_dpo = load_recipe(ROOT / "recipes/online_dpo.yaml")
    assert compare.logged_kl({"rewards/chosen": 0.3, "rewards/rejected": 0.1},
                             online_dpo) == pytest.approx(2.0)   # (0.3 + 0.1) / (2 x 0.1)
    assert compare.logged_kl({"policy/kl": 4.5}, load_recipe(ROOT / "recipes/ppo.yaml")) == 4.5
    offline = load_recipe(ROOT / "recipes/dpo.yaml")
    assert compare.logged_kl({"rewards/chosen": 0.3, "rewards/rejected": 0.1}, offline) is None


def _record(name, seed, after, kl, reward):
    return {"trainer": name, "seed": seed, "status": "done", "accuracy_before": 0.1,
            "accuracy_after": after, "train_reward": None, "train_kl": None,
            "probe": {"reward": reward, "kl": kl}, "wall_seconds": 60.0 * seed,
            "peak_rss_gib": float(seed), "curve": [[30.0, after / 2, 5]], "steps": 10}


def test_aggregate_spread_and_frontier():
    stats = compare_report.aggregate([_record("a", 1, 0.5, 2.0, 1.0),
                                      _record("a", 2, 0.7, 4.0, 1.2),
                                      {"trainer": "b", "seed": 1, "status": "failed"}])
    a = stats["a"]
    assert a["n"] == 2 and a["accuracy_after"] == pytest.approx(0.6)
    assert (a["accuracy_after_min"], a["accuracy_after_max"]) == (0.5, 0.7)
    assert a["probe_kl"] == pytest.approx(3.0) and a["probe_kl_range"] == [2.0, 4.0]
    assert a["wall_seconds"] == pytest.approx(90.0) and a["peak_rss_gib"] == 2.0
    assert a["train_kl"] is None and stats["b"] == {"n": 0}
    # higher reward at lower KL wins; (3, 0.5) is beaten by (1, 1.0)
    assert compare_report.pareto([(3, 0.5), (1, 1.0), (2, 1.5), (4, 1.4)]) == [(1, 1.0), (2, 1.5)]


def test_the_report_says_which_differences_beat_the_seed_spread():
    def acc(lo, mid, hi):
        return {"n": 3, "accuracy_after": mid, "accuracy_after_min": lo,
                "accuracy_after_max": hi}

    lines = compare_report.seed_spread({"grpo": acc(0.60, 0.63, 0.66),
                                        "ppo": acc(0.34, 0.58, 0.81),
                                        "dpo": acc(0.26, 0.28, 0.29),
                                        "one": {"n": 1, "accuracy_after": 0.9}})
    text = "\n".join(lines)
    assert "Seed spread (highest - lowest accuracy after, points): grpo 6, ppo 47, dpo 3." \
        in text
    assert "Wider than 10 points: ppo." in text
    # the lowest seeds of grpo and ppo beat dpo's highest; grpo and ppo overlap
    assert "do not overlap): grpo > dpo; ppo > dpo; every other ordering" in text
    assert compare_report.seed_spread({"one": {"n": 1}}) == []


def test_report_before_any_run_says_not_measured(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = _plan(tmp_path / "runs", names=["grpo", "dpo"])
    meta = {"samples": 6400, "seeds": [42, 43], "quick": False, "runs_dir": str(tmp_path),
            "trainers": ["grpo", "dpo"]}
    compare_report.write_report(tmp_path / "out", runs, [], meta)
    text = (tmp_path / "out" / "COMPARISON.md").read_text()
    assert "Not yet measured" in text and "| grpo | 100 x 64 | not yet measured |" in text
    assert "| dpo | 400 x 16 | not yet measured |" in text and "Matched in samples" in text
    assert not list((tmp_path / "out").glob("*.png"))
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["runs"] == []


def _compare(tmp_path, *extra) -> str:
    cmd = [sys.executable, str(ROOT / "bench/compare.py"), "--quick", "--trainers", "dpo,grpo",
           "--samples", "64",   # (quick mode's 128 halved: 4 DPO steps, 1 GRPO step)
           "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    return re.search(r"\d+ cached, \d+ run, \d+ failed", done.stderr).group(0)


@pytest.mark.slow
def test_quick_mode_runs_caches_and_reruns_only_what_changed(tmp_path):
    """Two trainers (one offline, one online) through the quick mode: the report, then a
    second call that runs nothing, then a changed override and a killed run re-run."""
    assert _compare(tmp_path) == "0 cached, 2 run, 0 failed"
    out = tmp_path / "out"
    report = json.loads((out / "compare.json").read_text())
    assert [(r["trainer"], r["status"]) for r in report["runs"]] == [("dpo", "done"),
                                                                     ("grpo", "done")]
    for r in report["runs"]:
        assert r["steps"] == r["planned_steps"] and r["wall_seconds"] > 0
        assert r["peak_rss_gib"] > 0.1 and r["probe"]["n"] == 4
        assert r["accuracy_before"] is not None and r["accuracy_after"] is not None
    grpo = next(r for r in report["runs"] if r["trainer"] == "grpo")
    assert grpo["train_reward"] is not None and len(grpo["curve"]) >= 2   # eval every step
    text = (out / "COMPARISON.md").read_text()
    assert "| dpo | 4 x 16 |" in text and "| grpo | 1 x 64 |" in text
    assert (out / "compare_accuracy_vs_time.png").stat().st_size > 1000
    assert (out / "compare_reward_vs_kl.png").stat().st_size > 1000
    runs = {p.name.split("-s")[0]: p for p in (tmp_path / "runs").glob("*-s42-*")}
    assert not (runs["dpo"] / "checkpoints").exists() and (runs["dpo"] / "final").is_dir()
    done_at = (runs["grpo"] / "compare.json").stat().st_mtime_ns

    assert _compare(tmp_path) == "2 cached, 0 run, 0 failed"
    assert (runs["grpo"] / "compare.json").stat().st_mtime_ns == done_at

    # a changed override re-runs the run it changes (which runs an override changes:
    # test_key_is_the_resolved_recipe), and a run killed before its record was written is
    # run again from scratch
    (runs["grpo"] / "compare.json").unlink()
    assert _compare(tmp_path, "--override", "dpo:dpo.beta=0.2") == "0 cached, 2 run, 0 failed"
    assert len(list((tmp_path / "runs").glob("dpo-s42-*"))) == 2   # the old one stays cached
    assert (runs["grpo"] / "compare.json").stat().st_mtime_ns != done_at
