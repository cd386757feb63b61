"""Column conventions and row validation, for plain-text and conversational data.

| kind        | columns (TRL's dataset types)                   | used by                  |
|-------------|-------------------------------------------------|--------------------------|
| preference  | prompt, chosen, rejected (explicit prompt);     | DPO, IPO, CoPG, reward   |
|             | chosen, rejected (implicit prompt); prompt,     | model                    |
|             | completion, label (unpaired: paired per prompt) |                          |
| prompt      | prompt (+ answer, tests, ... for the verifiers) | GRPO/PPO/..., eval       |
| sft         | messages, prompt + completion, or text          | SFT, SPIN                |

A text field is either a non-empty string or a conversation: a list of
`{"role": "system"|"user"|"assistant"|"tool", "content": str}`; an assistant turn may carry
`tool_calls` (then its content may be empty) and a tool turn `name` / `tool_call_id`, all
handed to the chat template as they are, with a row's `tools` column (function schemas, a
list or a JSON string). Conversational preference rows may also omit `prompt` when `chosen`
and `rejected` are whole conversations sharing their first turns (TRL's "implicit prompt"):
the shared turns become the prompt. A `text` row (language modelling) is trained on every
token after its first.

Every problem is reported as `<file> line <n>: column '<name>' ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignment.data.io import DataError, Row

ROLES = ("system", "user", "assistant", "tool")
TOOL_KEYS = ("tool_calls", "name", "tool_call_id")   # passed through to the chat template
Messages = list[dict[str, Any]]


@dataclass
class Example:
    """One validated row: the prompt as a conversation, completions as conversations."""

    prompt: Messages
    completions: dict[str, Messages]   # e.g. {"chosen": [...], "rejected": [...]}
    extra: dict[str, Any] = field(default_factory=dict)   # answer, task, ...
    where: str = ""
    plain: bool = False   # the prompt was a plain string (no chat structure in the file)
    text: str | None = None      # a language-modelling row (`text` column): no prompt
    tools: list | None = None    # function schemas for the chat template (`tools` column)


def scorer_prompt(ex: Example) -> str | Messages:
    """The prompt as scorers see it: as written in the data — its text for a plain prompt or
    a single user turn, else the messages — never the chat-template rendering (a reward
    model renders it its own way)."""
    if ex.plain or (len(ex.prompt) == 1 and ex.prompt[0]["role"] == "user"):
        return ex.prompt[0]["content"]
    return [dict(m) for m in ex.prompt]


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
        out = [_message(msg, i, row, column) for i, msg in enumerate(value)]
        last = out[-1]
        if not last["content"].strip() and not last.get("tool_calls"):
            raise DataError(f"{row.where}: column '{column}' is empty (its last "
                            f"{last['role']} turn has no text)")
        return out, False
    raise DataError(f"{row.where}: column '{column}' must be a string or a list of "
                    f"messages, got {type(value).__name__}")


def _message(msg: Any, i: int, row: Row, column: str) -> dict[str, Any]:
    """One validated turn: role, content (a string; empty beside tool calls), and the tool
    keys it carries (absent keys, and the nulls Arrow gives them, are left out)."""
    if not isinstance(msg, dict) or "role" not in msg or (
            "content" not in msg and not msg.get("tool_calls")):
        raise DataError(f"{row.where}: column '{column}' message {i} must be an object with "
                        "'role' and 'content'")
    if msg["role"] not in ROLES:
        raise DataError(f"{row.where}: column '{column}' message {i} has role "
                        f"{msg['role']!r} (allowed: {', '.join(ROLES)})")
    content = msg.get("content")
    if content is None and msg.get("tool_calls"):
        content = ""
    if not isinstance(content, str):
        raise DataError(f"{row.where}: column '{column}' message {i} content must be a "
                        f"string, got {type(content).__name__}")
    out = {"role": msg["role"], "content": content}
    out.update((k, drop_nulls(msg[k])) for k in TOOL_KEYS if msg.get(k) is not None)
    return out


def drop_nulls(value: Any) -> Any:
    """Nested objects without their null fields: Arrow gives every row of a column the union
    of all rows' keys (null where a row has none), which a chat template would render."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _tools(row: Row) -> list | None:
    value = row.values.get("tools")
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(f"{row.where}: column 'tools' is text but not JSON (a list of "
                            "function schemas)") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise DataError(f"{row.where}: column 'tools' must be a list of function schemas "
                        f"(objects), got {type(value).__name__}")
    return drop_nulls(value)


def preference_example(row: Row) -> Example:
    v = row.values
    if v.get("prompt") is None and isinstance(v.get("chosen"), list):
        return _implicit_prompt_example(row)
    prompt, plain = as_messages(v.get("prompt"), row, "prompt", default_role="user")
    chosen, _ = as_messages(v.get("chosen"), row, "chosen", default_role="assistant")
    rejected, _ = as_messages(v.get("rejected"), row, "rejected", default_role="assistant")
    _check_ends_with_assistant(chosen, row, "chosen")
    _check_ends_with_assistant(rejected, row, "rejected")
    extra = {k: val for k, val in v.items() if k not in ("prompt", "chosen", "rejected")}
    return Example(prompt, {"chosen": chosen, "rejected": rejected}, extra, row.where, plain,
                   tools=_tools(row))


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
                   row.where, tools=_tools(row))


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
    return Example(prompt, {}, extra, row.where, plain, tools=_tools(row))


def sft_example(row: Row) -> Example:
    v = row.values
    if "messages" in v:
        messages, _ = as_messages(v["messages"], row, "messages", default_role="user")
        if isinstance(v["messages"], str) or messages[-1]["role"] != "assistant":
            raise DataError(f"{row.where}: column 'messages' must be a conversation that "
                            "ends with an assistant turn")
        cut = len(messages) - 1
        extra = {k: val for k, val in v.items() if k != "messages"}
        return Example(messages[:cut], {"completion": messages[cut:]}, extra, row.where,
                       tools=_tools(row))
    if "text" in v and "prompt" not in v:   # language modelling: plain text, no prompt
        value = v["text"]
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{row.where}: column 'text' must be non-empty text, got "
                            f"{value!r:.40}")
        extra = {k: val for k, val in v.items() if k != "text"}
        return Example([], {}, extra, row.where, plain=True, text=value)
    prompt, plain = as_messages(v.get("prompt"), row, "prompt", default_role="user")
    completion, _ = as_messages(v.get("completion"), row, "completion",
                                default_role="assistant")
    _check_ends_with_assistant(completion, row, "completion")
    extra = {k: val for k, val in v.items() if k not in ("prompt", "completion")}
    return Example(prompt, {"completion": completion}, extra, row.where, plain,
                   tools=_tools(row))


def _check_ends_with_assistant(messages: Messages, row: Row, column: str) -> None:
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{row.where}: column '{column}' must end with an assistant turn, "
                        f"ends with {messages[-1]['role']!r}")


KINDS = {
    "preference": (("chosen", "rejected"), preference_example),
    "prompt": (("prompt",), prompt_example),
    "sft": ((), sft_example),
}


def check_kind_columns(present: set[str], kind: str, source: str,
                       answer_column: str | None = "answer") -> None:
    """The columns a kind needs, from the column names alone (no row is read)."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r} (one of {', '.join(KINDS)})")
    found = f"(found: {', '.join(sorted(present)) or 'none'})"
    if kind == "preference" and not {"chosen", "rejected"} & present and \
            {"completion", "label"} <= present:
        return   # unpaired preference rows: paired per prompt (`pair_unpaired`)
    required = KINDS[kind][0] + ((answer_column,) if kind == "prompt" and answer_column
                                 else ())
    missing = [c for c in required if c not in present]
    if missing:
        raise DataError(f"{source}: missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)} {found}")
    if kind == "sft" and "messages" not in present and "text" not in present and \
            not {"prompt", "completion"} <= present:
        raise DataError(f"{source}: SFT data needs a 'messages' column, 'prompt' and "
                        f"'completion' columns, or a 'text' column {found}")


def is_unpaired(present: set[str]) -> bool:
    return not {"chosen", "rejected"} & present and {"prompt", "completion", "label"} <= present


def pair_unpaired(rows: list[Row], source: str) -> tuple[list[Row], int]:
    """TRL's unpaired preference rows (prompt, completion, label true/false) as pairs: per
    prompt, the k-th desirable completion with the k-th undesirable one. Returns the pairs
    (each row names both source rows) and how many rows found no partner."""
    import json

    good: dict[str, list[Row]] = {}
    bad: dict[str, list[Row]] = {}
    for row in rows:
        label = row.values.get("label")
        if not isinstance(label, bool) and label not in (0, 1):
            raise DataError(f"{row.where}: column 'label' must be true or false (desirable "
                            f"or not), got {label!r}")
        key = json.dumps(row.values.get("prompt"), sort_keys=True)
        (good if label else bad).setdefault(key, []).append(row)
    pairs, unmatched = [], 0
    for key in dict.fromkeys([*good, *bad]):
        ups, downs = good.get(key, []), bad.get(key, [])
        unmatched += abs(len(ups) - len(downs))
        for up, down in zip(ups, downs, strict=False):
            values = {k: v for k, v in up.values.items() if k not in ("completion", "label")}
            values.update(chosen=up.values["completion"], rejected=down.values["completion"])
            pairs.append(Row(values, f"{up.where} (paired with {down.where})"))
    if not pairs:
        raise DataError(f"{source}: unpaired preference rows (prompt, completion, label) but "
                        "no prompt has both a desirable and an undesirable completion")
    return pairs, unmatched


def parse_examples(rows: list[Row], kind: str, source: str,
                   answer_column: str | None = "answer") -> list[Example]:
    present = set().union(*(r.values.keys() for r in rows[:1000]))
    check_kind_columns(present, kind, source, answer_column)
    if kind == "preference" and is_unpaired(present):
        rows, _ = pair_unpaired(rows, source)
    if kind == "prompt":
        return [prompt_example(r, answer_column) for r in rows]
    return [KINDS[kind][1](r) for r in rows]
