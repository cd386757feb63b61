"""Chat template + tokenisation + the length policy, producing token-id examples.

A completion's tokens are what the chat template appends after the prompt rendered with
`add_generation_prompt=True`, so they end with the template's end-of-turn token (the EOS
the model must learn to emit). With `chat_template: false` the prompt is used verbatim and
the completion is its text plus the tokenizer's EOS.

Length policy (`data.too_long`), applied per row:
  skip      drop rows whose prompt exceeds max_prompt_length or whose prompt + longest
            completion exceeds max_length; the count and the first rows are reported
  truncate  keep the END of the prompt and the START of each completion
  error     stop at the first such row, naming it
Preference rows whose chosen and rejected completions tokenise identically are always
skipped and counted (their DPO gradient is exactly zero).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from alignment.data.formats import Example, scorer_prompt
from alignment.data.io import DataError
from alignment.data.templates import render_completion, render_prompt


@dataclass
class TokenizedExample:
    prompt_ids: list[int]
    completion_ids: dict[str, list[int]]
    extra: dict = field(default_factory=dict)
    where: str = ""
    raw_prompt: Any = None          # the prompt as scorers see it (formats.scorer_prompt)
    prompt_text: str = ""           # the prompt as rendered for the model


@dataclass
class SkipReport:
    too_long: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)
    truncated: int = 0

    def summary(self) -> str:
        parts = []
        if self.too_long:
            parts.append(f"skipped {len(self.too_long)} over-long rows (first: "
                         f"{'; '.join(self.too_long[:3])})")
        if self.identical:
            parts.append(f"skipped {len(self.identical)} rows whose chosen and rejected are "
                         f"identical (first: {'; '.join(self.identical[:3])})")
        if self.truncated:
            parts.append(f"truncated {self.truncated} over-long rows")
        return "; ".join(parts)


def tokenize_example(tokenizer, ex: Example, *, max_length: int, max_prompt_length: int,
                     too_long: str = "skip", chat_template: bool = True,
                     system_prompt: str | None = None, tools: str | None = None
                     ) -> tuple[list[int], dict[str, list[int]], str, str]:
    """One row: (prompt ids, completion ids by name, status, rendered prompt text); status
    is "" (kept as is), "too_long" (to skip), or holds "truncated" and/or "identical" (to
    skip: chosen and rejected are the same tokens). Raises
    DataError naming the row for too_long="error" or a template that cannot render it."""
    try:
        if ex.text is not None:   # language modelling: every token after the first is a label
            return _text_tokens(tokenizer, ex.text, max_length, too_long, ex.where)
        # a row's own `tools` column, else the run's (an environment's functions)
        row_tools = ex.tools if ex.tools is not None else (json.loads(tools) if tools else None)
        prompt_text = render_prompt(tokenizer, ex.prompt, chat_template=chat_template,
                                    system_prompt=system_prompt, plain=ex.plain, tools=row_tools)
        texts = {name: render_completion(tokenizer, prompt_text, ex.prompt, msgs,
                                         chat_template=chat_template,
                                         system_prompt=system_prompt, tools=row_tools)
                 for name, msgs in ex.completions.items()}
    except DataError as exc:
        raise DataError(f"{ex.where}: {exc}") from None
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completions = {name: tokenizer(text, add_special_tokens=False)["input_ids"]
                   for name, text in texts.items()}
    status = ""
    longest = max((len(c) for c in completions.values()), default=0)
    if len(prompt_ids) > max_prompt_length or len(prompt_ids) + longest > max_length:
        if too_long == "error":
            raise DataError(f"{ex.where}: {len(prompt_ids)} prompt + {longest} completion "
                            f"tokens exceed data.max_prompt_length={max_prompt_length} / "
                            f"data.max_length={max_length}")
        if too_long == "skip":
            return prompt_ids, completions, "too_long", prompt_text
        prompt_ids = prompt_ids[-max_prompt_length:]
        budget = max_length - len(prompt_ids)
        completions = {k: v[:budget] for k, v in completions.items()}
        status = "truncated"
    if "chosen" in completions and completions["chosen"] == completions.get("rejected"):
        status = (status + " identical").strip()
    return prompt_ids, completions, status, prompt_text


def _text_tokens(tokenizer, text: str, max_length: int, too_long: str, where: str):
    """A `text` row: the tokenizer's own special tokens (a BOS where it adds one), the first
    token as the context, the rest plus EOS as the completion."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None and ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    status = ""
    if len(ids) > max_length:
        if too_long == "error":
            raise DataError(f"{where}: {len(ids)} tokens of text exceed data.max_length="
                            f"{max_length}")
        if too_long == "skip":
            return ids[:1], {"completion": ids[1:]}, "too_long", ""
        ids, status = ids[:max_length], "truncated"
    return ids[:1], {"completion": ids[1:]}, status, ""


def tokenize_examples(tokenizer, examples: list[Example], *, max_length: int,
                      max_prompt_length: int, too_long: str = "skip", chat_template: bool = True,
                      system_prompt: str | None = None
                      ) -> tuple[list[TokenizedExample], SkipReport]:
    report = SkipReport()
    out: list[TokenizedExample] = []
    for ex in examples:
        prompt_ids, completions, status, text = tokenize_example(
            tokenizer, ex, max_length=max_length, max_prompt_length=max_prompt_length,
            too_long=too_long, chat_template=chat_template, system_prompt=system_prompt)
        if status == "too_long":
            report.too_long.append(ex.where)
            continue
        report.truncated += "truncated" in status
        if "identical" in status:
            report.identical.append(ex.where)
            continue
        out.append(TokenizedExample(prompt_ids, completions, ex.extra, ex.where,
                                    scorer_prompt(ex), text))
    return out, report
