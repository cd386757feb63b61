"""The rollout engine, set up in one place for every trainer that generates (the online
loop, and SPIN's generation phases): backend choice, sampling settings, vLLM options."""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from alignment.data import DataError
from alignment.data.prepare import MappedRows
from alignment.errors import TrainingError
from alignment.rollout import SamplingParams, make_engine, vllm_available
from alignment.rollout.guard import EngineFailure, GuardedEngine
from alignment.rollout.kv_cache import KVCacheSize, model_kv_cache
from alignment.trainers.online_parts import PromptExample
from reward_models import is_correct


class EngineSetup:
    """Mixin for `Trainer`s that generate: prompt data, `start_engine()` (sets `self.engine`,
    `self.sampling` and `self.pad_id` from the recipe's `rollout:` section) and greedy
    accuracy through the engine."""

    episodic = False   # multi-turn episodes (`EpisodeParts`, online trainers)

    def episode_tokens(self) -> int:
        """Tokens a sample may take after its prompt (sizes the engine's context)."""
        return self.recipe.rollout.max_new_tokens

    def load_prompts(self, path, limit: int | None, split: str = "train") -> MappedRows:
        """Prompt rows (prompt + any columns the scorers read), rendered, tokenised and kept
        in Arrow; over-long prompts follow data.too_long. Evaluation rows need an answer
        (greedy accuracy); training rows need the columns the recipe's `rewards:` read."""
        rows = self.read_data(path, "prompt", limit, split,
                              answer_column="answer" if split == "eval" else None)
        if split == "train" and hasattr(self.recipe, "rewards"):
            from reward_models.registry import data_columns

            for column, part in data_columns(self.recipe.rewards).items():
                if column not in rows.columns:
                    raise DataError(f"{rows.label}: missing column '{column}', which the "
                                    f"reward '{part}' reads (found: "
                                    f"{', '.join(sorted(rows.columns))})")
        return MappedRows(rows, lambda i, t: PromptExample(
            t.prompt_ids, t.prompt_text, dict(t.extra), t.where, i, raw=t.raw_prompt))

    def start_engine(self) -> None:
        r = self.recipe.rollout
        self.pad_id = (self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                       else self.tokenizer.eos_token_id)
        self.sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                       max_new_tokens=r.max_new_tokens)
        backend = r.backend
        if backend == "auto":
            backend = "vllm" if vllm_available() else "hf"
        t0 = time.perf_counter()
        options = (self._vllm_options() if backend == "vllm"
                   else {"synced": self.sharded})   # ZeRO-3 / FSDP2: decode in lockstep
        try:
            engine = make_engine(backend, model=self.policy, tokenizer=self.tokenizer,
                                 model_path=str(self.model_path), **options)
        except TrainingError:   # a verdict (e.g. stale weights): as it is
            raise
        except ValueError as exc:   # a setting this machine cannot honour (no vLLM here)
            raise TrainingError(f"rollout.backend: {exc}") from None
        except Exception as exc:
            raise EngineFailure(f"the rollout engine ({backend}) failed to start: "
                                f"{type(exc).__name__}: {exc}", call="start") from exc
        # every call watched: a failure or a hang stops the run resumably (`rollout.guard`)
        self.engine = GuardedEngine(engine, timeout_s=r.timeout_s, on_hang=self.engine_hung,
                                    log_dir=self.output_dir if self.is_main else None)
        self._say(f"rollout engine: {self.engine.backend} ({time.perf_counter() - t0:.1f} s "
                  "to start)")
        if backend == "vllm" and torch.cuda.is_available():
            self._say(f"KV cache: what vLLM keeps of rollout.gpu_memory_utilization="
                      f"{r.gpu_memory_utilization} after weights and activations; the run's "
                      f"largest generate call needs {self.kv_cache_needed}")
        elif backend == "vllm":
            self._say(f"KV cache: {self.kv_cache}")

    def rollout_batch(self) -> tuple[int, int]:
        """(sequences generated at once, tokens of each) in one step: sizes the KV cache."""
        raise NotImplementedError

    def engine_generations(self) -> list[tuple[int, int]]:
        """The engine's generate calls as (sequences at once, tokens each): a step's, and
        the greedy eval pass over this process's share of data.eval."""
        calls = [self.rollout_batch()]
        if self.eval_set:
            calls.append((math.ceil(len(self.eval_set) / self.world),
                          self.recipe.data.max_prompt_length + max(
                              self.recipe.eval.max_new_tokens,
                              self.episode_tokens() if self.episodic else 0)))
        return calls

    def _vllm_options(self) -> dict:
        r = self.recipe.rollout
        longest = self.recipe.data.max_prompt_length + max(self.episode_tokens(),
                                                           self.recipe.eval.max_new_tokens)
        dtype = r.dtype if r.dtype != "auto" else str(self.dtype).removeprefix("torch.")
        self.kv_cache_needed = model_kv_cache(str(self.model_path), dtype,
                                              self.engine_generations(), longest + 8)
        self.kv_cache = (self.kv_cache_needed if r.kv_cache_gb == "auto"
                         else KVCacheSize(float(r.kv_cache_gb)))
        return {"dtype": dtype, "kv_cache_gb": self.kv_cache.gib,
                "gpu_memory_utilization": r.gpu_memory_utilization,
                "max_model_len": longest + 8, "seed": self.cfg.seed + self.rank}

    def run_info(self) -> dict:
        """The engine's set-up, for summary.json."""
        info = {"rollout_backend": getattr(getattr(self, "engine", None), "backend", None)}
        if info["rollout_backend"] == "vllm" and not torch.cuda.is_available():
            info["kv_cache"] = dataclasses.asdict(self.kv_cache)
        return info

    def engine_accuracy(self, examples: list[PromptExample] | None = None) -> dict:
        """Greedy exact-answer accuracy on `examples` (default: data.eval) through the
        rollout engine, every process answering its share."""
        examples = self.eval_set if examples is None else examples
        if not examples or not hasattr(self, "engine"):
            return {}
        sampling = SamplingParams(temperature=0.0, max_new_tokens=self.recipe.eval.max_new_tokens)
        share = self.eval_share(examples)   # each process answers its share
        correct, length = [], 0
        if share:
            rollouts = self.engine.generate([e.prompt_ids for e, _ in share], n=1,
                                            sampling=sampling)
            if self.episodic:   # the answer is the last turn of a greedy episode
                rollouts, episodes = self.play([e for e, _ in share], rollouts, None, sampling)
                rollouts.texts = [("" if why else text) for text, why in
                                  zip(rollouts.texts, episodes.aborted, strict=True)]
            for text, ids, i in zip(rollouts.texts, rollouts.completion_ids,
                                    rollouts.prompt_index, strict=True):
                example, counted = share[i]
                if counted:   # (not a repeat that only keeps ZeRO-3 processes in step)
                    correct.append(is_correct(text, example.row.get("answer", "")))
                    length += len(ids)
        values = self._sum_vector([sum(correct), len(correct), length])
        return {"eval/accuracy": values[0] / max(values[1], 1),
                "eval/completion_length": values[2] / max(values[1], 1)}
