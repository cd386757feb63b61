"""Multi-turn episodes on the online loop (the recipe's `environment:` section).

`OnlineTrainer` samples turn 1 as it always does (GRPO's groups, PPO's samples, DR-PO's
resets, online DPO's candidates); with an environment, `play` continues every sample as an
episode (`alignment.rollout.episodes`) before it is scored. Nothing downstream changes:
the episode is one completion whose environment tokens are `forced`, so every trainer
keeps them out of its losses, log-probs, KL and advantages, and the recipe's rewards score
the model's last turn. Here: the environments built per sample, the verifier they may call,
and the episode's reward (`+` the steps' rewards; 0 when a step aborted it).
"""

from __future__ import annotations

import torch

from alignment.config.schema import completion_budget
from alignment.environments import environment_factory, tool_schemas
from alignment.models import stop_token_ids
from alignment.rollout import Rollouts, SamplingParams
from alignment.rollout.episodes import (
    EpisodeInfo,
    EpisodeLimits,
    ReplyRenderer,
    play_episodes,
    say_aborted,
)
from alignment.trainers.online_parts import PromptExample
from reward_models.base import ScoreResult


class EpisodeParts:
    """Mixin for `OnlineTrainer`: `start_environment()` once, `play(...)` per round."""

    def start_environment(self) -> None:
        env = self.recipe.environment
        self.new_environment = (environment_factory(env.name, dict(env.options))
                                if env.name is not None else None)
        if self.new_environment is None:
            return
        self.renderer = ReplyRenderer(self.tokenizer, stop_token_ids(self.tokenizer,
                                                                     self.policy))
        self.episode_limits = EpisodeLimits(env.max_turns, env.max_episode_tokens, env.workers)

    def prompt_tools(self) -> str | None:
        """The environment's typed functions, for the chat template to render into every
        prompt (where the template supports tools)."""
        env = self.recipe.environment
        if env.name is None:
            return None
        schemas = tool_schemas(environment_factory(env.name, dict(env.options))())
        if schemas and "tools" not in (self.tokenizer.chat_template or ""):
            self._say(f"note: the chat template of {self.recipe.model.name} does not render "
                      f"tools; the environment's functions are not shown in the prompt")
        return schemas

    @property
    def episodic(self) -> bool:
        return self.recipe.environment.name is not None

    def episode_tokens(self) -> int:
        """Tokens a sample may take after its prompt (sizes the engine's context)."""
        return completion_budget(self.recipe)

    def play(self, prompts: list[PromptExample], first: Rollouts, seeds: list[int] | None,
             sampling: SamplingParams | None = None) -> tuple[Rollouts, EpisodeInfo]:
        """Every sample of `first` (turn 1) played out as an episode."""
        envs = [self.new_environment() for _ in range(len(first))]
        rollouts, info = play_episodes(
            self.engine, first, envs, rows=[p.row for p in prompts],
            verify=lambda i, text: self.verify(prompts[first.prompt_index[i]], text),
            renderer=self.renderer, sampling=sampling or self.sampling,
            limits=self.episode_limits, seeds=seeds)
        if self.is_main:
            say_aborted(info, lambda i: f"step {self.step + 1}, "
                                        f"{prompts[first.prompt_index[i]].where}")
        return rollouts, info

    def verify(self, prompt: PromptExample, text: str) -> float:
        """The recipe's verifier on one text of `prompt` (what an environment's `verify`
        calls, e.g. to score a first attempt)."""
        part = next((p for p in self.scorer.parts if p.key == self.verifier_key), None)
        if part is None:
            raise ValueError("the recipe's rewards have no verifier (exact_answer, "
                             "math_equiv, python_tests) for the environment to call")
        result = part.scorer.score([prompt.raw], [text], [prompt.row])
        if result.errors and result.errors[0] is not None:
            raise ValueError(f"verifier: {result.errors[0]}")
        return float(result.rewards[0])


def with_episodes(result: ScoreResult, info: EpisodeInfo, verifier_key: str | None
                  ) -> ScoreResult:
    """The episode's reward: the scorers' on the last turn + the steps' rewards (a part of
    its own, `environment`); an aborted episode scores 0, and counts as not correct."""
    rewards = [0.0 if why else r + e for r, e, why in
               zip(result.rewards, info.env_rewards, info.aborted, strict=True)]
    parts = {k: list(v) for k, v in result.parts.items()}
    if verifier_key in parts:
        parts[verifier_key] = [0.0 if why else v for v, why in
                               zip(parts[verifier_key], info.aborted, strict=True)]
    parts["environment"] = [0.0 if why else e for e, why in
                            zip(info.env_rewards, info.aborted, strict=True)]
    return ScoreResult(rewards=rewards, parts=parts, errors=list(result.errors))


def first_turn_mask(loss_mask: torch.Tensor) -> torch.Tensor:
    """The tokens of each row's first model turn: its trained (`loss_mask`) tokens up to the
    first hole after them, the environment's first reply. (batch, tokens) bool."""
    mask = loss_mask.bool()
    started = mask.cumsum(dim=1) > 0
    after_reply = (started & ~mask).cumsum(dim=1) > 0
    return mask & ~after_reply
