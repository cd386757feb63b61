"""SPIN — Self-Play Fine-Tuning (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak
Language Models to Strong Language Models"); ALGORITHMS.md §6.

    for t in 0 .. T-1:                                    # spin.iterations
        y′_i ~ p_θt(· | x_i) for every SFT prompt x_i     # through the rollout engine
        opponent <- θ_t, frozen                           # its log-probs computed once
        for spin.epochs passes over the pairs (x_i, real y_i, generated y′_i)
            [+ a share of iteration t−1's pairs, spin.mix_previous]:
            minimise  ℓ(λ_t [ (log p_θ(y) − log p_θt(y)) − (log p_θ(y′) − log p_θt(y′)) ])
        θ_{t+1} <- θ

No labels beyond the demonstrations: the model learns to tell its own answers from the
data's. The opponent is the model at the START of each iteration, so its log-probs for
the iteration's pairs are computed by the policy itself right after generation (no second
copy in memory, LoRA or not). Each iteration's data is saved under
`output_dir/spin/iteration-<t>/`: `generated.jsonl` (prompt, real, generated, a dataset a
user can open) and `opponent_logps.pt`; a resumed run reads them instead of generating
again with weights that have since moved.

Real and generated completions are made to end the same way: the real one is cut after
its first EOS (a chat template appends a newline after the end-of-turn token that the
engine never produces) and to `rollout.max_new_tokens`, the generation budget; otherwise
the last token alone would separate them. A pair whose two completions are identical
(the model already writes the demonstration) has exactly zero gradient; it is kept (so
the step schedule is known in advance) and counted (`spin/identical`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict

import torch

from alignment import atomic, disk
from alignment.losses import spin_loss
from alignment.trainers import batching
from alignment.trainers.base import TrainingError
from alignment.trainers.engine_setup import EngineSetup
from alignment.trainers.preference import Pair, PreferenceTrainer
from alignment.trainers.sequences import pair_logps
from alignment.trainers.sft import read_demonstrations


class SPINTrainer(EngineSetup, PreferenceTrainer):
    average_logps = False
    reference_mode = "precompute"   # the opponent's table, once per iteration

    @property
    def s(self):
        return self.recipe.spin

    # ------------------------------------------------------------------ data
    def load_examples(self, path: str, limit: int | None, split: str) -> list:
        if split == "eval":   # held-out prompt/answer rows: greedy accuracy per iteration
            return self.load_prompts(path, limit, split)
        return read_demonstrations(self, path, limit, split,
                                   budget=self.recipe.rollout.max_new_tokens)

    # ------------------------------------------------------------------ the schedule
    def iteration_sizes(self) -> list[int]:
        """Pairs per iteration: every demonstration, plus the mixed-in previous ones."""
        n = len(self.demos)
        extra = round(self.s.mix_previous * n)
        return [n] + [n + extra] * (self.s.iterations - 1)

    def _steps_per_epoch(self) -> int:
        # (called once by the base, after the data is read: set the iteration schedule up)
        self.demos = list(self.train_set)
        per_step = self.cfg.batch_size * self.cfg.grad_accum * self.world
        self.iteration_steps = [self.s.epochs * batching.steps_per_epoch(
            max(1, n // self.cfg.batch_size), self.cfg.grad_accum, self.world)
            for n in self.iteration_sizes()]
        if min(self.iteration_steps) == 0:
            raise TrainingError(f"{self.recipe.data.train}: {len(self.demos)} usable rows, "
                                f"fewer than one optimiser step needs ({per_step})")
        self.iteration = -1
        return self.iteration_steps[0] // self.s.epochs

    def planned_steps(self) -> int:
        total = sum(self.iteration_steps)
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _iteration_at(self, step: int) -> tuple[int, int]:
        """(iteration, step within it) of a global step."""
        for t, steps in enumerate(self.iteration_steps):
            if step < steps:
                return t, step
            step -= steps
        raise TrainingError(f"step {step} is past the SPIN schedule")

    def epoch_position(self) -> tuple[int, int, float]:
        t, in_iteration = self._iteration_at(self.step)
        per_epoch = self.iteration_steps[t] // self.s.epochs
        epoch, in_epoch = divmod(in_iteration, per_epoch)
        # the data order is seeded by (iteration, epoch); progress counts iterations
        return t * 1000 + epoch, in_epoch, t + (in_iteration + 1) / self.iteration_steps[t]

    def lam(self, t: int) -> float:
        return self.s.lam[min(t, len(self.s.lam) - 1)]

    # ------------------------------------------------------------------ the loop
    def before_training(self) -> None:
        self.start_engine()

    def rollout_batch(self) -> tuple[int, int]:
        """An iteration's generation: this process's share of the demonstrations at once."""
        return (math.ceil(len(self.demos) / self.world),
                self.recipe.data.max_prompt_length + self.recipe.rollout.max_new_tokens)

    def _train_step(self) -> dict:
        t, in_iteration = self._iteration_at(self.step)
        if t != self.iteration:
            self._begin_iteration(t)
        metrics = super()._train_step()
        metrics.update({"spin/iteration": float(t), "spin/lambda": self.lam(t),
                        "spin/identical": self.identical_share})
        last = in_iteration == self.iteration_steps[t] - 1 or self.step + 1 == self.total_steps
        if last and self.eval_set:   # accuracy after every iteration (the paper's curve)
            self.engine.sync_weights(self.policy)
            result = self.engine_accuracy()
            metrics.update({f"spin/{k.removeprefix('eval/')}_after_iteration": v
                            for k, v in result.items()})
            if self.is_main:
                atomic.write_json(self._iteration_dir(t) / "eval.json",
                                  {"iteration": t, "step": self.step + 1, **result})
            self._say(f"SPIN iteration {t}: held-out accuracy {result['eval/accuracy']:.1%}")
        return metrics

    def evaluate_loss(self) -> dict:
        """Greedy accuracy on data.eval through the engine (the policy's current weights)."""
        if not self.eval_set:
            return {}
        self.engine.sync_weights(self.policy)
        return self.engine_accuracy()

    def preference_loss(self, policy_real, policy_generated, opponent_real, opponent_generated,
                        batch):
        t, _ = self._iteration_at(self.step)
        return spin_loss(policy_real, policy_generated, opponent_real, opponent_generated,
                         lam=self.lam(t), loss_type=self.s.loss_type)

    def _table_logps(self, batch: dict) -> torch.Tensor:
        return pair_logps(self.policy, batch)   # the policy at the iteration start IS θ_t

    # ------------------------------------------------------------------ an iteration
    def _iteration_dir(self, t: int):
        return self.output_dir / "spin" / f"iteration-{t}"

    def _begin_iteration(self, t: int) -> None:
        """This iteration's pairs and opponent log-probs: read from the run if saved (a
        resumed run), else generated with θ_t now and saved."""
        folder = self._iteration_dir(t)
        key = self._iteration_key(t)
        saved = self._load_iteration(folder, key)
        at_start = self.step == sum(self.iteration_steps[:t])
        if saved is None and not at_start:
            raise TrainingError(f"{folder}: the data of SPIN iteration {t} is missing or was made "
                                "by another recipe, and the model has moved since the iteration "
                                "began (θ_t is gone): start the run again in a new output_dir")
        if saved is None:
            generated = self._generate(t)
            pairs = self._pairs(t, generated)
            self._say(f"SPIN iteration {t}: opponent log-probs for {len(pairs)} pairs ...")
            table = self._reference_table(pairs)
            if self.is_main:
                self._save_iteration(folder, key, pairs, table)
            self.accelerator.wait_for_everyone()
        else:
            pairs, table = saved
            self._say(f"SPIN iteration {t}: read {len(pairs)} pairs and the opponent's "
                      f"log-probs from {folder} (not generated again)")
        self.train_set = pairs
        self._ref_table = {"train": table, "eval": table[:0]}
        self.identical_share = sum(p.chosen_ids == p.rejected_ids for p in pairs) / len(pairs)
        for attr in ("_length_cache", "_plan_epoch"):   # new data: new lengths, new plan
            self.__dict__.pop(attr, None)
        self.iteration = t

    def _generate(self, t: int) -> list[list[int]]:
        """One completion per demonstration prompt from θ_t, every process a share."""
        self.engine.sync_weights(self.policy)
        # every process a share; under ZeRO-3 equal shares (generation gathers the weights
        # from all processes, so they decode in lockstep), a repeat not counted
        share = self.eval_share(self.demos)
        demos = [d for d, _ in share]
        seeds = [((self.cfg.seed * 1_000_003 + t) * 1_000_003 + d.index) % (1 << 62)
                 for d in demos]
        self._say(f"SPIN iteration {t}: generating {len(self.demos)} completions ...")
        rollouts = self.engine.generate([d.prompt_ids for d in demos], n=1,
                                        sampling=self.sampling, seeds=seeds)
        mine = {d.index: list(ids) or [self.tokenizer.eos_token_id]
                for (d, counted), ids in zip(share, rollouts.completion_ids, strict=True)
                if counted}
        if self.world > 1:
            shares = [None] * self.world
            torch.distributed.all_gather_object(shares, mine)
            mine = {k: v for share in shares for k, v in share.items()}
        return [mine[d.index] for d in self.demos]

    def _pairs(self, t: int, generated: list[list[int]]) -> list[Pair]:
        pairs = [Pair(i, d.prompt_ids, d.chosen_ids, g, d.where, d.row)
                 for i, (d, g) in enumerate(zip(self.demos, generated, strict=True))]
        extra = self.iteration_sizes()[t] - len(pairs)
        if extra:   # a seeded share of the previous iteration's pairs
            saved = self._load_iteration(self._iteration_dir(t - 1), self._iteration_key(t - 1),
                                         table=False)
            if saved is None:
                raise TrainingError(f"{self._iteration_dir(t - 1)}: the previous iteration's "
                                    "pairs are missing (spin.mix_previous needs them)")
            previous = saved[0]
            picked = random.Random(self.cfg.seed * 7_919 + t).sample(previous, extra)
            pairs += [Pair(len(pairs) + k, p.prompt_ids, p.chosen_ids, p.rejected_ids, p.where,
                           p.row) for k, p in enumerate(picked)]
        return pairs

    def _save_iteration(self, folder, key: str, pairs: list[Pair], table: torch.Tensor) -> None:
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        rows = [{"prompt": decode(p.prompt_ids), "real": decode(p.chosen_ids),
                 "generated": decode(p.rejected_ids), "where": p.where,
                 "prompt_ids": p.prompt_ids, "real_ids": p.chosen_ids,
                 "generated_ids": p.rejected_ids, **{k: v for k, v in p.row.items()
                                                     if k not in ("prompt", "completion")}}
                for p in pairs]
        atomic.write_text(folder / "generated.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        # written last: its presence = complete
        disk.save_torch({"key": key, "table": table}, folder / "opponent_logps.pt",
                        f"SPIN's opponent log-probs ({folder.name})")
        atomic.write_json(folder / "key.json", {"key": key})

    def _load_iteration(self, folder, key: str, table: bool = True):
        data, logps = folder / "generated.jsonl", folder / "opponent_logps.pt"
        if not (data.is_file() and logps.is_file()):
            return None
        saved = torch.load(logps, weights_only=True)
        if saved.get("key") != key:
            return None
        pairs = []
        for i, line in enumerate(data.read_text(encoding="utf-8").splitlines()):
            r = json.loads(line)
            row = {k: v for k, v in r.items() if k not in ("prompt", "real", "generated", "where",
                                                          "prompt_ids", "real_ids",
                                                          "generated_ids")}
            pairs.append(Pair(i, r["prompt_ids"], r["real_ids"], r["generated_ids"], r["where"],
                              row))
        return pairs, (saved["table"] if table else None)

    def _iteration_key(self, t: int) -> str:
        """What an iteration's pairs depend on besides θ_t: the model, the data, the
        sampling, the seed and the mixing (not the step budget, which may be extended)."""
        r = self.recipe
        rollout = {k: v for k, v in asdict(r.rollout).items()   # (not the memory budgets)
                   if k not in ("kv_cache_gb", "gpu_memory_utilization")}
        parts = [t, str(self.model_path), asdict(r.data), rollout, self.cfg.seed,
                 self.cfg.batch_size, r.spin.mix_previous, str(self.dtype)]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


__all__ = ["SPINTrainer"]
