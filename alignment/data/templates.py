"""Rendering a conversation to text through the tokenizer's chat template.

A prompt is rendered with `add_generation_prompt=True`; a completion is what the template
appends after that prompt when the whole conversation is rendered (so it ends with the
template's end-of-turn token). With `chat_template: false` the prompt's text is used
verbatim and the completion is its text plus the tokenizer's EOS.
"""

from __future__ import annotations

from alignment.data.formats import Messages
from alignment.data.io import DataError


def render_prompt(tokenizer, prompt: Messages, *, chat_template: bool = True,
                  system_prompt: str | None = None, plain: bool = False) -> str:
    if not chat_template:
        if not plain:
            raise DataError("data.chat_template is false but the data is conversational")
        return prompt[0]["content"]
    if system_prompt and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_completion(tokenizer, prompt_text: str, prompt: Messages, completion: Messages, *,
                      chat_template: bool = True, system_prompt: str | None = None) -> str:
    if not chat_template:
        return completion[-1]["content"] + (tokenizer.eos_token or "")
    if system_prompt and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    if not full.startswith(prompt_text):
        raise DataError("the chat template does not render the prompt as a prefix of the "
                        "whole conversation; cannot separate the completion tokens")
    return full[len(prompt_text):]
