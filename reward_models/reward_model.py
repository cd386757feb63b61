"""A trained reward model: a Hugging Face sequence classifier with one output, or a causal
LM trained as a likelihood reward model (r = β · log p(completion | prompt)).

Loads folders written by `recipes/reward_model.yaml` (`runs/<name>/final`) or by TRL's
`RewardTrainer` alike: both are `AutoModelForSequenceClassification` checkpoints whose score
is the one logit at the last real token, and both train on the same text:

- chat data: the whole conversation through the tokenizer's chat template
  (`apply_chat_template(prompt + [assistant])`, as our trainer and TRL do);
- plain data (`data.chat_template: false`): prompt + completion + EOS.

The scorer renders a (prompt, completion) exactly so and tokenises it as training did: the
prompt and the completion separately for a folder our trainer wrote (it writes a
`recipe.yaml`), the whole text for others (TRL tokenises the conversation at once). Which
of the two formats a folder was trained with is read from that `recipe.yaml` (a folder of
ours whose tokenizer has no chat template, a base model, was trained on plain text); for
other folders it is the chat template (`chat_template=False` scores plain text; a folder
without a template and without that option is refused rather than guessed).
A prompt is the prompt as written in the data: a string (one user turn) or a list of
{role, content} messages — never a prompt already rendered by the policy's template.

Each sample is tokenised on its own and right-padded with the folder's `pad_token_id`, the
id the model was trained with: the model scores at its last token that is not that id, so
padding with it reproduces training exactly (our trainer pads with a token absent from the
data; TRL pads with the tokenizer's pad, which can be EOS). A folder without one is padded
with an id no row of the batch contains.

A folder our trainer wrote with `reward_model.kind: likelihood` (its recipe.yaml says so) is
a causal LM, scored as β · Σ log p(completion token | everything before it), the prompt and
the completion tokenised separately exactly as training did; with `reference=True`, as
β · Σ (log p − log p_ref) against the model it was trained from (DPO's implicit reward:
text the training did not touch, e.g. prose that answers nothing, scores ~0 instead of
its fluency, and a long answer pays no more than a short one). `reference` defaults to how
the folder was trained (`reward_model.reference` in its recipe.yaml). Any other folder
without a score head is refused.

`judge` (default: the folder's `reward_model.judge`, else 'completion') picks what is
scored: the whole completion, or ('answer') only its final answer written alone, so that
length and wording cannot move the score (`_score_answers`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from reward_models.base import Scorer, ScorerError, ScoreResult, check_batch

DTYPES = ("float32", "bfloat16", "float16")
JUDGES = ("completion", "answer")
NO_ANSWER_SCORE = -10.0


class RewardModelError(ValueError):
    """The folder is not a usable reward model (no score head, no chat template, ...)."""


def likelihood_beta(path) -> float | None:
    """β of a likelihood reward model written by our trainer (its recipe.yaml:
    algorithm reward_model, reward_model.kind likelihood); None for any other folder."""
    recipe = _trained_recipe(path)
    section = recipe.get("reward_model") or {}
    if recipe.get("algorithm") != "reward_model" or not isinstance(section, dict) or \
            section.get("kind") != "likelihood":
        return None
    beta = section.get("beta", 0.1)
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta <= 0:
        raise RewardModelError(f"{path}/recipe.yaml: reward_model.beta must be a number > 0, "
                               f"got {beta!r}")
    return float(beta)


def trained_against_reference(path) -> bool:
    """reward_model.reference of the recipe that trained a likelihood reward model: its
    reward is β · log p/p_ref, and it is scored so unless told otherwise."""
    section = _trained_recipe(path).get("reward_model") or {}
    return isinstance(section, dict) and section.get("reference") is True


def _reference_path(path) -> str:
    """The model a likelihood reward model was trained from (its recipe's model.name, or
    model.reference when set), resolved as the trainer resolved it."""
    model = _trained_recipe(path).get("model") or {}
    name = model.get("reference") or model.get("name")
    if not isinstance(name, str):
        raise RewardModelError(f"{path}/recipe.yaml names no model.name to use as reference")
    try:
        from alignment.models import resolve_model
    except ImportError:        # reward_models used on its own: a folder path
        return name
    return resolve_model(name)


def check_reward_model_folder(path: str) -> dict:
    """The folder's config.json, after checking it describes a one-output sequence
    classifier (or a likelihood reward model's causal LM); raises RewardModelError saying
    what is wrong otherwise."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise RewardModelError(f"{path}: no config.json: not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RewardModelError(f"{config_file}: unreadable ({exc})") from None
    archs = config.get("architectures") or []
    if likelihood_beta(path) is not None:
        if not any(str(a).endswith("ForCausalLM") for a in archs):
            raise RewardModelError(f"{path}: its recipe.yaml says a likelihood reward model, "
                                   f"but the config names {archs or 'no architecture'}, not a "
                                   "*ForCausalLM model")
        return config
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise RewardModelError(
            f"{path}: not a reward model: its config names {archs or 'no architecture'}, not "
            "a *ForSequenceClassification model with a score head (train one with "
            "recipes/reward_model.yaml or TRL's RewardTrainer)")
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 1)
    if labels != 1:
        raise RewardModelError(f"{path}: a reward model has one output, this one has "
                               f"{labels} labels")
    return config


def locate_reward_model(path) -> Path:
    """The model folder of `path`: itself, or `path/final` for a training output dir."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        return path / "final"
    if not path.is_dir():
        raise RewardModelError(f"reward model '{path}': no such folder")
    return path


def trained_judge(path) -> str:
    """reward_model.judge of the recipe that trained the folder ('completion' if unset)."""
    section = _trained_recipe(path).get("reward_model") or {}
    judge = section.get("judge", "completion") if isinstance(section, dict) else "completion"
    if judge not in JUDGES:
        raise RewardModelError(f"{path}/recipe.yaml: reward_model.judge must be one of "
                               f"{', '.join(JUDGES)}, got {judge!r}")
    return judge


def _trained_recipe(path) -> dict:
    """The recipe.yaml our trainer wrote into the folder ({} if none or unreadable)."""
    recipe = Path(path) / "recipe.yaml"
    if not recipe.is_file():
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def trained_with_chat_template(path: str) -> bool | None:
    """data.chat_template of the recipe that trained the folder (None if unknown)."""
    recipe = _trained_recipe(path)
    if not recipe:
        return None
    data = recipe.get("data") or {}
    value = data.get("chat_template", True) if isinstance(data, dict) else None
    return value if isinstance(value, bool) else None


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


class RewardModelScorer(Scorer):
    name = "reward_model"

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024,
                 dtype: str = "float32", chat_template: bool | None = None,
                 device: str = "auto", reference: bool | None = None,
                 judge: str | None = None, no_answer_score: float = NO_ANSWER_SCORE):
        import torch
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        if batch_size <= 0 or max_length <= 0:
            raise ValueError(f"reward_model: batch_size and max_length must be positive, got "
                             f"{batch_size} and {max_length}")
        if dtype not in DTYPES:
            raise ValueError(f"reward_model: dtype '{dtype}' is not one of float32, "
                             "bfloat16, float16")
        path = locate_reward_model(path)
        check_reward_model_folder(path)
        self.path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if chat_template is None:
            chat_template = trained_with_chat_template(path)
            if chat_template is not None and not self.tokenizer.chat_template:
                chat_template = False    # our trainer's plain format for a base model
        if chat_template is None:   # not said, not recorded: chat, the common case
            chat_template = True
        if chat_template and not self.tokenizer.chat_template:
            raise RewardModelError(
                f"{path}: the tokenizer has no chat template, so chat-formatted text cannot "
                "be rebuilt; if the model was trained on plain prompt + completion + EOS "
                "text, pass chat_template=false (CLI: --set chat_template=false)")
        if not chat_template and self.tokenizer.eos_token is None:
            raise RewardModelError(f"{path}: plain-text scoring appends EOS, but the "
                                   "tokenizer has no eos_token")
        self.chat_template = chat_template
        self.device = _default_device() if device == "auto" else device
        self.beta = likelihood_beta(path)    # None: a classifier
        self.separate = bool(_trained_recipe(path))   # our trainer: prompt, completion apart
        model_class = AutoModelForSequenceClassification if self.beta is None else \
            AutoModelForCausalLM
        self.model = model_class.from_pretrained(
            path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.reference = None
        if reference is None:    # as trained
            reference = self.beta is not None and trained_against_reference(path)
        if reference:     # β · (log p − log p_ref): DPO's implicit reward
            if self.beta is None:
                raise RewardModelError(f"{path}: reference applies to likelihood reward "
                                       "models only; this one is a classifier")
            self.reference = AutoModelForCausalLM.from_pretrained(
                _reference_path(path), dtype=getattr(torch, dtype)).to(self.device).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.judge = trained_judge(path) if judge is None else judge
        if self.judge not in JUDGES:
            raise ValueError(f"reward_model: judge '{self.judge}' is not one of "
                             f"{', '.join(JUDGES)}")
        self.no_answer_score = float(no_answer_score)

    @classmethod
    def check_options(cls, options: dict) -> list[str]:
        """Recipe-time check (`alignment check`, no model loaded): the folder is there and
        holds a one-output sequence classifier; sizes and dtype are allowed values."""
        problems = []
        for key in ("batch_size", "max_length"):
            if options.get(key, 1) <= 0:
                problems.append(f"{key}: must be positive (got {options[key]!r})")
        score = options.get("no_answer_score", NO_ANSWER_SCORE)
        if not isinstance(score, (int, float)) or isinstance(score, bool) or \
                not math.isfinite(score):
            problems.append(f"no_answer_score: must be a finite number (got {score!r})")
        if options.get("judge", "completion") not in JUDGES:
            problems.append(f"judge: must be one of {', '.join(JUDGES)} (got "
                            f"{options['judge']!r})")
        if options.get("dtype", "float32") not in DTYPES:
            problems.append(f"dtype: must be one of {', '.join(DTYPES)} (got "
                            f"{options['dtype']!r})")
        if not isinstance(options.get("path"), (str, os.PathLike)):
            return problems     # a missing or non-string path is reported by the caller
        try:
            folder = locate_reward_model(options["path"])
            check_reward_model_folder(folder)
        except RewardModelError as exc:
            problems.append(f"path: {exc}")
            return problems
        if options.get("reference") and likelihood_beta(folder) is None:
            problems.append(f"reference: applies to likelihood reward models only; "
                            f"{folder} is a classifier")
        return problems

    # ------------------------------------------------------------------ rendering
    def render(self, prompt, completion: str) -> str:
        """The text the reward model was trained on for this (prompt, completion)."""
        return "".join(self.render_parts(prompt, completion))

    def render_parts(self, prompt, completion: str) -> tuple[str, str]:
        """(prompt text, completion text): the prompt as rendered for generation and what
        the chat template appends after it (training tokenises the two separately)."""
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
            messages = list(prompt)
        else:
            raise TypeError(f"a prompt is a string or a list of messages, got "
                            f"{type(prompt).__name__}")
        if not isinstance(completion, str):
            raise TypeError(f"a completion is a string, got {type(completion).__name__}")
        if not self.chat_template:
            return "".join(m["content"] for m in messages), completion + self.tokenizer.eos_token
        head = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": completion}], tokenize=False)
        if not full.startswith(head):
            raise ValueError("the chat template does not render the prompt as a prefix of "
                             "the conversation")
        return head, full[len(head):]

    def _tokenize(self, prompt, completion: str) -> tuple[list[int], int]:
        """(token ids, where the completion starts), tokenised as training did: the two parts
        separately for our trainer's folders, the whole text for others. The two can differ at
        the seam (Llama 3's "\\n\\n" after the assistant header is one token alone, two
        before the answer's first digit)."""
        head, tail = self.render_parts(prompt, completion)
        if not self.separate:
            return self.tokenizer(head + tail, add_special_tokens=False)["input_ids"], 0
        prompt_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        tail_ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"]
        if self.beta is not None and (not prompt_ids or not tail_ids):
            raise ValueError("a likelihood reward model needs a non-empty prompt and completion")
        return prompt_ids + tail_ids, len(prompt_ids)

    # ------------------------------------------------------------------ scoring
    def score(self, prompts, completions, rows=None) -> ScoreResult:
        check_batch(self.name, prompts, completions, rows)
        if self.judge == "answer":
            return self._score_answers(prompts, completions)
        return self._score_completions(prompts, completions)

    def _score_answers(self, prompts, completions) -> ScoreResult:
        """judge 'answer': each completion is scored as its final answer written alone (the
        number the verifier reads: after `####`, after "answer is", else the last one), so
        neither its length nor its wording moves the score, only what it concludes. Each
        distinct (prompt, answer) is scored once. A completion with no answer gets
        `no_answer_score`, and no answer scores below it: abstaining never pays."""
        from reward_models.exact_answer import extract_answer

        rewards = [self.no_answer_score] * len(prompts)
        errors: list[str | None] = [None] * len(prompts)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            if not isinstance(c, str):
                errors[i] = f"{self.name}: sample {i}: a completion is a string, got " \
                            f"{type(c).__name__}"
                if self.on_error == "raise":
                    raise ScorerError(errors[i])
                rewards[i] = 0.0
            elif (answer := extract_answer(c)) is not None:
                groups.setdefault((repr(p), answer), []).append(i)
        samples = [members[0] for members in groups.values()]
        answers = [answer for _, answer in groups]
        scored = self._score_completions([prompts[i] for i in samples], answers)
        for k, members in enumerate(groups.values()):
            error = scored.errors[k]
            for i in members:
                rewards[i] = 0.0 if error else max(scored.rewards[k], self.no_answer_score)
                errors[i] = error and error.replace(f"sample {k}:", f"sample {i}:", 1)
        return ScoreResult(rewards, {self.name: list(rewards)}, errors)

    def _score_completions(self, prompts, completions) -> ScoreResult:
        ids: list[list[int] | None] = []
        starts: list[int] = []
        errors: list[str | None] = []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            try:
                row_ids, start = self._tokenize(p, c)
                if len(row_ids) > self.max_length:
                    raise ValueError(f"{len(row_ids)} tokens, over max_length="
                                     f"{self.max_length} (its score would not read the end)")
                if not row_ids:
                    raise ValueError("renders to no tokens")
                ids.append(row_ids)
                starts.append(start)
                errors.append(None)
            except (TypeError, ValueError, KeyError) as exc:
                message = f"{self.name}: sample {i}: {exc}"
                if self.on_error == "raise":
                    raise ScorerError(message) from exc
                ids.append(None)
                starts.append(0)
                errors.append(message)
        rewards = [0.0] * len(ids)
        good = [i for i, row in enumerate(ids) if row is not None]
        good.sort(key=lambda i: len(ids[i]))      # similar lengths together: less padding
        for start in range(0, len(good), self.batch_size):
            chunk = good[start:start + self.batch_size]
            rows = [ids[i] for i in chunk]
            values = self.score_ids(rows) if self.beta is None else \
                self.likelihood_ids(rows, [starts[i] for i in chunk])
            for i, value in zip(chunk, values, strict=True):
                rewards[i] = value
        return ScoreResult(rewards, {self.name: list(rewards)}, errors)

    def score_ids(self, rows: list[list[int]]) -> list[float]:
        """Scores of already-tokenised rows (one forward pass, right-padded)."""
        import torch

        pad = self.model.config.pad_token_id
        if pad is None:     # pool on the last real token: pad with an id no row contains
            used = {t for row in rows for t in row}
            pad = next(t for t in range(self.model.config.vocab_size - 1, -1, -1)
                       if t not in used)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for k, row in enumerate(rows):
            input_ids[k, :len(row)] = torch.tensor(row)
            attention[k, :len(row)] = 1
        saved, self.model.config.pad_token_id = self.model.config.pad_token_id, pad
        try:
            with torch.no_grad():
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=attention.to(self.device)).logits
        finally:
            self.model.config.pad_token_id = saved
        return logits[:, 0].float().tolist()

    def likelihood_ids(self, rows: list[list[int]], starts: list[int]) -> list[float]:
        """β · Σ log p(token | the tokens before it) over each row's tokens from `starts`
        (the completion's first), one forward pass, right-padded; with a reference,
        β · (that − the same sum under the reference)."""
        scores = self._sum_logps(self.model, rows, starts)
        if self.reference is not None:
            scores = scores - self._sum_logps(self.reference, rows, starts)
        return (self.beta * scores).tolist()

    def _sum_logps(self, model, rows: list[list[int]], starts: list[int]):
        import torch

        width = max(len(r) for r in rows)
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        scored = torch.zeros((len(rows), width - 1), dtype=torch.bool)  # predicts token t+1
        for k, (row, start) in enumerate(zip(rows, starts, strict=True)):
            input_ids[k, :len(row)] = torch.tensor(row)
            scored[k, start - 1:len(row) - 1] = True
        attention = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None])
        first = min(starts) - 1            # logits only where some completion is predicted
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(self.device),
                                attention_mask=attention.long().to(self.device),
                                logits_to_keep=width - first).logits
        logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token = logps.gather(-1, input_ids[:, first + 1:, None].to(self.device))[..., 0]
        return (token * scored[:, first:].to(self.device)).sum(1)
