"""Multi-turn episodes: the model's turns alternate with an environment's replies.

    first    = engine.generate(prompts, n)              # turn 1, as a single-turn rollout
    episodes = play_episodes(engine, first, envs, ...)  # turns 2.. for all of them at once

After every model turn each live episode's environment `step`s on the turn's text; its
reply is rendered through the chat template (`ReplyRenderer`) and appended as token ids,
and the episodes that go on are continued by ONE engine call per turn (every episode's
whole context as the prompt: vLLM's prefix cache or HF's KV cache reuses the shared part).

Token for token: an episode is kept as the ids the engine sampled and the ids of the
replies, in order, never decoded and re-encoded. The result is a `Rollouts` whose
completion holds every turn after the prompt, with the replies' tokens (and the template's
end-of-turn the engine did not write) on `forced` (log-prob 0): the trainers already keep
forced tokens out of every loss, log-prob, KL and advantage. `texts` is the model's last
turn (the answer the recipe's rewards score); `episodes` has the rest.

Limits: `max_turns` model turns; `max_episode_tokens` tokens after the prompt, replies
included (a turn's own budget is the rollout's max_new_tokens, cut to what is left; a reply
that leaves no room for another turn ends the episode instead).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from alignment.environments.base import Environment, Step
from alignment.rollout.types import Rollouts, SamplingParams, sample_seed

MIN_TURN_TOKENS = 4   # a reply must leave this many tokens for the model's next turn


class EnvironmentFailure(ValueError):
    """The environment cannot be used with this model (e.g. its chat template)."""


@dataclass
class EpisodeLimits:
    max_turns: int = 2
    max_episode_tokens: int = 256
    workers: int = 4   # environments stepped at once (tool calls wait on a sandbox)

    def __post_init__(self):
        if self.max_turns < 1 or self.max_episode_tokens < 1 or self.workers < 1:
            raise ValueError(f"episode limits must be >= 1, got {self}")


@dataclass
class EpisodeInfo:
    """Per sample, beside `Rollouts`: what the episode did."""

    turns: list[int]                          # model turns played
    env_rewards: list[float]                  # Σ of the steps' rewards
    aborted: list[str | None]                 # why it ended with reward 0, if it did
    metrics: list[dict[str, float]]           # the steps' metrics (summed per sample)
    transcripts: list[str]                    # the whole episode, decoded (for logs)
    reply_tokens: list[int] = field(default_factory=list)   # environment tokens


class ReplyRenderer:
    """The token ids that follow a model turn when the environment replies: what the chat
    template writes after the turn (its end-of-turn, then the reply as a `role` message,
    then the generation prompt of the next assistant turn), tokenised once, on its own."""

    def __init__(self, tokenizer, stop_ids: list[int]):
        if not getattr(tokenizer, "chat_template", None):
            raise EnvironmentFailure("multi-turn episodes need a chat template (the "
                                     "environment's replies are rendered as chat messages); "
                                     "this tokenizer has none")
        self.tokenizer = tokenizer
        self.stop_texts = {t: tokenizer.decode([t]) for t in stop_ids}
        self._cache: dict[tuple[str, str, int | None], list[int]] = {}

    def _template_tail(self, role: str, content: str) -> tuple[str, str]:
        """(what closes an assistant turn, what opens the reply and the next turn)."""
        mark = "\x00MODEL\x00"   # the assistant's text, to find where it ends
        base = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": mark}]
        render = self.tokenizer.apply_chat_template
        try:
            before = render(base, tokenize=False)
            after = render(base + [{"role": role, "content": content}], tokenize=False,
                           add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template that refuses the role
            raise EnvironmentFailure(f"the chat template cannot render a {role!r} message "
                                     f"after an assistant turn ({type(exc).__name__}: {exc}); "
                                     "use role 'user' or another model") from None
        if not after.startswith(before):
            raise EnvironmentFailure("the chat template rewrites earlier turns when a message "
                                     "is added, so an episode cannot grow token by token")
        return before[before.rindex(mark) + len(mark):], after[len(before):]

    def tokens(self, role: str, content: str, last_token: int | None) -> list[int]:
        """The reply's ids after a model turn that ended on `last_token` (None or a token
        that is no stop id: the turn was cut, and the template's end-of-turn is added)."""
        key = (role, content, last_token if last_token in self.stop_texts else None)
        if key not in self._cache:
            close, reply = self._template_tail(role, content)
            stop = self.stop_texts.get(key[2])
            if stop and close.startswith(stop):
                close = close[len(stop):]   # the model wrote its end-of-turn itself
            self._cache[key] = self.tokenizer.encode(close + reply, add_special_tokens=False)
        return list(self._cache[key])


def turn_seed(prompt_seed: int, k: int, turn: int) -> int:
    """The random stream of turn `turn` (>= 2) of sample k of a prompt seeded `prompt_seed`."""
    return (sample_seed(prompt_seed, k) * 1_000_003 + turn) % (1 << 62)


def play_episodes(engine, first: Rollouts, envs: list[Environment], *, rows: list[dict],
                  verify: Callable[[int, str], float], renderer: ReplyRenderer,
                  sampling: SamplingParams, limits: EpisodeLimits,
                  seeds: list[int] | None = None) -> tuple[Rollouts, EpisodeInfo]:
    """Continue each sample of `first` (turn 1) as an episode with its environment.

    `envs[i]` plays sample i; `rows[p]` is prompt p's data row; `verify(i, text)` scores a
    text of sample i with the recipe's verifier; `seeds` are the prompts' seeds (as for
    `engine.generate`)."""
    n = len(first)
    ids = [list(c) for c in first.completion_ids]
    logps = [list(lp) for lp in first.logprobs]
    forced = [list(first.forced[i]) if first.forced and first.forced[i] else [False] * len(c)
              for i, c in enumerate(ids)]
    last_text, finish = list(first.texts), list(first.finish_reasons)
    info = EpisodeInfo(turns=[1] * n, env_rewards=[0.0] * n, aborted=[None] * n,
                       metrics=[{} for _ in range(n)], transcripts=[], reply_tokens=[0] * n)
    k_of = _index_in_group(first.prompt_index)
    for i, env in enumerate(envs):
        env.reset(rows[first.prompt_index[i]], lambda text, i=i: verify(i, text))
    live = list(range(n))
    for turn in range(1, limits.max_turns + 1):
        steps = _step_all(envs, live, last_text, limits.workers)
        going = []
        for i, step in zip(live, steps, strict=True):
            info.env_rewards[i] += step.reward
            for key, value in step.metrics.items():
                info.metrics[i][key] = info.metrics[i].get(key, 0.0) + float(value)
            if step.abort:
                info.aborted[i] = step.abort
                continue
            if step.done or turn == limits.max_turns:
                continue
            reply = renderer.tokens(step.role, step.observation or "", ids[i][-1] if ids[i]
                                    else None)
            if len(ids[i]) + len(reply) + MIN_TURN_TOKENS > limits.max_episode_tokens:
                finish[i] = "length"   # no room for another turn: the episode ends here
                continue
            ids[i] += reply
            logps[i] += [0.0] * len(reply)
            forced[i] += [True] * len(reply)
            info.reply_tokens[i] += len(reply)
            going.append(i)
        live = going
        if not live:
            break
        room = max(limits.max_episode_tokens - len(ids[i]) for i in live)
        turn_sampling = dataclasses.replace(sampling,
                                            max_new_tokens=min(sampling.max_new_tokens, room))
        contexts = [first.prompt_ids[first.prompt_index[i]] + ids[i] for i in live]
        turn_seeds = None if seeds is None else [
            turn_seed(seeds[first.prompt_index[i]], k_of[i], turn + 1) for i in live]
        out = engine.generate(contexts, n=1, sampling=turn_sampling, seeds=turn_seeds)
        for j, i in enumerate(live):
            new, new_lp = out.completion_ids[j], out.logprobs[j]
            cut = limits.max_episode_tokens - len(ids[i])
            reason = out.finish_reasons[j]
            if len(new) > cut:   # a shorter budget than the call's longest
                new, new_lp, reason = new[:cut], new_lp[:cut], "length"
            text = out.texts[j] if len(new) == len(out.completion_ids[j]) else \
                renderer.tokenizer.decode(new, skip_special_tokens=True)
            ids[i] += new
            logps[i] += new_lp
            forced[i] += [False] * len(new)
            last_text[i], finish[i] = text, reason
            info.turns[i] += 1
    info.transcripts = [renderer.tokenizer.decode(c) for c in ids]   # specials kept
    rollouts = Rollouts(prompt_ids=first.prompt_ids, completion_ids=ids, logprobs=logps,
                        texts=last_text, finish_reasons=finish,
                        prompt_index=list(first.prompt_index), forced=forced)
    return rollouts, info


def _index_in_group(prompt_index: list[int]) -> list[int]:
    seen: dict[int, int] = {}
    out = []
    for p in prompt_index:
        out.append(seen.get(p, 0))
        seen[p] = out[-1] + 1
    return out


def _step_all(envs: list[Environment], live: list[int], texts: list[str],
              workers: int) -> list[Step]:
    """Every live episode's step on its last turn, `workers` at a time; an environment that
    raises (or returns something else than a Step) aborts its episode, reason logged."""

    def one(i: int) -> Step:
        try:
            step = envs[i].step(texts[i])
        except Exception as exc:  # noqa: BLE001 - a user's environment: end this episode
            return Step(done=True, abort=f"{type(envs[i]).__name__}.step raised "
                                         f"{type(exc).__name__}: {exc}")
        if not isinstance(step, Step):
            return Step(done=True, abort=f"{type(envs[i]).__name__}.step returned "
                                         f"{type(step).__name__}, not a Step")
        if not math.isfinite(step.reward):
            return Step(done=True, abort=f"{type(envs[i]).__name__}.step returned reward "
                                         f"{step.reward}")
        return step

    if workers == 1 or len(live) == 1:
        return [one(i) for i in live]
    with ThreadPoolExecutor(max_workers=min(workers, len(live))) as pool:
        return list(pool.map(one, live))


def say_aborted(info: EpisodeInfo, where: Callable[[int], str], limit: int = 3) -> None:
    """Name the first few aborted episodes on stderr (the run goes on)."""
    shown = 0
    for i, reason in enumerate(info.aborted):
        if reason is not None and shown < limit:
            print(f"episode ended with reward 0 on {where(i)}: {reason}", file=sys.stderr,
                  flush=True)
            shown += 1
