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


def tokenize_examples(tokenizer, examples: list[Example], *, max_length: int,
                      max_prompt_length: int, too_long: str = "skip", chat_template: bool = True,
                      system_prompt: str | None = None
                      ) -> tuple[list[TokenizedExample], SkipReport]:
    report = SkipReport()
    out: list[TokenizedExample] = []
    for ex in examples:
        try:
            prompt_text = render_prompt(tokenizer, ex.prompt, chat_template=chat_template,
                                        system_prompt=system_prompt, plain=ex.plain)
            texts = {name: render_completion(tokenizer, prompt_text, ex.prompt, msgs,
                                             chat_template=chat_template,
                                             system_prompt=system_prompt)
                     for name, msgs in ex.completions.items()}
        except DataError as exc:
            raise DataError(f"{ex.where}: {exc}") from None
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        completions = {name: tokenizer(text, add_special_tokens=False)["input_ids"]
                       for name, text in texts.items()}
        longest = max((len(c) for c in completions.values()), default=0)
        if len(prompt_ids) > max_prompt_length or len(prompt_ids) + longest > max_length:
            if too_long == "error":
                raise DataError(f"{ex.where}: {len(prompt_ids)} prompt + {longest} completion "
                                f"tokens exceed data.max_prompt_length={max_prompt_length} / "
                                f"data.max_length={max_length}")
            if too_long == "skip":
                report.too_long.append(ex.where)
                continue
            prompt_ids = prompt_ids[-max_prompt_length:]
            budget = max_length - len(prompt_ids)
            completions = {k: v[:budget] for k, v in completions.items()}
            report.truncated += 1
        if "chosen" in completions and completions["chosen"] == completions.get("rejected"):
            report.identical.append(ex.where)
            continue
        out.append(TokenizedExample(prompt_ids, completions, ex.extra, ex.where,
                                    scorer_prompt(ex)))
    return out, report
