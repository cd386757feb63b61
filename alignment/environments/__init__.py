"""Environments for multi-turn rollouts (the recipe's `environment:` section).

    environment:
      name: python_tool                # a built-in, or 'package.module:Name'
      options: {timeout_s: 5}          # the class's constructor arguments
      max_turns: 3

The rollout (`alignment.rollout.episodes`) plays one episode per sample: the model's turns
alternate with the environment's replies until the environment says done or a limit is
reached. The interface is `base.Environment` / `base.Step`; the built-ins:

  python_tool       the model runs ```python blocks in the sandbox; their output comes back
  function_tools    typed Python functions rendered by the chat template, called by name
  self_correction   SCoRe: the model is asked to check and revise its first answer
"""

from __future__ import annotations

import difflib
import inspect
import json

from alignment.environments.base import Environment, Step
from reward_models.registry import import_object, signature_problems

BUILTIN = {
    "python_tool": "alignment.environments.python_tool:PythonTool",
    "function_tools": "alignment.environments.function_tools:FunctionTools",
    "self_correction": "alignment.environments.self_correction:SelfCorrection",
}


def environment_class(name: str) -> type[Environment]:
    """The class `name` refers to; ValueError (with a did-you-mean) when there is none."""
    target = BUILTIN.get(name)
    if target is None and ":" not in name and "." not in name:
        close = difflib.get_close_matches(name, list(BUILTIN), n=1, cutoff=0.6)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown environment '{name}'{hint} (built-in: "
                         f"{', '.join(BUILTIN)}; or 'package.module:Name' for your own)")
    cls = import_object(target or name, what="environment")
    if not (inspect.isclass(cls) and callable(getattr(cls, "step", None))):
        raise ValueError(f"environment '{name}' is not a class with a step(text) method")
    return cls


def environment_factory(name: str, options: dict):
    """A function that builds a fresh environment per episode, its options checked now
    (unknown, missing or mistyped options; what the constructor itself refuses)."""
    cls = environment_class(name)
    problems = signature_problems(cls, options)
    if problems:
        raise ValueError("; ".join(f"environment '{name}': {p}" for p in problems))
    try:
        cls(**options)   # a bad value (or a sandbox this machine cannot give) fails here
    except (TypeError, ValueError) as exc:
        raise ValueError(f"environment '{name}': {exc}") from None
    return lambda: cls(**options)


def tool_schemas(environment) -> str | None:
    """The JSON schemas of an environment instance's `tools` (typed functions), for the chat
    template; None when it has none."""
    tools = getattr(environment, "tools", None)
    if not tools:
        return None
    from transformers.utils import get_json_schema

    return json.dumps([get_json_schema(fn) for fn in tools])


__all__ = ["BUILTIN", "Environment", "Step", "environment_class", "environment_factory",
           "tool_schemas"]
