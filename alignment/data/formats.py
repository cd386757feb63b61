"""Column conventions and row validation, for plain-text and conversational data.

| kind        | columns                                        | used by                  |
|-------------|------------------------------------------------|--------------------------|
| preference  | prompt, chosen, rejected                       | DPO, IPO, reward models  |
| prompt      | prompt, answer (any extra columns are kept)    | GRPO/PPO/..., eval       |
| sft         | messages, or prompt + completion               | SFT, SPIN                |

A text field is either a non-empty string or a conversation: a list of
`{"role": "system"|"user"|"assistant", "content": str}`. Conversational preference rows
may also omit `prompt` when `chosen` and `rejected` are whole conversations sharing their
first turns (TRL's "implicit prompt"): the shared turns become the prompt.

Every problem is reported as `<file> line <n>: column '<name>' ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignment.data.io import DataError, Row

ROLES = ("system", "user", "assistant", "tool")
Messages = list[dict[str, str]]


@dataclass
class Example:
    """One validated row: the prompt as a conversation, completions as conversations."""

    prompt: Messages
    completions: dict[str, Messages]   # e.g. {"chosen": [...], "rejected": [...]}
    extra: dict[str, Any] = field(default_factory=dict)   # answer, task, ...
    where: str = ""
    plain: bool = False   # the prompt was a plain string (no chat structure in the file)


def scorer_prompt(ex: Example) -> str | Messages:
    """The prompt as scorers see it: as written in the data — its text for a plain prompt or
    a single user turn, else the messages — never the chat-template rendering (a reward
    model renders it its own way)."""
    if ex.plain or (len(ex.prompt) == 1 and ex.prompt[0]["role"] == "user"):
        return ex.prompt[0]["content"]
    return [dict(m) for m in ex.prompt]


def check_columns(rows: list[Row], required: tuple[str, ...], source: str) -> None:
    present = set().union(*(r.values.keys() for r in rows[:1000]))
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)} (found: "
                        f"{', '.join(sorted(present)) or 'none'})")


def as_messages(value: Any, row: Row, column: str, *, default_role: str) -> tuple[Messages, bool]:
    """Validate one text field; return it as a conversation and whether it was plain text."""
    if value is None:
        raise DataError(f"{row.where}: column '{column}' is missing or null")
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{row.where}: column '{column}' is empty")
        return [{"role": default_role, "content": value}], True
    if isinstance(value, list):
        if not value:
            raise DataError(f"{row.where}: column '{column}' is an empty conversation")
        for i, msg in enumerate(value):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise DataError(f"{row.where}: column '{column}' message {i} must be an "
                                "object with 'role' and 'content'")
            if msg["role"] not in ROLES:
                raise DataError(f"{row.where}: column '{column}' message {i} has role "
                                f"{msg['role']!r} (allowed: {', '.join(ROLES)})")
            if not isinstance(msg["content"], str):
                raise DataError(f"{row.where}: column '{column}' message {i} content must "
                                f"be a string, got {type(msg['content']).__name__}")
        if not value[-1]["content"].strip():
            raise DataError(f"{row.where}: column '{column}' is empty (its last "
                            f"{value[-1]['role']} turn has no text)")
        return [{"role": m["role"], "content": m["content"]} for m in value], False
    raise DataError(f"{row.where}: column '{column}' must be a string or a list of "
                    f"messages, got {type(value).__name__}")


def preference_example(row: Row) -> Example:
    v = row.values
    if "prompt" not in v and isinstance(v.get("chosen"), list):
        return _implicit_prompt_example(row)
    prompt, plain = as_messages(v.get("prompt"), row, "prompt", default_role="user")
    chosen, _ = as_messages(v.get("chosen"), row, "chosen", default_role="assistant")
    rejected, _ = as_messages(v.get("rejected"), row, "rejected", default_role="assistant")
    _check_ends_with_assistant(chosen, row, "chosen")
    _check_ends_with_assistant(rejected, row, "rejected")
    extra = {k: val for k, val in v.items() if k not in ("prompt", "chosen", "rejected")}
    return Example(prompt, {"chosen": chosen, "rejected": rejected}, extra, row.where, plain)


def _implicit_prompt_example(row: Row) -> Example:
    chosen, _ = as_messages(row.values.get("chosen"), row, "chosen", default_role="assistant")
    rejected, _ = as_messages(row.values.get("rejected"), row, "rejected",
                              default_role="assistant")
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise DataError(f"{row.where}: no 'prompt' column and 'chosen'/'rejected' share no "
                        "leading turns to use as the prompt")
    _check_ends_with_assistant(chosen, row, "chosen")
    _check_ends_with_assistant(rejected, row, "rejected")
    extra = {k: val for k, val in row.values.items() if k not in ("chosen", "rejected")}
    return Example(chosen[:n], {"chosen": chosen[n:], "rejected": rejected[n:]}, extra,
                   row.where)


def prompt_example(row: Row, answer_column: str | None = "answer") -> Example:
    v = row.values
    prompt, plain = as_messages(v.get("prompt"), row, "prompt", default_role="user")
    if answer_column is not None:
        answer = v.get(answer_column)
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise DataError(f"{row.where}: column '{answer_column}' is missing or empty")
        if isinstance(answer, (list, dict, bool)):
            raise DataError(f"{row.where}: column '{answer_column}' must be a number or a "
                            f"string, got {type(answer).__name__}")
    extra = {k: val for k, val in v.items() if k != "prompt"}
    return Example(prompt, {}, extra, row.where, plain)


def sft_example(row: Row) -> Example:
    v = row.values
    if "messages" in v:
        messages, _ = as_messages(v["messages"], row, "messages", default_role="user")
        if isinstance(v["messages"], str) or messages[-1]["role"] != "assistant":
            raise DataError(f"{row.where}: column 'messages' must be a conversation that "
                            "ends with an assistant turn")
        cut = len(messages) - 1
        extra = {k: val for k, val in v.items() if k != "messages"}
        return Example(messages[:cut], {"completion": messages[cut:]}, extra, row.where)
    prompt, plain = as_messages(v.get("prompt"), row, "prompt", default_role="user")
    completion, _ = as_messages(v.get("completion"), row, "completion",
                                default_role="assistant")
    _check_ends_with_assistant(completion, row, "completion")
    extra = {k: val for k, val in v.items() if k not in ("prompt", "completion")}
    return Example(prompt, {"completion": completion}, extra, row.where, plain)


def _check_ends_with_assistant(messages: Messages, row: Row, column: str) -> None:
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{row.where}: column '{column}' must end with an assistant turn, "
                        f"ends with {messages[-1]['role']!r}")


KINDS = {
    "preference": (("chosen", "rejected"), preference_example),
    "prompt": (("prompt",), prompt_example),
    "sft": ((), sft_example),
}


def parse_examples(rows: list[Row], kind: str, source: str) -> list[Example]:
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r} (one of {', '.join(KINDS)})")
    required, parse = KINDS[kind]
    check_columns(rows, required, source)
    if kind == "prompt":
        check_columns(rows, ("answer",), source)
    if kind == "sft":
        present = set().union(*(r.values.keys() for r in rows[:1000]))
        if "messages" not in present and not {"prompt", "completion"} <= present:
            raise DataError(f"{source}: SFT data needs a 'messages' column or 'prompt' and "
                            f"'completion' columns (found: {', '.join(sorted(present))})")
    return [parse(r) for r in rows]
