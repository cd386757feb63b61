"""Per-token and per-sequence log-probabilities of given labels under a model's logits.

Every preference and policy-gradient loss in this package starts from these numbers
(ALGORITHMS.md §0): ``log π(y_t | s_t)`` for the response tokens only, summed (or, for the
IPO/TRL convention, averaged) over the response. Prompt tokens and padding are excluded by
the mask, never by the labels.
"""

import torch


def token_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Log-probability of each label under ``softmax(logits / temperature)``, or, with
    ``top_k`` / ``top_p``, under the distribution a sampler draws from after filtering
    (`sampling_filter`): what the rollout engines report for the tokens they sampled.

    Args:
        logits: (B, T, V) scores; ``logits[:, t]`` predicts ``labels[:, t]`` (the caller has
            already shifted labels by one relative to the model's output).
        labels: (B, T) token ids.
        temperature: divides the logits first, so the log-probs match those of sampling at
            that temperature (generation and training must agree, or PPO ratios are off).
        top_k, top_p: the sampler's filters (0 and 1.0 = off); a label outside the kept set
            gets -inf.

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
    filtered = bool(top_k) or top_p < 1.0

    vocab = logits.shape[-1]
    labels = torch.where((labels >= 0) & (labels < vocab), labels, 0)  # (B, T), gather-safe
    # bf16/fp16 log-softmax loses ~3 digits on 32k+ vocabularies; float64 stays float64.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    rows = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        row = row_logits.to(dtype) / temperature  # (T, V)
        if filtered:
            with torch.no_grad():
                dropped = sampling_filter(row, top_k, top_p)
            row = row.masked_fill(dropped, -torch.inf)
        picked = row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)  # (T,)
        rows.append(picked - torch.logsumexp(row, dim=-1))  # (T,)
    return torch.stack(rows)  # (B, T)


def sampling_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Which logits a top-k / top-p (nucleus) sampler drops (True = dropped), in the order and
    with the tie rules of HF's and vLLM's samplers: top-k first (every logit below the k-th
    largest goes; ties with it stay), then top-p on what is left: going up from the least
    likely token, drop while the cumulative probability stays at or below 1 - top_p (the
    most likely token always stays). `logits` already divided by the temperature.
    """
    dropped = torch.zeros_like(logits, dtype=torch.bool)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        dropped |= logits < kth
    if top_p < 1.0:
        ascending, order = torch.sort(logits.masked_fill(dropped, -torch.inf), dim=-1)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= 1 - top_p
        drop_sorted[..., -1] = False
        dropped |= torch.zeros_like(dropped).scatter(-1, order, drop_sorted)
    return dropped


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
