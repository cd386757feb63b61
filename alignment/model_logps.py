"""Log-probs of given tokens under a causal LM, read from its last hidden states.

Every log-prob path (policy, reference, SFT, the engine-parity probe) runs the model with
`logits_to_keep=1` (the LM head on one position per row) and `output_hidden_states=True`,
picks the hidden states of the positions that predict scored tokens, and hands them with
the head's weight to `fused_token_logps`, which never holds the (positions, V) logits
(losses/logps.py). Padding and prompt positions never reach the LM head at all.

The head is read as `scale·softcap(h·Wᵀ + b)`: a plain linear layer plus the final-logit
transforms the model families here use (Gemma 2's soft-capping, Cohere's `logit_scale`,
Granite's `logits_scaling`). The first forward of every model checks that reading against
the logits the model itself computed for the kept position and stops with a clear error if
they differ, so a family with another head cannot be scored wrongly in silence. A head that
is not a plain `nn.Linear` (a LoRA-wrapped head, a ZeRO-3 partitioned weight) is called as a
module on the picked positions instead: correct, only without the memory saving.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.errors import TrainingError
from alignment.losses import fused_token_entropy, fused_token_logps, token_logps
from alignment.losses.logps import logits_entropy


@dataclass
class HeadParts:
    module: torch.nn.Module
    weight: torch.Tensor | None   # None: call `module` (not a plain linear layer)
    bias: torch.Tensor | None
    softcap: float | None
    scale: float


def causal_lm(model) -> torch.nn.Module:
    """The language model inside the wrappers training puts around it (DDP / DeepSpeed's
    `.module`, the actor-critic's `.policy`; PEFT models answer for their base)."""
    model = getattr(model, "module", model)
    return model.policy if hasattr(model, "policy") and hasattr(model, "critic") else model


def lm_head_parts(model) -> HeadParts:
    lm = causal_lm(model)
    head = lm.get_output_embeddings()
    config = lm.config
    weight = getattr(head, "weight", None)
    plain = (type(head) is torch.nn.Linear and weight is not None and weight.dim() == 2
             and weight.numel() > 0    # a ZeRO-3 partition is an empty placeholder
             and not head._forward_hooks and not head._forward_pre_hooks)   # hooks run
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    if getattr(config, "logits_scaling", None):
        scale /= float(config.logits_scaling)
    return HeadParts(module=head, weight=weight if plain else None,
                     bias=head.bias if plain else None,
                     softcap=getattr(config, "final_logit_softcapping", None) or None,
                     scale=scale)


def forward_hidden(model, **inputs) -> tuple[object, torch.Tensor]:
    """Run `model` on `inputs` with the LM head on the last position only; return its output
    and the final hidden states (rows, width, H) after the last norm."""
    out = model(**inputs, logits_to_keep=1, output_hidden_states=True, use_cache=False)
    hidden = out["hidden_states"][-1]
    lm = causal_lm(model)
    if not getattr(lm, "_alignment_head_checked", False):
        lm._alignment_head_checked = _check_head(model, out["logits"][:, -1], hidden[:, -1])
    return out, hidden


def labels_logps(model, hidden: torch.Tensor, labels: torch.Tensor,
                 mask: torch.Tensor | None = None, *, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """log π(labels[...] | the state whose hidden vector is hidden[...]), the shape of
    `labels`; only positions where `mask` is true are computed (0 elsewhere).

    hidden: (..., H); labels and mask: (...). Float32 (float64 for a float64 model)."""
    parts = lm_head_parts(model)
    if mask is None:
        mask = torch.ones_like(labels, dtype=torch.bool)
    mask = mask.bool()
    picked = hidden[mask]                                     # (N, H)
    tokens = labels[mask]                                     # (N,)
    if parts.weight is not None:
        values = fused_token_logps(picked.to(parts.weight.dtype), parts.weight, tokens,
                                   bias=parts.bias, temperature=temperature,
                                   softcap=parts.softcap, scale=parts.scale,
                                   top_k=top_k, top_p=top_p)
    else:
        logits = _transform(parts.module(picked).float() if picked.dtype != torch.float64
                            else parts.module(picked), parts)
        values = token_logps(logits[None], tokens[None], temperature, top_k, top_p)[0]
    out = torch.zeros(labels.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values)


@torch.no_grad()
def labels_entropy(model, hidden: torch.Tensor, mask: torch.Tensor, *,
                   temperature: float = 1.0) -> torch.Tensor:
    """Entropy of π(· | the state whose hidden vector is hidden[...]), the shape of `mask`
    (hidden: (..., H)); only positions where `mask` is true are computed (0 elsewhere)."""
    parts = lm_head_parts(model)
    mask = mask.bool()
    picked = hidden[mask]                                     # (N, H)
    if parts.weight is not None:
        values = fused_token_entropy(picked.to(parts.weight.dtype), parts.weight,
                                     bias=parts.bias, temperature=temperature,
                                     softcap=parts.softcap, scale=parts.scale)
    else:
        logits = _transform(parts.module(picked).float() if picked.dtype != torch.float64
                            else parts.module(picked), parts)
        values = logits_entropy(logits / temperature)
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values)

def _transform(logits: torch.Tensor, parts: HeadParts) -> torch.Tensor:
    if parts.scale != 1.0:
        logits = logits * parts.scale
    if parts.softcap:
        logits = torch.tanh(logits / parts.softcap) * parts.softcap
    return logits


def _check_head(model, logits: torch.Tensor, hidden: torch.Tensor) -> bool:
    """The model's own logits at one position per row vs our reading of its head: True
    when they agree, False when there is nothing to compare (non-finite values: the
    trainer's own non-finite checks report those), an error when they differ."""
    with torch.no_grad():
        parts = lm_head_parts(model)
        ours = parts.module(hidden) if parts.weight is None else \
            torch.nn.functional.linear(hidden.to(parts.weight.dtype), parts.weight, parts.bias)
        ours = _transform(ours.double(), parts)
        theirs = logits.double()
        dtypes = {logits.dtype, hidden.dtype, parts.module.weight.dtype}
        full = dtypes <= {torch.float32, torch.float64}   # else bf16/fp16 rounding
        tolerance = (1e-4 if full else 5e-2) * (1.0 + theirs.abs().max().item())
        gap = (ours - theirs).abs().max().item()
    if not (torch.isfinite(theirs).all() and torch.isfinite(ours).all()):
        return False
    if not gap <= tolerance:
        name = type(causal_lm(model)).__name__
        raise TrainingError(
            f"{name}: its logits are not its LM head applied to its last hidden state "
            f"(max difference {gap:.3g} > {tolerance:.3g}); this model family's output "
            "head is not supported for log-probs yet")
    return True
