"""Per-token and per-sequence log-probabilities of given labels under a model's logits.

Every preference and policy-gradient loss in this package starts from these numbers
(ALGORITHMS.md §0): ``log π(y_t | s_t)`` for the response tokens only, summed (or, for the
IPO/TRL convention, averaged) over the response. Prompt tokens and padding are excluded by
the mask, never by the labels.
"""

import torch


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probability of each label under ``softmax(logits / temperature)``.

    Args:
        logits: (B, T, V) scores; ``logits[:, t]`` predicts ``labels[:, t]`` (the caller has
            already shifted labels by one relative to the model's output).
        labels: (B, T) token ids.
        temperature: divides the logits first, so the log-probs match those of sampling at
            that temperature (generation and training must agree, or PPO ratios are off).

    Returns:
        (B, T) log-probs, float32 (float64 if the logits are float64).

    Labels outside ``[0, V)`` (e.g. the ignore index -100 at prompt or padding positions) are
    replaced by 0 before the gather so indexing never goes out of range; the values at those
    positions are meaningless and the caller must mask them out.

    The float32 upcast is done one sequence at a time, so peak extra memory is one (T, V)
    float32 copy rather than a (B, T, V) one; ``gather - logsumexp`` avoids materialising a
    full log-softmax.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must be (B, T) = {tuple(logits.shape[:2])}, got {tuple(labels.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    vocab = logits.shape[-1]
    labels = torch.where((labels >= 0) & (labels < vocab), labels, 0)  # (B, T), gather-safe
    # bf16/fp16 log-softmax loses ~3 digits on 32k+ vocabularies; float64 stays float64.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    rows = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        row = row_logits.to(dtype) / temperature  # (T, V)
        picked = row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)  # (T,)
        rows.append(picked - torch.logsumexp(row, dim=-1))  # (T,)
    return torch.stack(rows)  # (B, T)


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    average: bool = False,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sequence log-probability ``ℓ(y|x) = Σ_t mask_t · log π(y_t | s_t)`` (ALGORITHMS.md §0).

    Args:
        logits: (B, T, V), aligned with ``labels`` as in :func:`token_logps`.
        labels: (B, T); values at masked positions may be anything (pad id, -100, ...).
        mask: (B, T) bool or 0/1, true on response tokens only.
        average: if True return the per-token mean ``ℓ / |y|`` (the IPO/TRL length
            normalisation, ALGORITHMS.md §3.2) instead of the sum used by DPO and SPIN.
            A row with no response tokens gives 0.
        temperature: see :func:`token_logps`.

    Returns:
        (B,) sequence log-probs, float32 (float64 for float64 logits).
    """
    if mask.shape != labels.shape:
        raise ValueError(
            f"mask must have the shape of labels {tuple(labels.shape)}, got {tuple(mask.shape)}"
        )
    mask = mask.bool()  # (B, T)
    # Masked labels are arbitrary; force them in range before the gather.
    labels = labels.masked_fill(~mask, 0)  # (B, T)
    per_token = token_logps(logits, labels, temperature)  # (B, T)
    # where (not multiply) so a non-finite value at a masked position cannot leak into the sum.
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))  # (B, T)
    total = per_token.sum(-1)  # (B,)
    if average:
        return total / mask.sum(-1).clamp(min=1)  # (B,)
    return total
