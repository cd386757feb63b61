"""The online loop shared by every trainer that learns from its own samples (GRPO and its
variants; PPO, APA and DR-PO with a critic):

    for step in range(start, total):
        prompts  <- this step's share of the (seeded, resumable) prompt order
        samples  <- engine.generate(prompts, n)                # vLLM or HF, in-process
        samples  <- play_episodes(samples, environment)        # with `environment:` only:
                                                               # turns 2.., one call per turn
        rewards  <- scorer(prompts, samples, rows) (+ overlong penalty)
        batch    <- algorithm.make_batch(samples, rewards)     # e.g. group advantages
        algorithm.prepare_batches(batch)                       # π_old, π_ref, values, GAE
        for each optimizer step of algorithm.update_plan:      # μ iterations / K x M
            update(step's micro-batches)                       # base Trainer.update
        engine.sync_weights(policy)                            # in place, verified

A subclass supplies `make_batch` (advantages, which samples to keep) and
`compute_loss`; DR-PO also `generate_rollouts` (resets). The step logs rewards (total and
per part), accuracy, completion length, the engine/trainer log-prob gap and where the
time went (generate / score / prepare / update / sync).
"""

from __future__ import annotations

import abc
import json
import math
import random
import sys
import time

import torch

from alignment import atomic
from alignment.faults import kill_point
from alignment.losses.grpo import overlong_penalty
from alignment.rollout import Rollouts, logprob_gap
from alignment.trainers import batching
from alignment.trainers.base import Trainer, TrainingError
from alignment.trainers.engine_setup import EngineSetup
from alignment.trainers.multi_turn import EpisodeParts, with_episodes
from alignment.trainers.online_parts import (  # noqa: F401 - _micro_batches: tests use it here
    PromptExample,
    RoundStats,
    Sample,
    _mean_metrics,
    _micro_batches,
    _runs,
    _timed,
)
from alignment.trainers.sequences import attention_width, collate_online, group_token_logps
from reward_models.base import RowError, ScorerError
from reward_models.registry import build_composite

VERIFIERS = ("exact_answer", "math_equiv", "python_tests")   # parts that mean "correct"


class OnlineTrainer(EpisodeParts, EngineSetup, Trainer):
    @property
    def algo(self):
        """The recipe section of this run's algorithm (an `OnlineConfig`)."""
        return getattr(self.recipe, self.recipe.algorithm)

    # ------------------------------------------------------------------ data
    def load_examples(self, path: str, limit: int | None, split: str) -> list[PromptExample]:
        return self.load_prompts(path, limit, split)

    def example_length(self, example: PromptExample) -> int:
        return len(example.prompt_ids)

    def collate(self, samples: list[Sample], split: str = "train") -> dict:
        """Samples of one group share one copy of their prompt (`collate_groups`), or get a
        row each (`collate_separate`), as `<algorithm>.layout` says or is cheaper."""
        groups = _runs(samples)
        batch = collate_online([g[0].prompt_ids for g in groups],
                               [[s.completion_ids for s in g] for g in groups], self.pad_id,
                               layout=self.algo.layout,
                               width0=attention_width(self.policy.config))
        width = batch["completion_mask"].shape[1]
        loss_mask = torch.zeros((len(samples), width), dtype=torch.bool)
        sampling = torch.zeros((len(samples), width), dtype=torch.float32)
        for i, s in enumerate(samples):
            loss_mask[i, :len(s.loss_mask)] = torch.tensor(s.loss_mask, dtype=torch.bool)
            sampling[i, :len(s.sampling_logps)] = torch.tensor(s.sampling_logps)
        batch.update(loss_mask=loss_mask, sampling_logps=sampling,
                     advantages=torch.tensor([s.advantage for s in samples]),
                     rewards=torch.tensor([s.reward for s in samples]))
        return batch

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def make_batch(self, rollouts: Rollouts, rewards: list[float], truncated: list[bool],
                   info: RoundStats) -> list[Sample]:
        """Turn one round of scored rollouts into training samples (may drop some)."""

    @property
    def samples_per_prompt(self) -> int:
        return 1

    @property
    def prompts_per_step(self) -> int:
        return self.algo.prompts_per_step

    @property
    def update_iterations(self) -> int:
        return 1

    def rollout_batch(self) -> tuple[int, int]:
        return (self.prompts_per_step * self.samples_per_prompt,
                self.recipe.data.max_prompt_length + self.episode_tokens())

    def make_sample(self, rollouts: Rollouts, i: int, reward: float, truncated: bool,
                    advantage: float = 0.0) -> Sample:
        """Rollout sample i for training: forced (reset) tokens are off its loss mask, and
        all of it when truncated and the algorithm's `mask_truncated` is set, or when its
        reward is not finite (reported by `_score`; it is kept as 0.0, trains nothing)."""
        ids, lps = rollouts.completion_ids[i], rollouts.logprobs[i]
        keep = not (self.algo.mask_truncated and truncated) and math.isfinite(reward)
        reward = reward if math.isfinite(reward) else 0.0
        forced = rollouts.forced[i] if rollouts.forced else [False] * len(ids)
        return Sample(prompt_ids=rollouts.prompt_ids[rollouts.prompt_index[i]],
                      completion_ids=list(ids) or [self.tokenizer.eos_token_id],
                      sampling_logps=list(lps) or [0.0],
                      loss_mask=[keep and not f for f in forced] or [False],
                      reward=reward, advantage=advantage, group=rollouts.prompt_index[i])

    def needs_reference(self) -> bool:
        return False

    # ------------------------------------------------------------------ set-up
    def before_training(self) -> None:
        if self.is_main:   # a fresh run: no samples of an old one; resumed: none past it
            _keep_samples_up_to(self.output_dir / "samples.jsonl", self.step)
        self.gaps: list[tuple[float, float]] = []
        self.scorer = build_composite(self.recipe.rewards)
        self.verifier_key = next((p.key for p in self.scorer.parts
                                  if p.scorer.name in VERIFIERS and not p.constraint), None)
        self.ref_model = self._load_reference() if self.needs_reference() else None
        self.start_environment()
        self.start_engine()

    def _load_reference(self):
        """π_ref: a frozen copy (or, for a LoRA policy, the policy with adapters off)."""
        if self.uses_lora and self.recipe.model.reference is None:
            return None
        return self.load_frozen(self.recipe.model.reference or self.recipe.model.name)

    def sampled_as(self) -> dict:
        """The rollout's sampling distribution, for log-probs comparable with the engine's
        (`group_token_logps_as_sampled`)."""
        r = self.recipe.rollout
        return {"temperature": r.temperature, "top_k": r.top_k, "top_p": r.top_p}

    @torch.no_grad()
    def reference_token_logps(self, batch: dict) -> torch.Tensor:
        temperature = self.recipe.rollout.temperature
        if self.ref_model is None:
            with self.policy.disable_adapter():
                return group_token_logps(self.policy, batch, temperature=temperature)
        return group_token_logps(self.ref_model, batch, temperature=temperature)

    # ------------------------------------------------------------------ the step
    def _steps_per_epoch(self) -> int:
        per_step = self.prompts_per_step * self.world
        if len(self.train_set) < per_step:
            raise TrainingError(f"{self.recipe.data.train}: {len(self.train_set)} prompts, "
                                f"fewer than one step needs ({per_step})")
        return len(self.train_set) // per_step

    def _plan(self, epoch: int) -> list[list[int]]:
        """The prompt order in batches of the GLOBAL prompts per step: it depends on the
        seed and on how many prompts a step takes in all, not on how many processes."""
        if getattr(self, "_plan_epoch", None) != epoch:
            self._plan_cache = batching.epoch_plan(
                self._lengths(), batch_size=self.prompts_per_step * self.world,
                seed=self.cfg.seed, epoch=epoch)
            self._plan_epoch = epoch
        return self._plan_cache

    def _step_prompts(self) -> list[PromptExample]:
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        step_prompts = self._plan(epoch)[in_epoch]
        return [self.train_set[i] for i in step_prompts[self.rank::self.world]]

    def _extra_prompts(self, round_: int) -> list[PromptExample]:
        """Dynamic sampling: more prompts for the same step (seeded, so resumable; drawn
        for all processes at once, then shared out, like the step's own prompts)."""
        rng = random.Random((self.cfg.seed * 1_000_003 + self.step) * 101 + round_ * 7)
        drawn = rng.sample(range(len(self.train_set)),
                           min(len(self.train_set), self.prompts_per_step * self.world))
        return [self.train_set[i] for i in drawn[self.rank::self.world]]

    def _prompt_seeds(self, prompts: list[PromptExample], round_: int) -> list[int]:
        """One random stream per (step, round, prompt): the samples of a prompt do not
        depend on which process or batch generates them (HF backend; vLLM on GPUs)."""
        base = (self.cfg.seed * 1_000_003 + self.step) * 1_009 + round_
        return [(base * 1_000_003 + p.index) % (1 << 62) for p in prompts]

    def _train_step(self) -> dict:
        t0 = time.perf_counter()
        times = dict.fromkeys(("generate", "episodes", "score", "prepare", "update", "sync"),
                              0.0)
        samples, info = [], RoundStats()
        prompts = self._step_prompts()
        for round_ in range(self.max_rounds):
            if round_ > 0:
                prompts = self._extra_prompts(round_)
            with _timed(times, "generate"):
                scored, rollouts = self.generate_rollouts(prompts, round_)
            episodes = None
            if self.episodic:   # turns 2.. of every sample, batched turn by turn
                with _timed(times, "episodes"):
                    rollouts, episodes = self.play(scored, rollouts,
                                                   self._prompt_seeds(scored, round_))
            with _timed(times, "score"):
                rewards, truncated = self._score(scored, rollouts, info, episodes)
            for sample in self.make_batch(rollouts, rewards, truncated, info):
                sample.group += round_ * len(scored)
                samples.append(sample)
            enough = len(samples) >= self.min_samples
            if self._all_processes(enough) if self.sharded else enough:
                break   # (sharded weights: generation is collective, rounds end together)
        samples = samples[:self.min_samples]   # whole groups (pairs): a multiple of their size
        n_samples = int(self._sum_across_processes(float(len(samples))))   # all processes
        if not n_samples:
            self.optim.zero_grad()
            self.advance_schedule()
            self._say(f"step {self.step + 1}: no sample with a learning signal after "
                      f"{self.max_rounds} sampling round(s) (every group's rewards were "
                      "equal); step skipped")
            return {**self._global_means(info), "skipped": 1.0,
                    "step_seconds": time.perf_counter() - t0}

        self.gaps: list[tuple[float, float]] = []   # (mean, max) per micro-batch, 1st pass
        with _timed(times, "prepare"):
            batches = [self.collate(c) for c in
                       _micro_batches(samples, self.micro_batch_size(len(samples)))]
            # processes step together: each needs one backward at least (DDP's gradient
            # sync), under ZeRO-3 the same number (every forward gathers the weights)
            need = self._max_across_processes(len(batches)) if self.sharded else 1
            batches += [self._stand_in_batch(prompts[0]) for _ in range(int(need) - len(batches))]
            metrics = self.prepare_batches(batches) or {}
        with _timed(times, "update"):
            updates = []
            for step_batches in self.update_plan(batches, prompts[0]):
                updates.append(self.update(step_batches))
                if updates[-1].get("skipped"):
                    break
            metrics.update(_mean_metrics(updates))
        self.after_update(metrics, n_samples)
        self.advance_schedule()
        with _timed(times, "sync"):
            kill_point("sync")   # (crash tests: weights updated, engine not yet synced)
            self.engine.sync_weights(self.policy)
        seconds = time.perf_counter() - t0
        tokens = int(self._sum_across_processes(sum(b["n_tokens"] for b in batches)))
        metrics.update(self._global_means(info))
        metrics.update({f"time/{k}": v for k, v in times.items()})
        metrics.update(self.step_metrics())
        if self.is_main:
            with (self.output_dir / "samples.jsonl").open("a") as f:
                f.writelines(json.dumps(e) + "\n" for e in info.examples)
        metrics.update({"step_seconds": seconds, "tokens": tokens,
                        "tokens_per_s": tokens / seconds, "samples": n_samples,
                        # shares of this process's micro-batches in each packed layout
                        **{f"layout/{name}": sum(b["layout"] == name for b in batches)
                           / len(batches) for name in ("grouped", "tree")},
                        "epoch": (self.step + 1) / self.steps_per_epoch})
        if self.gaps:
            metrics["rollout/logprob_gap_mean"] = sum(g[0] for g in self.gaps) / len(self.gaps)
            metrics["rollout/logprob_gap_max"] = max(g[1] for g in self.gaps)
        if getattr(self.engine, "last_probe_gap", None) is not None:
            metrics["rollout/probe_gap"] = self.engine.last_probe_gap
        return metrics

    def _stand_in_batch(self, prompt: PromptExample) -> dict:
        """A one-token batch of zero weight: it trains nothing, but lets a process with no
        samples of its own take part in the collective steps of the others."""
        sample = Sample(prompt_ids=prompt.prompt_ids, completion_ids=[self.pad_id],
                        sampling_logps=[0.0], loss_mask=[False], reward=0.0)
        return {**self.collate([sample]), "stand_in": True}

    def _global_means(self, info: RoundStats) -> dict:
        """Rollout metrics over the samples of all processes (errors: their total)."""
        totals = info.totals()
        keys = sorted(totals)
        summed = self._sum_vector([totals[k][0] for k in keys] + [totals[k][1] for k in keys])
        out = {}
        for i, key in enumerate(keys):
            value, count = summed[i], summed[len(keys) + i]
            if key in ("reward_errors", "reward_nonfinite"):
                out[key] = value
            elif count:
                out[key] = value / count
        return out

    @property
    def max_rounds(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        """Samples a full step holds (sampling rounds stop once they are reached)."""
        return self.prompts_per_step * self.samples_per_prompt

    def generate_rollouts(self, prompts: list[PromptExample], round_: int
                          ) -> tuple[list[PromptExample], Rollouts]:
        """Sample `samples_per_prompt` completions of each prompt; returns the prompts the
        rollouts' `prompt_index` refers to, and the rollouts."""
        rollouts = self.engine.generate([p.prompt_ids for p in prompts], n=self.samples_per_prompt,
                                        sampling=self.sampling,
                                        seeds=self._prompt_seeds(prompts, round_))
        return prompts, rollouts

    def micro_batch_size(self, n_samples: int) -> int:
        return self.cfg.batch_size

    def prepare_batches(self, batches: list[dict]) -> dict | None:
        """Per-batch tensors computed once before the updates (old/ref log-probs, values,
        advantages); may return rollout metrics for the step's log."""

    def update_plan(self, batches: list[dict], prompt: PromptExample) -> list[list[dict]]:
        """The optimizer steps taken on one rollout batch, each a list of micro-batches
        (`prompt` makes stand-in batches where a process needs one). Default: the whole
        batch, `update_iterations` times."""
        return [batches] * self.update_iterations

    def after_update(self, metrics: dict, n_samples: int) -> None:  # noqa: B027 - optional
        """Called once per step after the updates (e.g. an adaptive KL controller)."""

    def step_metrics(self) -> dict:
        """Extra per-step values for the log."""
        return {}

    def note_logprob_gap(self, batch: dict, trainer_logps: torch.Tensor) -> None:
        """Engine vs trainer log-probs of the sampled tokens, once per micro-batch per step:
        a growing gap means the engine samples from other weights than those trained."""
        mask = batch["loss_mask"].to(trainer_logps.device)
        if batch.get("gap_logged") or not mask.any():
            return
        gap = logprob_gap(batch["sampling_logps"].to(trainer_logps.device),
                          trainer_logps.detach(), mask)
        self.gaps.append((gap["rollout/logprob_gap_mean"], gap["rollout/logprob_gap_max"]))
        batch["gap_logged"] = True

    def _score(self, prompts: list[PromptExample], rollouts: Rollouts, info: RoundStats,
               episodes=None) -> tuple[list[float], list[bool]]:
        """Scores from the recipe's rewards (errors counted, scored 0; episodes: their last
        turn, + the environment's rewards, 0 if aborted), plus DAPO's soft overlong penalty
        when `overlong_cache` is set; and which samples were truncated."""
        rows = [prompts[i].row for i in rollouts.prompt_index]
        # the prompt as written in the data, as `alignment score` passes it (a reward model
        # renders it with its own template; the policy's rendering would be templated twice)
        raw = [prompts[i].raw for i in rollouts.prompt_index]
        try:
            result = self.scorer.score(raw, rollouts.texts, rows)
        except RowError as exc:   # a row no scorer can use: name it
            where = prompts[rollouts.prompt_index[exc.index]].where
            raise ScorerError(f"rewards: {where}: {exc.reason}") from None
        except ValueError as exc:   # e.g. a user's scorer returning the wrong shape
            raise ScorerError(f"rewards: {exc}") from None
        if episodes is not None:
            result = with_episodes(result, episodes, self.verifier_key)
            info.add_episodes(episodes)
        for i, error in enumerate(result.errors):
            if error is not None:
                info.errors += 1
                if info.errors <= 3:  # name the sample, keep going (scored 0)
                    self._say(f"step {self.step + 1}: reward error on "
                              f"{prompts[rollouts.prompt_index[i]].where}: {error}")
        truncated = [r == "length" for r in rollouts.finish_reasons]
        bad = self._non_finite_rewards(prompts, rollouts, result, info)
        info.add(result, rollouts, truncated, self.verifier_key)
        if not info.examples:   # a few samples per step, to read what the policy writes
            texts = episodes.transcripts if episodes is not None else rollouts.texts
            info.examples = [{"step": self.step + 1, "prompt": prompts[rollouts.prompt_index[i]]
                              .text[-120:], "completion": texts[i],
                              "reward": result.rewards[i] if i not in bad else None}
                             for i in range(min(4, len(rollouts)))]
        rewards = [math.nan if i in bad else r for i, r in enumerate(result.rewards)]
        if self.algo.overlong_cache:
            lengths = torch.tensor([len(c) for c in rollouts.completion_ids])
            penalty = overlong_penalty(lengths, self.episode_tokens(),
                                       self.algo.overlong_cache).tolist()
            info.parts.setdefault("overlong_penalty", []).extend(penalty)
            rewards = [r + p for r, p in zip(rewards, penalty, strict=True)]
        return rewards, truncated

    def _non_finite_rewards(self, prompts: list[PromptExample], rollouts: Rollouts, result,
                            info: RoundStats) -> set[int]:
        """Samples whose reward, or any part of it, is NaN or inf: each is named (prompt,
        sample, scorer and value; on whichever process holds it), counted in
        `reward_nonfinite`, and never trained on (NaN reward -> masked out)."""
        bad: dict[int, list[str]] = {}
        for key, values in [("reward", result.rewards), *result.parts.items()]:
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    bad.setdefault(i, []).append(f"{key}={value}")
        for i, where in sorted(bad.items()):
            info.nonfinite += 1
            if info.nonfinite <= 8:   # a scorer broken on every sample: a few lines per step
                prompt = rollouts.prompt_index[i]
                sample = rollouts.prompt_index[:i].count(prompt)
                rank = f"[rank {self.rank}] " if self.world > 1 else ""
                print(f"{rank}step {self.step + 1}: non-finite reward on "
                      f"{prompts[prompt].where}, sample {sample} of its prompt "
                      f"({', '.join(where)}): not trained on", file=sys.stderr, flush=True)
        return set(bad)

    # ------------------------------------------------------------------ evaluation
    def evaluate_loss(self) -> dict:
        """Online trainers have no held-out loss: greedy accuracy on data.eval through the
        rollout engine instead (fast; `alignment eval` is the reference measurement)."""
        return self.engine_accuracy()


def _keep_samples_up_to(path, step: int) -> None:
    """Drop the sample rows of steps after `step` (a killed run's steps that the resumed
    run does again) and a line a kill cut short."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            rows.append(line + "\n")
    atomic.write_text(path, "".join(rows))


__all__ = ["OnlineTrainer", "PromptExample", "RoundStats", "Sample"]
