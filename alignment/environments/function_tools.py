"""`function_tools`: tools as typed Python functions, as TRL's `GRPOTrainer(tools=[...])`.

    environment:
      name: function_tools
      options: {tools: ["my_pkg.tools:multiply", "my_pkg.tools:lookup"]}

Each function's signature and docstring become a JSON schema
(`transformers.utils.get_json_schema`; type hints and an `Args:` section are required), which
the chat template renders into every prompt when the model's template supports tools
(Qwen 2.5+, Llama 3.1+, SmolLM3, Hermes, ...; a template without tool support renders the
prompt without them, said once at start). A turn is a tool call when it holds
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (the format of those
templates); each call runs and its result (or `error: ...`) comes back as a `tool` turn. A
turn without a call is the answer.

The functions are the user's own code and run in the trainer's process: the model chooses
only their arguments (checked against the signature). Model-written code belongs in
`python_tool`'s sandbox instead.
"""

from __future__ import annotations

import inspect
import json
import re

from alignment.environments.base import Environment, Step
from reward_models.registry import import_object

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def tool_calls(text: str) -> list[dict | str]:
    """The `<tool_call>` blocks of a turn, each parsed (a dict) or the reason it is not."""
    calls: list[dict | str] = []
    for body in _CALL.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError as exc:
            calls.append(f"error: the tool call is not valid JSON ({exc.msg})")
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            calls.append('error: a tool call is {"name": ..., "arguments": {...}}')
        else:
            calls.append(call)
    return calls


class FunctionTools(Environment):
    def __init__(self, tools: list[str], max_output_chars: int = 400):
        if not tools:
            raise ValueError("function_tools: tools must name at least one function")
        self.tools = [import_object(path, what="tool") for path in tools]
        from transformers.utils import get_json_schema

        for path, fn in zip(tools, self.tools, strict=True):
            if not callable(fn):
                raise ValueError(f"function_tools: {path} is not a function")
            try:
                get_json_schema(fn)   # type hints and docstring the template needs
            except Exception as exc:  # noqa: BLE001 - transformers' own message says what
                raise ValueError(f"function_tools: {path}: {exc}") from None
        self.by_name = {fn.__name__: fn for fn in self.tools}
        self.max_output_chars = max_output_chars

    def step(self, text: str) -> Step:
        calls = tool_calls(text)
        if not calls:
            return Step(done=True)
        replies, errors = [], 0
        for call in calls:
            reply = call if isinstance(call, str) else self._run(call)
            errors += reply.startswith("error:")
            replies.append(reply[:self.max_output_chars])
        return Step(observation="\n".join(replies), role="tool",
                    metrics={"tool_calls": float(len(calls)), "tool_errors": float(errors)})

    def _run(self, call: dict) -> str:
        fn = self.by_name.get(call["name"])
        if fn is None:
            return f"error: no tool named {call['name']!r} (tools: {', '.join(self.by_name)})"
        args = call.get("arguments", {})
        if isinstance(args, str):   # some templates write the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return "error: the arguments are not valid JSON"
        if not isinstance(args, dict):
            return "error: the arguments must be an object"
        try:
            inspect.signature(fn).bind(**args)
        except TypeError as exc:
            return f"error: {exc}"
        try:
            result = fn(**args)
        except Exception as exc:  # noqa: BLE001 - the model's arguments broke it: say so
            return f"error: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else json.dumps(result, default=str)
