"""What an environment is: a plain class the rollout calls after every model turn.

    class Guess(Environment):
        def reset(self, row, verify):
            self.answer = row["answer"]
        def step(self, text):
            if self.answer in text:
                return Step(done=True)
            return Step(observation="No. Try again.")

One instance plays one episode: built as `Name(**options)` from the recipe's
`environment:` section, `reset(row, verify)` with the prompt's data row and the recipe's
verifier (`verify(text) -> float`), then `step(text)` with each turn the model wrote (its
decoded text), until a step says `done`, the turn limit is reached or the token budget is
spent. A step's `observation` is the environment's reply: it enters the conversation as a
`role` message through the model's chat template (the tokens the trainer trains on are
exactly those the engine was fed; the reply's are masked out of every loss).

The episode's reward is the recipe's `rewards:` on the model's last turn (the answer),
plus the sum of every step's `reward` (shaping, per-turn rewards). A step with `abort`
(a reason) ends the episode with reward 0 whatever else it earned, and the reason is
counted and logged: what a tool call that hangs, floods its output or tries to leave its
sandbox gets. `metrics` are averaged per step over the steps that report them and logged
as `episode/<name>`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("user", "tool")


@dataclass
class Step:
    observation: str | None = None   # the environment's reply (None: nothing to say)
    done: bool = False               # the episode ends after this model turn
    reward: float = 0.0              # added to the episode's reward
    role: str = "user"               # the reply's chat role: "user" or "tool"
    abort: str | None = None         # why the episode ends here with reward 0
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"Step.role must be one of {', '.join(ROLES)}, got {self.role!r}")


class Environment(abc.ABC):
    """Subclass and implement `step` (and `reset` when an episode keeps state). `tools`:
    typed functions with docstrings the chat template renders into every prompt, where the
    model's template supports tools (`function_tools` calls them)."""

    tools: list[Callable] = []

    def reset(self, row: dict[str, Any], verify: Callable[[str], float]) -> None:  # noqa: B027
        """A new episode on the prompt of `row` (its data columns); optional."""

    @abc.abstractmethod
    def step(self, text: str) -> Step:
        """The model wrote `text` (one turn): what happens next."""
