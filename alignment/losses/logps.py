"""Per-token and per-sequence log-probabilities of given labels under a model's logits.

Every preference and policy-gradient loss in this package starts from these numbers
(ALGORITHMS.md §0): ``log π(y_t | s_t)`` for the response tokens only, summed (or, for the
IPO/TRL convention, averaged) over the response. Prompt tokens and padding are excluded by
the mask, never by the labels.
"""

import os
import warnings

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


# ---------------------------------------------------------------------------------------
# The same log-probs from the last hidden states, without the (N, V) logits tensor.
# ---------------------------------------------------------------------------------------

CHUNK_ELEMENTS = 1 << 23   # logits held at once (8M: 32 MB in fp32), forward and backward


def fused_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    scale: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """``token_logps(lm_head(hidden), labels)`` without ever holding the (N, V) logits.

    The LM head is applied to a chunk of positions at a time and each chunk's log-softmax is
    reduced at once to the label's log-prob and the row's logsumexp; the backward pass
    recomputes each chunk's logits (a chunk of the vocabulary at a time) instead of keeping
    them. This is the "cut cross-entropy" idea (Wijmans et al., 2024, "Cut Your Losses in
    Large-Vocabulary Language Models", §3: the loss from the classifier input, logits never
    in memory; also Liger-Kernel's fused linear cross-entropy, Hsu et al., 2024, §3.2)
    applied to per-token log-probs, the quantity every loss here starts from (ALGORITHMS.md
    §0). At 2,048 positions and a 151,936-token vocabulary the tensor not kept is 1.2 GB in
    fp32 (plus its bf16 original and the gradient of the same size).

    Args:
        hidden: (N, H) final hidden states (after the model's last norm) at the positions
            that predict ``labels``.
        weight: (V, H) the LM head's weight; ``bias`` its (V,) bias if it has one.
        labels: (N,) token ids; values outside ``[0, V)`` give meaningless values there
            (the caller masks them), as in :func:`token_logps`.
        temperature, top_k, top_p: as in :func:`token_logps`. With top-k / top-p the result
            has no gradient (it is what the sampler reported, used detached).
        softcap: Gemma 2's final logit soft-capping ``c·tanh(z/c)`` (None: none).
        scale: a constant multiplying the head's output (Cohere's ``logit_scale``,
            Granite's ``1/logits_scaling``).
        chunk_elements: logits held at once; a chunk covers ``chunk_elements // V``
            positions (forward) or ``chunk_elements // N`` vocabulary rows (backward).

    Returns:
        (N,) log-probs in float32 (float64 for float64 inputs); the matmuls run in the
        inputs' dtype, the softmax in float32 or wider, exactly as ``token_logps`` on the
        head's logits.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, H) and weight (V, H), got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if labels.shape != hidden.shape[:1]:
        raise ValueError(f"labels must be (N,) = ({hidden.shape[0]},), got {tuple(labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    head = _Head(weight, bias, temperature, softcap, scale)
    labels = torch.where((labels >= 0) & (labels < weight.shape[0]), labels, 0)
    if bool(top_k) or top_p < 1.0:
        with torch.no_grad():
            return _filtered_logps(head, hidden, labels, top_k, top_p, chunk_elements)
    return _FusedLogps.apply(hidden, weight, bias, labels, head, chunk_elements)


class _Head:
    """The head's logits as `token_logps` sees them: z = f(h·Wᵀ + b) / temperature, f the
    scale and soft-cap, in float32 (float64 stays)."""

    def __init__(self, weight, bias, temperature, softcap, scale):
        self.weight, self.bias = weight, bias
        self.temperature, self.softcap, self.scale = float(temperature), softcap, float(scale)
        self.dtype = torch.promote_types(weight.dtype, torch.float32)

    def raw(self, hidden: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """(n, v) head outputs of `hidden` against the vocabulary rows `rows`, in the
        weight's dtype (the matmul the model itself would do)."""
        raw = hidden @ self.weight[rows].T
        return raw if self.bias is None else raw + self.bias[rows]

    def logits(self, hidden: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        return _transform(self.raw(hidden, rows), self.scale, self.softcap, self.temperature)

    @property
    def transforms(self) -> tuple:
        return self.scale, self.softcap, self.temperature


def _transform(raw, scale, softcap, temperature):
    z = raw.to(torch.promote_types(raw.dtype, torch.float32))
    if scale != 1.0:
        z = z * scale
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z / temperature if temperature != 1.0 else z


def _forward_chunk(raw, labels, scale, softcap, temperature):
    """(log p of each label, logsumexp) of a chunk of positions against the whole vocabulary."""
    z = _transform(raw, scale, softcap, temperature)
    lse = torch.logsumexp(z, dim=-1)
    return z.gather(-1, labels[:, None]).squeeze(-1) - lse, lse


def _backward_chunk(raw, lse, upstream, local_labels, scale, softcap, temperature):
    """d loss / d raw for a chunk of the vocabulary: g·([j = label] − p_j) through the
    temperature, soft-cap and scale (d/dx c·tanh(x/c) = 1 − tanh², tanh = z·T / c); a label
    outside the chunk has local index −1. In the raw outputs' dtype, for the matmuls."""
    z = _transform(raw, scale, softcap, temperature)
    columns = torch.arange(z.shape[1], device=z.device)
    onehot = (local_labels[:, None] == columns).to(z.dtype)
    grad = upstream[:, None] * (onehot - torch.exp(z - lse[:, None]))
    if temperature != 1.0:
        grad = grad / temperature
    if softcap:
        grad = grad * (1 - (z * (temperature / softcap)) ** 2)
    if scale != 1.0:
        grad = grad * scale
    return grad.to(raw.dtype)


# The element-wise work around the head's matmuls (upcast, log-softmax, its gradient) is
# several passes over each (chunk, V) block in eager mode; compiled it is one, which on a
# 2-core CPU halves the head's time at 2k tokens (bench/RESULTS.md "Fused log-probs").
# Compiling costs seconds once per process, so it is used only where a call's logits are
# large; float64 (the tests' exactness checks) always runs eagerly.
COMPILE_MIN_ELEMENTS = 1 << 26   # 64M logits: ~1,400 positions at 49k, ~440 at 152k
_compiled: dict = {}


def _kernels(elements: int, dtype: torch.dtype):
    if (dtype == torch.float64 or elements < COMPILE_MIN_ELEMENTS
            or os.environ.get("ALIGNMENT_COMPILE_HEAD", "1") == "0"
            or _compiled.get("failed")):
        return _forward_chunk, _backward_chunk
    if not _compiled:
        _compiled["forward"] = torch.compile(_forward_chunk, dynamic=True)
        _compiled["backward"] = torch.compile(_backward_chunk, dynamic=True)
    return _guarded("forward", _forward_chunk), _guarded("backward", _backward_chunk)


def _guarded(name, eager):
    def run(*args):
        if _compiled.get("failed"):
            return eager(*args)
        try:
            return _compiled[name](*args)
        except Exception as error:   # no C++ compiler, an inductor bug: eager is correct
            _compiled["failed"] = True
            warnings.warn(f"fused_token_logps: torch.compile failed ({type(error).__name__}: "
                          f"{str(error)[:200]}); running eagerly", stacklevel=2)
            return eager(*args)
    return run


class _FusedLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, head, chunk_elements):
        n, vocab = hidden.shape[0], weight.shape[0]
        step = max(1, chunk_elements // vocab)
        forward_chunk, _ = _kernels(n * vocab, hidden.dtype)
        out = torch.empty(n, dtype=head.dtype, device=hidden.device)
        lse = torch.empty(n, dtype=head.dtype, device=hidden.device)
        for start in range(0, n, step):
            part = slice(start, start + step)
            out[part], lse[part] = forward_chunk(head.raw(hidden[part]), labels[part],
                                                 *head.transforms)
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.head, ctx.chunk_elements = head, chunk_elements
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        head = ctx.head
        n, vocab = hidden.shape[0], weight.shape[0]
        _, backward_chunk = _kernels(n * vocab, hidden.dtype)
        # d logp_i / d z_ij = [j = label_i] - p_ij: a chunk of the VOCABULARY at a time, so
        # each chunk's weight gradient is one full-N matmul (no cross-chunk accumulation).
        step = max(1, ctx.chunk_elements // max(n, 1))
        grad_hidden = torch.zeros(hidden.shape, dtype=head.dtype, device=hidden.device)
        grad_weight = torch.empty_like(weight) if ctx.needs_input_grad[1] else None
        grad_bias = torch.empty_like(bias) if bias is not None and ctx.needs_input_grad[2] \
            else None
        upstream = grad_out.to(head.dtype).contiguous()                  # (N,)
        for start in range(0, vocab, step):
            rows = slice(start, start + step)
            raw = head.raw(hidden, rows)                                   # (N, v)
            local = torch.where((labels >= start) & (labels < start + raw.shape[1]),
                                labels - start, -1)
            grad_raw = backward_chunk(raw, lse, upstream, local, *head.transforms)
            grad_hidden += (grad_raw @ weight[rows]).to(head.dtype)
            if grad_weight is not None:
                grad_weight[rows] = grad_raw.T @ hidden
            if grad_bias is not None:
                grad_bias[rows] = grad_raw.sum(0)
        return grad_hidden.to(hidden.dtype), grad_weight, grad_bias, None, None, None


def _filtered_logps(head: _Head, hidden, labels, top_k, top_p, chunk_elements):
    step = max(1, chunk_elements // head.weight.shape[0])
    parts = []
    for start in range(0, hidden.shape[0], step):
        z = head.logits(hidden[start:start + step])
        z = z.masked_fill(sampling_filter(z, top_k, top_p), -torch.inf)
        picked = z.gather(-1, labels[start:start + step, None]).squeeze(-1)
        parts.append(picked - torch.logsumexp(z, dim=-1))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=head.dtype)


@torch.no_grad()
def fused_token_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    softcap: float | None = None,
    scale: float = 1.0,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """(N,) entropy of the next-token distribution at each position, ``H = logsumexp(z) −
    Σ_j p_j z_j`` with z the head's logits read as :func:`fused_token_logps` reads them
    (temperature, soft-cap, scale; no top-k / top-p filter), a chunk of positions at a
    time. No gradient: a metric (the policy entropy PPO logs, Schulman et al. 2017 §6)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, H) and weight (V, H), got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    head = _Head(weight, bias, temperature, softcap, scale)
    step = max(1, chunk_elements // weight.shape[0])
    parts = [logits_entropy(head.logits(hidden[start:start + step]))
             for start in range(0, hidden.shape[0], step)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=head.dtype)


def logits_entropy(z: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(z) over the last dimension: logsumexp(z) − Σ_j p_j z_j."""
    lse = torch.logsumexp(z, dim=-1)
    return lse - (torch.exp(z - lse[..., None]) * z).sum(-1)
