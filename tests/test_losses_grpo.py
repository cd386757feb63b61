"""GRPO / DAPO / Dr. GRPO numbers from ALGORITHMS.md §8.5 through the project's functions,
plus the micro-batch invariance of every aggregation (the token-mean pitfall of §8.6)."""

import pytest
import torch

from alignment.losses.grpo import (
    aggregation_weight,
    group_advantages,
    grpo_loss,
    k3_kl,
    overlong_penalty,
)

F64 = torch.float64
REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64)
POLICY = [[-0.5, -1.3, -0.1], [-2.4, -0.2], [-0.85, -0.7, -0.8, -0.25], [-0.45]]
OLD = [[-0.7, -1.2, -0.4], [-2.0, -0.3], [-0.9, -0.6, -1.1, -0.2], [-0.5]]
REF = [[-0.8, -1.0, -0.6], [-1.8, -0.35], [-1.0, -0.5, -1.2, -0.3], [-0.55]]


def approx(expected):
    return pytest.approx(expected, rel=1e-5, abs=2e-6)


def padded(rows, width=4, fill=0.0):
    out = torch.full((len(rows), width), fill, dtype=F64)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=F64)
        mask[i, :len(r)] = True
    return out, mask


def inputs(pad_value=0.0):
    logps, mask = padded(POLICY, fill=pad_value)
    old, _ = padded(OLD, fill=-pad_value)
    ref, _ = padded(REF, fill=3 * pad_value)
    return logps, old, ref, mask


# ---------------------------------------------------------------- advantages
def test_advantages_vectors():
    assert group_advantages(REWARDS, 4, eps=0.0).tolist() == approx([0.5, -1.5, 0.5, 0.5])
    assert group_advantages(REWARDS, 4, ddof=0, eps=0.0).tolist() == approx(
        [0.57735, -1.73205, 0.57735, 0.57735])
    assert group_advantages(REWARDS, 4).tolist() == approx([0.49990, -1.49970, 0.49990, 0.49990])
    assert group_advantages(REWARDS, 4, scale=False).tolist() == approx([0.25, -0.75, 0.25, 0.25])


def test_advantages_per_group_and_degenerate_groups():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, 4)
    assert adv[:4].tolist() == approx([0.49990, -1.49970, 0.49990, 0.49990])
    assert adv[4:].tolist() == [0.0] * 8          # all-equal groups carry no signal, no NaN
    assert group_advantages(torch.tensor([3.0, 1.0]), 1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards[:10], 3)


# ---------------------------------------------------------------- losses
def test_grpo_per_token_and_sequence_mean_vector():
    logps, old, ref, mask = inputs(pad_value=300.0)   # garbage in the padding must not count
    adv = group_advantages(REWARDS, 4, eps=0.0)
    loss, metrics = grpo_loss(logps, old, ref, adv, mask, beta=0.04)
    assert loss.item() == approx(-0.0381162)
    assert k3_kl(logps[0], ref[0])[:3].tolist() == approx([0.0408182, 0.0498588, 0.106531])
    assert 0 < metrics["clip_fraction"].item() < 1
    pop = group_advantages(REWARDS, 4, ddof=0, eps=0.0)
    assert grpo_loss(logps, old, ref, pop, mask)[0].item() == approx(-0.0443421)
    trl = group_advantages(REWARDS, 4)
    assert grpo_loss(logps, old, ref, trl, mask)[0].item() == approx(-0.0381081)
    token_mean, _ = grpo_loss(logps, old, ref, adv, mask, aggregation="token_mean")
    assert token_mean.item() == approx(-0.135243)


def test_hand_checked_token():
    # seq 2, token 1: ρ = e^-0.4 < 0.8 with Â = -1.5: the clipped branch, 1.2 + 0.04·k3
    loss, _ = grpo_loss(torch.tensor([[-2.4]], dtype=F64), torch.tensor([[-2.0]], dtype=F64),
                        torch.tensor([[-1.8]], dtype=F64), torch.tensor([-1.5], dtype=F64),
                        torch.ones(1, 1, dtype=torch.bool))
    assert loss.item() == approx(1.20889)


def test_dapo_and_dr_grpo_vectors():
    logps, old, _, mask = inputs(pad_value=-3.0)
    adv = group_advantages(REWARDS, 4, eps=0.0)
    dapo, _ = grpo_loss(logps, old, None, adv, mask, clip_high=0.28, beta=0.0,
                        aggregation="token_mean")
    assert dapo.item() == approx(-0.146467)
    dr, _ = grpo_loss(logps, old, None, group_advantages(REWARDS, 4, scale=False), mask,
                      beta=0.0, aggregation="dr_grpo", max_length=4)
    assert dr.item() == approx(-0.0429365)


def test_on_policy_loss_is_only_the_kl_term():
    logps, _, ref, mask = inputs()
    adv = group_advantages(REWARDS, 4, eps=0.0)
    loss, metrics = grpo_loss(logps, logps.detach(), ref, adv, mask)
    assert loss.item() == approx(0.00212902)
    assert metrics["clip_fraction"].item() == 0.0 and metrics["ratio"].item() == approx(1.0)


def test_bad_inputs_are_named():
    logps, old, ref, mask = inputs()
    adv = torch.zeros(4, dtype=F64)
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(logps, old, ref, adv, mask, aggregation="seq")
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logps, old, ref, adv[:3], mask)


@pytest.mark.parametrize("aggregation", ["grpo", "token_mean", "dr_grpo"])
def test_micro_batches_weighted_like_one_batch(aggregation):
    """Splitting the batch into micro-batches weighted by `aggregation_weight` gives the
    same loss and gradient as one batch (the global token count for token-mean)."""
    base, old, ref, mask = inputs()
    adv = group_advantages(REWARDS, 4, eps=0.0)

    def run(splits):
        logps = base.clone().requires_grad_(True)
        parts = [(logps[s], old[s], ref[s], adv[s], mask[s]) for s in splits]
        weights = [aggregation_weight(p[4], aggregation) for p in parts]
        total = 0.0
        for part, w in zip(parts, weights, strict=True):
            loss, _ = grpo_loss(*part, aggregation=aggregation, max_length=4)
            total = total + loss * (w / sum(weights))
        total.backward()
        return total.item(), logps.grad

    whole_loss, whole_grad = run([slice(0, 4)])
    split_loss, split_grad = run([slice(0, 1), slice(1, 3), slice(3, 4)])
    assert split_loss == approx(whole_loss)
    torch.testing.assert_close(split_grad, whole_grad)


def test_overlong_penalty_vector():
    lengths = torch.tensor([16000, 18432, 21000, 20480])
    assert overlong_penalty(lengths, 20480, 4096).tolist() == approx([0.0, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError, match="cache"):
        overlong_penalty(lengths, 100, 0)


# --- truncated importance sampling (engine/trainer mismatch correction) -----------------------

def test_truncated_is_weights_vector():
    from alignment.losses import truncated_is_weights
    trainer = torch.tensor([[-1.0, -2.0, -0.5]], dtype=F64)
    engine = torch.tensor([[-1.1, -1.0, -9.0]], dtype=F64)
    mask = torch.tensor([[True, True, False]])
    w, m = truncated_is_weights(trainer, engine, mask, cap=1.05)
    # ratios e^0.1 = 1.10517 (capped at 1.05), e^-1 = 0.36788; off the mask: 0
    assert w.tolist()[0] == approx([1.05, 0.3678794, 0.0])
    assert float(m["is_ratio"]) == approx((1.1051709 + 0.3678794) / 2)
    assert float(m["is_capped"]) == approx(0.5)
    assert not w.requires_grad


def test_is_weights_scale_each_token_of_the_surrogate_only():
    from alignment.losses import truncated_is_weights
    logps, mask = padded(POLICY)
    old, _ = padded(OLD)
    ref, _ = padded(REF)
    adv = group_advantages(REWARDS, 4)
    plain, _ = grpo_loss(logps, old, ref, adv, mask, beta=0.0)
    ones, _ = grpo_loss(logps, old, ref, adv, mask, beta=0.0, is_weights=torch.ones_like(logps))
    assert float(ones) == approx(float(plain))
    # weights 2 on every token double the surrogate, not the KL term
    twice, _ = grpo_loss(logps, old, ref, adv, mask, beta=0.0,
                         is_weights=torch.full_like(logps, 2.0))
    assert float(twice) == approx(2 * float(plain))
    with_kl, _ = grpo_loss(logps, old, ref, adv, mask, beta=0.04,
                           is_weights=torch.full_like(logps, 2.0))
    kl_only = float(with_kl) - 2 * float(plain)
    base_kl = float(grpo_loss(logps, old, ref, adv, mask, beta=0.04)[0]) - float(plain)
    assert kl_only == approx(base_kl)
    # an engine that agrees with the trainer gives weights 1 (below the cap)
    w, m = truncated_is_weights(logps, logps, mask, cap=2.0)
    assert torch.equal(w, mask.to(F64)) and float(m["is_capped"]) == 0.0
    with pytest.raises(ValueError, match="cap C must be > 0"):
        truncated_is_weights(logps, logps, mask, cap=0.0)
