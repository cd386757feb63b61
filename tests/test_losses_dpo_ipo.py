"""DPO, IPO (and SPIN, which is DPO) loss numbers from ALGORITHMS.md §2.4, §3.4 and §6.4,
computed through the project's functions, plus gradient checks for the losses and
``sequence_logps``."""

import math

import pytest
import torch

from alignment.losses import dpo_loss, ipo_loss, sequence_logps
from alignment.losses.logps import token_logps

F64 = torch.float64

# ALGORITHMS.md §2.4: per-token log-probs of the response tokens, two pairs.
POLICY_CHOSEN = [[-0.5, -1.2, -0.8], [-0.3, -0.4]]
REF_CHOSEN = [[-0.6, -1.0, -1.1], [-0.5, -0.6]]
POLICY_REJECTED = [[-1.5, -0.9, -2.1, -0.7], [-1.0, -1.1, -0.9]]
REF_REJECTED = [[-1.3, -1.0, -1.8, -0.6], [-0.9, -1.0, -1.0]]


def approx(expected):
    # The document's vectors carry 6 significant digits.
    return pytest.approx(expected, rel=1e-5, abs=2e-6)


def logits_for(sequences, prompt_len=2, total_len=7):
    """(logits, labels, mask) whose masked label log-probs are exactly ``sequences``.

    Two-token vocabulary: logits ``[p, log(1 − e^p)]`` have log-softmax ``p`` at label 0.
    Each response follows a masked prompt and is followed by padding; those positions get
    labels that are valid (1), ignore-index (-100) or out of range (9), and logits that make
    every label there far from log-prob 0, so only the mask keeps them out of the result.
    """
    batch = len(sequences)
    logits = torch.tensor([-8.0, 8.0], dtype=F64).repeat(batch, total_len, 1)  # (B, T, 2)
    logits[:, 0] = torch.tensor([8.0, -8.0], dtype=F64)  # label 1 there: log-prob ≈ −16
    labels = torch.full((batch, total_len), -100)  # (B, T)
    labels[:, 0], labels[:, 1] = 1, 9
    mask = torch.zeros(batch, total_len, dtype=torch.bool)  # (B, T)
    for i, values in enumerate(sequences):
        p = torch.tensor(values, dtype=F64)  # (len,)
        span = slice(prompt_len, prompt_len + len(values))
        logits[i, span, 0] = p
        logits[i, span, 1] = torch.log(-torch.expm1(p))  # log(1 − e^p)
        labels[i, span] = 0
        mask[i, span] = True
    return logits, labels, mask


def section_2_4(average=False):
    """(pc, pr, rc, rr), each (2,), from the §2.4 per-token vectors via sequence_logps."""
    columns = (POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)
    return tuple(sequence_logps(*logits_for(c), average=average) for c in columns)


def per_pair(loss_fn, logps, scale, metric=None):
    """Per-pair losses (or one metric) by calling the loss on 1-element batches."""
    values = []
    for i in range(logps[0].shape[0]):
        loss, metrics = loss_fn(*(t[i : i + 1] for t in logps), scale)
        values.append((loss if metric is None else metrics[metric]).item())
    return values


def seq(*values):
    return torch.tensor(values, dtype=F64)


# ---------------------------------------------------------------- sequence_logps


def test_sequence_logps_hand_example():
    # Unmasked rows are [0, ln 2, 0] -> probabilities [1/4, 1/2, 1/4].
    row = [0.0, math.log(2.0), 0.0]
    junk = [50.0, -50.0, 3.0]  # masked positions: must not count
    logits = torch.tensor([[row, row, junk], [junk, row, row]], dtype=torch.float32)
    labels = torch.tensor([[1, 0, -100], [7, 1, 1]])  # -100 and 7 (>= V) sit under the mask
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    ln2 = math.log(2.0)

    total = sequence_logps(logits, labels, mask)
    assert total.shape == (2,)
    assert total.tolist() == approx([-3 * ln2, -2 * ln2])  # ln(1/2)+ln(1/4); 2·ln(1/2)
    mean = sequence_logps(logits, labels, mask, average=True)
    assert mean.tolist() == approx([-1.5 * ln2, -ln2])


def test_sequence_logps_temperature():
    # [0, 2 ln 2, 0] at temperature 2 is [0, ln 2, 0] at temperature 1.
    logits = torch.tensor([[[0.0, 2 * math.log(2.0), 0.0]] * 2])  # (1, 2, 3)
    labels = torch.tensor([[1, 2]])
    mask = torch.ones(1, 2)
    out = sequence_logps(logits, labels, mask, temperature=2.0)
    assert out.tolist() == approx([math.log(0.5) + math.log(0.25)])


def test_sequence_logps_reproduces_section_2_4_sums_and_means():
    pc, pr, rc, rr = section_2_4()
    assert pc.tolist() == approx([-2.5, -0.7])
    assert rc.tolist() == approx([-2.7, -1.1])
    assert pr.tolist() == approx([-5.2, -3.0])
    assert rr.tolist() == approx([-4.7, -2.9])
    pc_mean = section_2_4(average=True)[0]
    assert pc_mean.tolist() == approx([-2.5 / 3, -0.7 / 2])


def test_sequence_logps_ignores_masked_positions_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=F64, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    sequence_logps(logits, labels, mask).sum().backward()
    assert torch.all(logits.grad[~mask] == 0)

    perturbed = logits.detach().clone()
    perturbed[~mask] = 1e4
    garbage_labels = labels.masked_fill(~mask, -100)
    torch.testing.assert_close(
        sequence_logps(perturbed, garbage_labels, mask),
        sequence_logps(logits.detach(), labels, mask),
    )


def test_token_logps_upcasts_low_precision_and_survives_ignore_index():
    logits = torch.zeros(1, 3, 4, dtype=torch.bfloat16)  # uniform over 4 tokens
    labels = torch.tensor([[0, -100, 4]])
    out = token_logps(logits, labels)
    assert out.shape == (1, 3)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out[0, 0].item() == approx(-math.log(4.0))


def test_sequence_logps_bad_shapes_raise():
    logits = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="mask"):
        sequence_logps(logits, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4))
    with pytest.raises(ValueError, match="labels"):
        sequence_logps(logits, torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        token_logps(logits, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_gradcheck(average):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, dtype=F64, requires_grad=True)
    labels = torch.tensor([[1, 4, -100, 0], [3, 3, 2, 9]])
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda x: sequence_logps(x, labels, mask, average=average, temperature=0.7), (logits,)
    )


# ---------------------------------------------------------------- DPO, §2.4


def test_dpo_section_2_4_beta_0_1():
    logps = section_2_4()
    assert per_pair(dpo_loss, logps, 0.1) == approx([0.658760, 0.668460])
    loss, metrics = dpo_loss(*logps, beta=0.1)
    assert loss.dim() == 0
    assert loss.item() == approx(0.663610)
    # Implicit chosen rewards β·h(y_w) per pair, and their batch mean.
    assert per_pair(dpo_loss, logps, 0.1, "rewards/chosen") == approx([0.02, 0.04])
    assert metrics["rewards/chosen"].item() == approx(0.03)


def test_dpo_section_2_4_beta_0_5():
    loss, _ = dpo_loss(*section_2_4(), beta=0.5)
    assert loss.item() == approx(0.554661)


def test_dpo_metrics_section_2_4():
    logps = section_2_4()
    # At β = 1 the reward margin is the summed margin h(y_w) − h(y_l) = [0.7, 0.5].
    assert per_pair(dpo_loss, logps, 1.0, "rewards/margin") == approx([0.7, 0.5])
    _, m = dpo_loss(*logps, beta=0.1)
    assert m["rewards/rejected"].item() == approx(0.1 * (-0.5 - 0.1) / 2)
    assert m["rewards/margin"].item() == approx(0.1 * (0.7 + 0.5) / 2)
    assert m["rewards/accuracy"].item() == 1.0
    assert m["logps/chosen"].item() == approx((-2.5 - 0.7) / 2)
    assert m["logps/rejected"].item() == approx((-5.2 - 3.0) / 2)
    assert all(not v.requires_grad for v in m.values())


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 5.0])
def test_dpo_is_log2_at_reference(beta):
    torch.manual_seed(1)
    chosen, rejected = -10 * torch.rand(8, dtype=F64), -10 * torch.rand(8, dtype=F64)
    loss, m = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=beta)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-12)
    assert m["rewards/accuracy"].item() == 0.0  # margin 0 is not "> 0"


# ---------------------------------------------------------------- IPO, §3.4


def test_ipo_section_3_4_sum_form():
    logps = section_2_4(average=False)
    assert per_pair(ipo_loss, logps, 0.1) == approx([18.49, 20.25])
    loss, _ = ipo_loss(*logps, tau=0.1)
    assert loss.dim() == 0
    assert loss.item() == approx(19.37)


def test_ipo_section_3_4_trl_mean_form():
    logps = section_2_4(average=True)
    assert per_pair(ipo_loss, logps, 0.1) == approx([23.1201, 22.7211])
    loss, m = ipo_loss(*logps, tau=0.1)
    assert loss.item() == approx(22.9206)
    # rewards are τ·log-ratio, so the per-pair margin metric over τ is h̄.
    margins = per_pair(ipo_loss, logps, 0.1, "rewards/margin")
    assert [x / 0.1 for x in margins] == approx([0.191667, 0.233333])
    assert set(m) == set(dpo_loss(*logps)[1])


@pytest.mark.parametrize("tau", [0.01, 0.1, 0.5, 2.0])
def test_ipo_at_reference_is_quarter_tau_squared_inverse(tau):
    torch.manual_seed(2)
    chosen, rejected = -10 * torch.rand(8, dtype=F64), -10 * torch.rand(8, dtype=F64)
    loss, _ = ipo_loss(chosen, rejected, chosen.clone(), rejected.clone(), tau=tau)
    assert loss.item() == pytest.approx(1 / (4 * tau**2), rel=1e-12)


# ---------------------------------------------------------------- SPIN = DPO, §6.4


def test_spin_vectors_through_dpo_loss():
    # chosen = real response, rejected = generated, reference = opponent θ_t, β = λ.
    loss, m = dpo_loss(seq(-42.0), seq(-38.0), seq(-45.0), seq(-36.5), beta=0.1)
    assert loss.item() == approx(0.493249)
    assert m["rewards/chosen"].item() == approx(0.3)
    assert m["rewards/rejected"].item() == approx(-0.15)

    loss, _ = dpo_loss(seq(-30.0), seq(-31.0), seq(-30.2), seq(-30.9), beta=5.0)
    assert loss.item() == approx(0.201413)

    loss, _ = dpo_loss(seq(-42.0), seq(-38.0), seq(-42.0), seq(-38.0), beta=0.1)
    assert loss.item() == approx(0.693147)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("loss_fn", [dpo_loss, ipo_loss])
def test_loss_gradcheck(loss_fn):
    torch.manual_seed(3)
    inputs = tuple(-5 * torch.rand(3, dtype=F64, requires_grad=True) for _ in range(4))
    assert torch.autograd.gradcheck(lambda *x: loss_fn(*x, 0.3)[0], inputs)


def step_margin(loss_fn, scale, margin, lr=1e-2):
    """One gradient-descent step on the policy log-probs of a single pair with log-ratio
    margin ``margin``; returns (margin before, margin after, chosen log-prob change)."""
    pc = seq(-3.0).requires_grad_()
    pr = seq(-3.0 - margin).requires_grad_()
    rc, rr = seq(-3.0), seq(-3.0)
    loss, before = loss_fn(pc, pr, rc, rr, scale)
    loss.backward()
    with torch.no_grad():
        new_pc, new_pr = pc - lr * pc.grad, pr - lr * pr.grad
    _, after = loss_fn(new_pc, new_pr, rc, rr, scale)
    return (
        before["rewards/margin"].item() / scale,
        after["rewards/margin"].item() / scale,
        (new_pc - pc).item(),
    )


@pytest.mark.parametrize("margin", [-5.0, 0.0, 0.7, 20.0])
def test_dpo_step_increases_margin(margin):
    before, after, chosen_change = step_margin(dpo_loss, 0.1, margin)
    assert before == approx(margin)
    assert after > before
    assert chosen_change > 0


@pytest.mark.parametrize("margin", [-2.0, 0.0, 3.0])
def test_ipo_step_increases_margin_below_target(margin):
    before, after, _ = step_margin(ipo_loss, 0.1, margin)  # target 1/(2τ) = 5
    assert after > before


@pytest.mark.parametrize("margin", [7.0, 12.0])
def test_ipo_step_decreases_overshooting_margin(margin):
    # Above the target 1/(2τ) = 5 (7 is below 1/τ = 10, 12 above): pushed back down,
    # lowering the chosen log-prob (ALGORITHMS.md §3.5).
    before, after, chosen_change = step_margin(ipo_loss, 0.1, margin)
    assert after < before
    assert chosen_change < 0


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("loss_fn", [dpo_loss, ipo_loss])
def test_bad_inputs_raise(loss_fn):
    a, b = seq(-1.0, -2.0), seq(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(a, a, a, b)
    with pytest.raises(ValueError, match="1-D"):
        loss_fn(a[None], a[None], a[None], a[None])
    with pytest.raises(ValueError, match="empty"):
        loss_fn(*(seq() for _ in range(4)))
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="beta|tau"):
            loss_fn(a, a, a, a, bad)
