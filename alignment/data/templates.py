"""Rendering a conversation to text through the tokenizer's chat template.

A prompt is rendered with `add_generation_prompt=True`; a completion is what the template
appends after that prompt when the whole conversation is rendered, so it ends with the
template's end-of-turn token and whatever the template writes after it (ChatML's newline,
Phi-3's EOS). Generation stops only at the model's EOS ids (`alignment.models.stop_token_ids`:
the tokenizer's and those generation_config.json lists), so a completion must contain one
for the model to learn where to stop: where the template's turn ends with none of them, the
tokenizer's EOS is appended.

System messages (the data's, or `data.system_prompt`) on a template that refuses them
(Gemma 2 and Mistral v0.1 raise "System role not supported"): the system text is folded
into the first user turn, `system + "\\n\\n" + user` (`fold_system`), which is what Gemma
3's own template does; said once.

The plain format, for `data.chat_template: false` and for a tokenizer without a chat
template (a base model; said once at start-up): the prompt's text verbatim, the
completion's text plus the tokenizer's EOS, nothing between them (a data set writes its
own separator, e.g. a prompt ending in "Answer:" or a newline). With `chat_template: false`
the data must be plain strings; on a base model a conversation of one user turn (prompt)
and one assistant turn (completion) is read as its text, while system messages, several
turns and `data.system_prompt` need a chat template and raise a DataError saying so.
"""

from __future__ import annotations

import os
import sys

from alignment.data.formats import Messages
from alignment.data.io import DataError

_SAID: set[tuple[str, str]] = set()


def render_prompt(tokenizer, prompt: Messages, *, chat_template: bool = True,
                  system_prompt: str | None = None, plain: bool = False,
                  tools: list | None = None) -> str:
    if not chat_template:
        if not plain:
            raise DataError("data.chat_template is false but the data is conversational")
        return prompt[0]["content"]
    if not tokenizer.chat_template:
        return _base_model_text(tokenizer, prompt, "prompt", system_prompt)
    return _render(tokenizer, _with_system(prompt, system_prompt), True, tools)


def render_completion(tokenizer, prompt_text: str, prompt: Messages, completion: Messages, *,
                      chat_template: bool = True, system_prompt: str | None = None,
                      tools: list | None = None) -> str:
    if not chat_template:
        return completion[-1]["content"] + (tokenizer.eos_token or "")
    if not tokenizer.chat_template:
        text = _base_model_text(tokenizer, completion, "completion", None)
        if tokenizer.eos_token is None:
            raise DataError(f"{_name(tokenizer)} has neither a chat template nor an EOS "
                            "token: a completion cannot be ended")
        return text + tokenizer.eos_token
    full = _render(tokenizer, _with_system(prompt, system_prompt) + completion, False, tools)
    if not full.startswith(prompt_text):
        raise DataError("the chat template does not render the prompt as a prefix of the "
                        "whole conversation; cannot separate the completion tokens")
    text = full[len(prompt_text):]
    if tokenizer.eos_token and not _holds_stop_token(tokenizer, text):
        text += tokenizer.eos_token   # generation stops only at an EOS: teach the model one
    return text


def fold_system(messages: Messages) -> Messages:
    """A leading system message folded into the first user turn (`system\\n\\nuser`), for
    templates without a system role."""
    if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return messages
    user = {**messages[1], "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
    return [user, *messages[2:]]


def refuses_system(tokenizer) -> bool:
    """Whether the tokenizer's chat template raises on a system message."""
    from jinja2.exceptions import TemplateError

    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"},
                                       {"role": "user", "content": "u"}], tokenize=False)
    except TemplateError:
        return True
    return False


def _with_system(prompt: Messages, system_prompt: str | None) -> Messages:
    if system_prompt and prompt[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *prompt]
    return list(prompt)


def _render(tokenizer, messages: Messages, generation_prompt: bool, tools) -> str:
    from jinja2.exceptions import TemplateError

    kwargs = {"tokenize": False, "add_generation_prompt": generation_prompt}
    if tools:
        kwargs["tools"] = tools
    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except TemplateError as exc:
        folded = fold_system(messages)
        if folded is messages:
            raise DataError(f"the chat template of {_name(tokenizer)} refuses this "
                            f"conversation: {exc}") from None
        _say_once(tokenizer, "fold", f"the chat template of {_name(tokenizer)} has no "
                  "system role: system messages (and data.system_prompt) are put at the "
                  "head of the first user turn, followed by a blank line")
        try:
            return tokenizer.apply_chat_template(folded, **kwargs)
        except TemplateError as again:
            raise DataError(f"the chat template of {_name(tokenizer)} refuses this "
                            f"conversation: {again}") from None


def _base_model_text(tokenizer, messages: Messages, what: str, system_prompt: str | None
                     ) -> str:
    """The text of a one-turn prompt (user) or completion (assistant) for a tokenizer
    without a chat template."""
    announce_plain_format(tokenizer)
    role = "user" if what == "prompt" else "assistant"
    if system_prompt or len(messages) != 1 or messages[0]["role"] != role:
        problem = ("data.system_prompt" if system_prompt else
                   f"a {what} of {len(messages)} turn(s) "
                   f"({', '.join(m['role'] for m in messages)})")
        raise DataError(f"{_name(tokenizer)} has no chat template, so {problem} cannot be "
                        f"rendered: use plain-string {what}s (or one {role} turn), or give "
                        "the tokenizer a chat template (chat_template.jinja in its folder)")
    return messages[0]["content"]


def announce_plain_format(tokenizer) -> None:
    """Say (once per model and process) that a tokenizer without a chat template gets the
    plain prompt format; `load_tokenizer` calls it at start-up."""
    _say_once(tokenizer, "plain", f"{_name(tokenizer)} has no chat template: plain prompt "
              "format, as with data.chat_template=false (the prompt's text, then the "
              "completion's text and EOS)")


def _holds_stop_token(tokenizer, text: str) -> bool:
    from alignment.models import stop_token_ids

    tokens = tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer))
    return any(t and t in text for t in tokens)


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or "the model"


def _say_once(tokenizer, what: str, text: str) -> None:
    """Print `text` once per model and kind of notice, on the main process only."""
    key = (_name(tokenizer), what)
    if key in _SAID:
        return
    _SAID.add(key)
    if os.environ.get("RANK", "0") == "0":
        print(f"alignment: {text}", file=sys.stderr, flush=True)
