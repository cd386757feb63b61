"""PPO, APA and DR-PO numbers from ALGORITHMS.md §1.4, §4.4 and §7.4 through the project's
functions, plus padding invariance and gradient directions."""

import math

import pytest
import torch

from alignment.losses import (
    adaptive_kl_coef,
    apa_loss,
    awr_loss,
    gae,
    group_advantages,
    grpo_loss,
    k1_kl,
    k3_kl,
    kl_penalized_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from alignment.rollout import sample_resets

F64 = torch.float64
V_OLD = [0.5, 0.6, 0.4, 0.7]
OLD = [-1.0, -0.8, -1.5, -0.3]
REF = [-1.1, -0.7, -1.6, -0.5]
NEW = [-0.9, -0.85, -1.2, -0.35]
V_NEW = [0.55, 0.9, 0.45, 0.6]


def approx(expected):
    return pytest.approx(expected, rel=1e-5, abs=2e-6)


def row(values, pad=0, fill=0.0):
    """A (1, 4 + pad) tensor; padded positions hold `fill` (must not matter)."""
    return torch.tensor([values + [fill] * pad], dtype=F64)


def mask(n=4, pad=0):
    return torch.tensor([[True] * n + [False] * pad])


def rollout_quantities(pad=0, fill=0.0):
    m = mask(pad=pad)
    rewards = kl_penalized_rewards(torch.tensor([1.0], dtype=F64), row(OLD, pad, fill),
                                   row(REF, pad, -fill), m, kl_coef=0.05)
    adv, ret = gae(rewards, row(V_OLD, pad, fill), m, gamma=1.0, lam=0.95)
    return m, rewards, adv, ret


# ---------------------------------------------------------------- §1.4 rollout side
def test_kl_estimators_per_token():
    assert k1_kl(row(OLD), row(REF))[0].tolist() == approx([0.1, -0.1, 0.1, 0.2])
    assert k3_kl(row(OLD), row(REF))[0].tolist() == approx(
        [0.00483742, 0.00517092, 0.00483742, 0.0187308])


def test_rewards_gae_returns_and_whitening_vectors():
    m, rewards, adv, ret = rollout_quantities()
    assert rewards[0].tolist() == approx([-0.005, 0.005, -0.005, 0.99])
    assert adv[0].tolist() == approx([0.424626, 0.346975, 0.5705, 0.29])
    assert ret[0].tolist() == approx([0.924626, 0.946975, 0.9705, 0.99])
    assert whiten(adv, m)[0].tolist() == approx([0.157692, -0.579916, 1.54335, -1.12112])


def test_k3_rewards_use_the_k3_estimator():
    rewards = kl_penalized_rewards(torch.tensor([1.0], dtype=F64), row(OLD), row(REF), mask(),
                                   kl_coef=0.05, estimator="k3")
    assert rewards[0].tolist() == approx([-0.05 * 0.00483742, -0.05 * 0.00517092,
                                          -0.05 * 0.00483742, 1.0 - 0.05 * 0.0187308])
    with pytest.raises(ValueError, match="k1"):
        kl_penalized_rewards(torch.tensor([1.0]), row(OLD), row(REF), mask(), 0.05, "k2")


def test_reward_whitening_keeps_the_mean_and_changes_gae():
    m, rewards, _, _ = rollout_quantities()
    scaled = whiten(rewards, m, shift_mean=False)
    assert scaled[0].tolist() == approx([-0.338837, -0.315549, -0.338837, 1.97822])
    adv, _ = gae(scaled, row(V_OLD), m, gamma=1.0, lam=0.95)
    assert adv[0].tolist() == approx([0.332258, 0.601152, 1.17548, 1.27822])


def test_padding_never_changes_anything():
    """Score at the last REAL token, V after it 0, pads 0 in every output, whatever the pad
    values (the §1.5 pitfalls)."""
    m, rewards, adv, ret = rollout_quantities(pad=3, fill=7.5)
    assert rewards[0].tolist() == approx([-0.005, 0.005, -0.005, 0.99, 0, 0, 0])
    assert adv[0].tolist() == approx([0.424626, 0.346975, 0.5705, 0.29, 0, 0, 0])
    assert ret[0].tolist() == approx([0.924626, 0.946975, 0.9705, 0.99, 0, 0, 0])
    assert whiten(adv, m)[0].tolist() == approx([0.157692, -0.579916, 1.54335, -1.12112,
                                                 0, 0, 0])


def test_gae_episode_may_start_after_a_reset_prefix():
    """DR-PO: forced tokens are context. The episode [2, 6) gives the same GAE as the same
    rewards and values on their own."""
    m = torch.tensor([[False, False, True, True, True, True]])
    values = torch.tensor([[9.0, 9.0, *V_OLD]], dtype=F64)
    rewards = torch.tensor([[3.0, 3.0, -0.005, 0.005, -0.005, 0.99]], dtype=F64)
    adv, ret = gae(rewards, values, m, gamma=1.0, lam=0.95)
    assert adv[0].tolist() == approx([0, 0, 0.424626, 0.346975, 0.5705, 0.29])
    assert ret[0, :2].tolist() == [0.0, 0.0]


def test_gae_with_gamma_below_one_discounts():
    adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2, dtype=bool),
                   gamma=0.5, lam=1.0)
    assert adv[0].tolist() == approx([0.5, 1.0]) and ret[0].tolist() == approx([0.5, 1.0])


# ---------------------------------------------------------------- §1.4 update side
def test_policy_loss_vectors():
    m, _, adv, _ = rollout_quantities()
    raw, metrics = ppo_policy_loss(row(NEW), row(OLD), adv, m, clip=0.2)
    assert raw.item() == approx(-0.439948)
    assert metrics["clip_fraction"].item() == approx(0.25)      # the third token
    white, _ = ppo_policy_loss(row(NEW), row(OLD), whiten(adv, m), m, clip=0.2)
    assert white.item() == approx(-0.102054)


def test_value_loss_and_total():
    m, _, adv, ret = rollout_quantities()
    value, metrics = ppo_value_loss(row(V_NEW), row(V_OLD), ret, m, clip=0.2)
    assert value.item() == approx(0.0731208)
    assert metrics["value_clip_fraction"].item() == approx(0.25)   # 0.9 -> 0.8
    policy, _ = ppo_policy_loss(row(NEW), row(OLD), whiten(adv, m), m, clip=0.2)
    assert (policy + 0.1 * value).item() == approx(-0.0947415)
    unclipped, _ = ppo_value_loss(row(V_NEW), row(V_OLD), ret, m, clip=None)
    assert unclipped.item() == approx(0.0706964)   # ½ mean of (V − G)², no clipping


def test_adaptive_kl_vector_and_bounds():
    assert adaptive_kl_coef(0.05, 8.0, 6.0, 10000, 512) == approx(0.050512)
    assert adaptive_kl_coef(0.05, 3.0, 6.0, 10000, 512) == approx(0.05 * (1 - 0.2 * 0.0512))
    assert adaptive_kl_coef(0.05, 6.0, 6.0, 10000, 512) == approx(0.05)
    with pytest.raises(ValueError):
        adaptive_kl_coef(0.05, 1.0, 0.0, 10000, 1)


def test_policy_gradient_direction():
    """Positive advantage raises the token's log-prob, negative lowers it; a ratio already
    past the clip gets no gradient."""
    logps = torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64, requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, -1.5]], dtype=F64)   # third: ratio e^0.5 > 1.2
    adv = torch.tensor([[1.0, -1.0, 1.0]], dtype=F64)
    loss, _ = ppo_policy_loss(logps, old, adv, torch.ones(1, 3, dtype=bool))
    loss.backward()
    assert logps.grad[0, 0] < 0 < logps.grad[0, 1]      # descent: up, down
    assert logps.grad[0, 2] == 0


def test_value_gradient_pulls_towards_returns():
    values = torch.tensor([[0.2, 0.9]], dtype=F64, requires_grad=True)
    loss, _ = ppo_value_loss(values, values.detach(), torch.tensor([[0.5, 0.5]], dtype=F64),
                             torch.ones(1, 2, dtype=bool))
    loss.backward()
    assert values.grad[0, 0] < 0 < values.grad[0, 1]


# ---------------------------------------------------------------- §4.4 APA
APA_LOGP = [-1.0, -0.6, -2.2, -0.4]
APA_INIT = [-1.1, -0.7, -2.0, -0.5]
APA_ADV = [0.3, -0.2, 0.5, -0.1]


def test_apa_vectors():
    loss, metrics = apa_loss(row(APA_LOGP), row(APA_INIT), row(APA_ADV), mask(), lam=0.1)
    assert loss.item() == approx(10.2675)
    assert metrics["residual"].item() == approx((2.9 + 2.1 + 5.2 + 1.1) / 4)
    loss, _ = apa_loss(row(APA_LOGP), row(APA_INIT), row(APA_ADV), mask(), lam=1.0)
    assert loss.item() == approx(0.165)
    assert awr_loss(row(APA_LOGP), row(APA_ADV), mask(), coef=0.5).item() == approx(1.22752)


def test_apa_ignores_padding_and_pulls_towards_its_target():
    padded, _ = apa_loss(row(APA_LOGP, 2, 5.0), row(APA_INIT, 2, -5.0), row(APA_ADV, 2, 9.0),
                         mask(pad=2), lam=0.1)
    assert padded.item() == approx(10.2675)
    logps = torch.tensor([[-1.0, -1.0]], dtype=F64, requires_grad=True)
    loss, _ = apa_loss(logps, torch.tensor([[-1.0, -1.0]], dtype=F64),
                       torch.tensor([[0.1, -0.1]], dtype=F64), torch.ones(1, 2, dtype=bool),
                       lam=1.0)
    loss.backward()   # target log π_init + Â/λ: above for Â > 0, below for Â < 0
    assert logps.grad[0, 0] < 0 < logps.grad[0, 1]
    with pytest.raises(ValueError, match="lam"):
        apa_loss(row(APA_LOGP), row(APA_INIT), row(APA_ADV), mask(), lam=0.0)


# ---------------------------------------------------------------- §7.4 DR-PO
def test_drpo_policy_loss_excludes_reset_tokens():
    adv = torch.tensor([[0.4, -0.2, 0.8, -1.1, 0.1]], dtype=F64)
    log_ratio = torch.tensor([[0.05, -0.1, 0.15, 0.3, -0.25]], dtype=F64)
    old = torch.zeros(1, 5, dtype=F64)
    rollin = torch.tensor([[True, True, False, False, False]])
    masked, _ = ppo_policy_loss(old + log_ratio, old, adv, ~rollin, clip=0.2)
    assert masked.item() == approx(0.159166)
    full, _ = ppo_policy_loss(old + log_ratio, old, adv, torch.ones(1, 5, dtype=bool), clip=0.2)
    assert full.item() == approx(0.0475913)
    per_token = [ppo_policy_loss(log_ratio[:, i:i + 1], old[:, i:i + 1], adv[:, i:i + 1],
                                 torch.ones(1, 1, dtype=bool))[0].item() for i in range(5)]
    assert per_token == approx([-0.420508, 0.180967, -0.929467, 1.48485, -0.0778800])


def test_reset_lengths_are_uniform_on_1_to_L_minus_1():
    draws = sample_resets([6] * 20000, reset_prob=1.0, seed=0)
    counts = [draws.count(k) / len(draws) for k in range(7)]
    assert counts[0] == counts[6] == 0
    assert counts[1:6] == pytest.approx([0.2] * 5, abs=0.015)     # P(k) = 0.2, k = 1..5
    assert sample_resets([1, 0, 1], reset_prob=1.0, seed=1) == [0, 0, 0]   # L < 2: never
    half = sample_resets([6] * 20000, reset_prob=0.5, seed=2)
    assert half.count(0) / 20000 == pytest.approx(0.5, abs=0.015)
    assert sample_resets([5, 9, 3], 0.7, seed=4) == sample_resets([5, 9, 3], 0.7, seed=4)
    assert sample_resets([9] * 30, 1.0, seed=4) != sample_resets([9] * 30, 1.0, seed=5)
    assert sample_resets([9] * 5, 0.0, seed=4) == [0] * 5
    with pytest.raises(ValueError, match="reset_prob"):
        sample_resets([4], 1.5, seed=0)


def test_single_sequences_may_be_1d():
    m = torch.ones(4, dtype=torch.bool)
    t = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731
    rewards = kl_penalized_rewards(t(1.0), t(OLD), t(REF), m, kl_coef=0.05)
    assert rewards.tolist() == approx([-0.005, 0.005, -0.005, 0.99])
    adv, ret = gae(rewards, t(V_OLD), m)
    assert adv.tolist() == approx([0.424626, 0.346975, 0.5705, 0.29])
    assert whiten(adv, m).tolist() == approx([0.157692, -0.579916, 1.54335, -1.12112])
    assert ppo_policy_loss(t(NEW), t(OLD), adv, m)[0].item() == approx(-0.439948)
    assert ppo_value_loss(t(V_NEW), t(V_OLD), ret, m)[0].item() == approx(0.0731208)
    assert apa_loss(t(APA_LOGP), t(APA_INIT), t(APA_ADV), m)[0].item() == approx(10.2675)


# ---------------------------------------------------------------- import paths
def test_grpo_functions_are_importable_from_the_package():
    from alignment.losses import grpo as module

    assert group_advantages is module.group_advantages and grpo_loss is module.grpo_loss
    assert math.isclose(group_advantages(torch.tensor([1.0, 0.0], dtype=F64), 2, eps=0.0)[0].item(),
                        0.5 / math.sqrt(0.5))
