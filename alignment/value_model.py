"""The critic (value model) of the actor-critic trainers, and the one module that holds it
with the policy.

A critic is a Hugging Face sequence-classification model with one output: the same kind of
folder the reward-model trainer writes and TRL's `RewardTrainer` saves, so it can start
from a trained reward model (InstructGPT / N+ do) or from the policy's weights with a fresh
scalar head. A reward model scores only the last token; a critic needs V(s_t) at every
position, so `token_values` runs the backbone and applies the head to every hidden state.

`ActorCritic` makes policy and critic ONE trainable module, so that Accelerate / DeepSpeed
wrap, synchronise and checkpoint them together, and one optimizer (two parameter groups)
steps them. Its forward returns both the policy's logits and the critic's values, so a
data-parallel wrapper sees every parameter used in each forward.
"""

from __future__ import annotations

import torch

from alignment.models import honour_sliding_window, resolve_model


class CriticError(ValueError):
    """The critic cannot be built from what the recipe names."""


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout off everywhere: with it the policy that sampled and the policy being updated
    differ even before the first step (ratio != 1, ALGORITHMS.md §1.5)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop",
                "attn_pdrop", "classifier_dropout"):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)
    return model


def load_critic(init: str, policy_path: str, dtype: torch.dtype, *, path: str | None = None,
                pad_token_id: int | None = None):
    """A one-output sequence classifier: from `path` (init "reward_model") or from the
    policy's weights with a fresh head (init "policy"). The fresh head starts at zero:
    V = 0 everywhere, so the first advantages are the Monte-Carlo returns (whitened over
    the step) instead of the noise of a random head (N+ draws it with std 1/sqrt(d+1);
    on the bundled model's hidden states that gave values of ±1-3 and explained variance
    near -28 at the first step, measured)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = resolve_model(path) if init == "reward_model" else policy_path
    if init == "reward_model":
        config = AutoConfig.from_pretrained(source)
        kinds = [a for a in (config.architectures or []) if a.endswith("ForSequenceClassification")]
        if not kinds:
            raise CriticError(f"critic.path {path}: not a sequence-classification model (its "
                              f"architectures are {config.architectures}); train one with "
                              "algorithm: reward_model and reward_model.kind: classifier (a "
                              "likelihood reward model has no value head to start from), or "
                              "use critic.init: policy")
        if config.num_labels != 1:
            raise CriticError(f"critic.path {path}: a value model has one output, this one has "
                              f"{config.num_labels} labels")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # (the fresh head's "newly initialised" report)
    try:
        critic = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1,
                                                                    dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    critic.config.use_cache = False
    honour_sliding_window(critic)     # values are read under the packed layouts' 4-D masks
    if critic.config.pad_token_id is None:
        critic.config.pad_token_id = pad_token_id
    head = value_head(critic)
    if init == "policy":
        with torch.no_grad(), _whole(list(head.parameters())):
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    return disable_dropout(critic)


def _whole(params: list[torch.nn.Parameter]):
    """A context in which `params` are whole and writable: under ZeRO-3 they load
    partitioned (empty on every process) and DeepSpeed gathers them, then re-partitions
    what rank 0 wrote; otherwise nothing to do."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    import contextlib

    return contextlib.nullcontext()


def _inner(critic):
    """The transformers model under a PEFT wrapper (LoRA layers stay in place)."""
    return critic.get_base_model() if hasattr(critic, "get_base_model") else critic


def value_head(critic) -> torch.nn.Module:
    inner = _inner(critic)
    for name in ("score", "classifier"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise CriticError(f"{type(inner).__name__}: no 'score' or 'classifier' head to read values "
                      "from")


def critic_backbone(critic) -> torch.nn.Module:
    """The transformer under the value head (what `token_values` runs)."""
    inner = _inner(critic)
    return getattr(inner, inner.base_model_prefix)


def token_values(critic, *, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor, keep: int) -> torch.Tensor:
    """(rows, keep) float32 V(s) at the last `keep` positions (the state after each token)."""
    backbone = critic_backbone(critic)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids, use_cache=False).last_hidden_state
    head = value_head(critic)   # (a PEFT ModulesToSaveWrapper under critic LoRA: callable)
    weight = next(head.parameters())
    return head(hidden[:, -keep:].to(weight.dtype)).squeeze(-1).float()


class ActorCritic(torch.nn.Module):
    """Policy + critic as one module (one engine, one optimizer, one checkpoint)."""

    def __init__(self, policy: torch.nn.Module, critic: torch.nn.Module):
        super().__init__()
        self.policy = policy
        self.critic = critic

    def forward(self, *, input_ids, attention_mask, position_ids, logits_to_keep: int,
                use_cache: bool = False, output_hidden_states: bool = False,
                values_to_keep: int | None = None) -> dict[str, torch.Tensor]:
        """The policy's logits at the last `logits_to_keep` positions (and its hidden states
        if asked), the critic's values at the last `values_to_keep` (default: as many)."""
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, logits_to_keep=logits_to_keep,
                          output_hidden_states=output_hidden_states, use_cache=False)
        values = token_values(self.critic, input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, keep=values_to_keep or logits_to_keep)
        return {"logits": out.logits, "values": values, "hidden_states": out.hidden_states}


def split_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of one submodule (`policy.` / `critic.`) of a gathered state dict."""
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
