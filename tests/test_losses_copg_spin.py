"""CoPG and SPIN losses against ALGORITHMS.md §5.4 and §6.4, through the project's code."""

import math

import pytest
import torch

from alignment.losses import copg_loss, ipo_loss, spin_loss


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# ------------------------------------------------------------------ CoPG §5.4
def copg_inputs(grad=False):
    return dict(policy_logps=t(-20.0, grad=grad), policy_logps_other=t(-18.0, grad=grad),
                ref_logps=t(-20.5), ref_logps_other=t(-17.7), rewards=t(0.8),
                rewards_other=t(0.2))


def test_copg_loss_value_matches_vector():
    loss, metrics = copg_loss(**copg_inputs(), beta=0.1)
    assert loss.item() == pytest.approx(-0.448, abs=1e-9)
    assert metrics["copg/weight"].item() == pytest.approx(0.52, abs=1e-9)
    assert metrics["copg/reward_gap"].item() == pytest.approx(0.6, abs=1e-9)
    assert metrics["copg/accuracy"].item() == 1.0   # higher reward, higher log-ratio


def test_copg_gradient_carries_full_beta_weight():
    x = copg_inputs(grad=True)
    loss, _ = copg_loss(**x, beta=0.1)
    loss.backward()
    # d(-ℓ)/dℓ_π(y) = −(R^π_β(y) − R^π_β(y′)) = −0.52, and +0.52 on y′
    assert x["policy_logps"].grad.item() == pytest.approx(-0.52, abs=1e-9)
    assert x["policy_logps_other"].grad.item() == pytest.approx(0.52, abs=1e-9)


def test_copg_squared_form():
    beta = 0.1
    loss, _ = copg_loss(**copg_inputs(), beta=beta)
    d, u = 0.8 - 0.2, 0.5 - (-0.3)
    assert (d - beta * u) ** 2 / (2 * beta) == pytest.approx(1.352, abs=1e-9)
    assert loss.item() == pytest.approx((d - beta * u) ** 2 / (2 * beta) - d ** 2 / (2 * beta))


def test_copg_is_ipo_with_quarter_rewards():
    """Property 3: R = ±1/4 gives -(1/(2β)) times IPO's gradient, IPO's τ = β."""
    beta = 0.1
    pol = t(0.8, grad=True)   # h(y) = 0.8, h(y′) = 0 -> u = 0.8
    zero = t(0.0)
    loss, _ = copg_loss(pol, t(0.0, grad=True), zero, zero, t(0.25), t(-0.25), beta=beta)
    (g_copg,) = torch.autograd.grad(loss, pol)
    assert -g_copg.item() == pytest.approx(0.42, abs=1e-9)   # ∂ℓ/∂u
    pol2 = t(0.8, grad=True)
    ipo, _ = ipo_loss(pol2, zero, zero, zero, tau=beta)      # (h − 1/(2τ))² = (½ − βh)² / β²
    (g_ipo,) = torch.autograd.grad(ipo, pol2)
    # IPO's (h − 5)² is (½ − βu)² / β²: rescale to the paper's (½ − βu)² before comparing
    assert -g_copg.item() == pytest.approx(-(1 / (2 * beta)) * g_ipo.item() * beta ** 2)


def test_copg_symmetric_and_batched():
    a, _ = copg_loss(t(-20.0, -5.0), t(-18.0, -6.0), t(-20.5, -5.5), t(-17.7, -6.1),
                     t(0.8, 1.0), t(0.2, 0.0), beta=0.06)
    b, _ = copg_loss(t(-18.0, -6.0), t(-20.0, -5.0), t(-17.7, -6.1), t(-20.5, -5.5),
                     t(0.2, 0.0), t(0.8, 1.0), beta=0.06)
    assert a.item() == pytest.approx(b.item())


def test_copg_equal_rewards_only_regularise():
    """A tie carries no reward signal: its gradient pulls both log-ratios to each other."""
    pol = t(-1.0, grad=True)
    other = t(-2.0, grad=True)
    loss, m = copg_loss(pol, other, t(-1.5), t(-1.5), t(1.0), t(1.0), beta=0.1)
    loss.backward()
    assert pol.grad.item() > 0 and other.grad.item() < 0   # y (higher h) is pushed down
    assert m["copg/accuracy"].item() == 0.0


def test_copg_rejects_bad_input():
    x = copg_inputs()
    with pytest.raises(ValueError, match="rewards must be finite"):
        copg_loss(**{**x, "rewards": t(float("nan"))})
    with pytest.raises(ValueError, match="beta must be > 0"):
        copg_loss(**x, beta=0.0)
    with pytest.raises(ValueError, match="shape"):
        copg_loss(**{**x, "rewards_other": t(0.1, 0.2)})


# ------------------------------------------------------------------ SPIN §6.4
def test_spin_loss_vector():
    loss, m = spin_loss(t(-42.0), t(-38.0), t(-45.0), t(-36.5), lam=0.1)
    assert loss.item() == pytest.approx(0.493249, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.3)
    assert m["rewards/rejected"].item() == pytest.approx(-0.15)


def test_spin_hinge_vector():
    loss, _ = spin_loss(t(-42.0), t(-38.0), t(-45.0), t(-36.5), lam=0.1, loss_type="hinge")
    assert loss.item() == pytest.approx(0.55, abs=1e-9)


def test_spin_last_iteration_lambda():
    loss, _ = spin_loss(t(-30.0), t(-31.0), t(-30.2), t(-30.9), lam=5.0)
    assert loss.item() == pytest.approx(0.201413, abs=1e-6)


def test_spin_first_step_is_log2():
    x = t(-10.0, -3.0)
    loss, _ = spin_loss(x, t(-9.0, -4.0), x, t(-9.0, -4.0), lam=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_spin_gradient_raises_real_lowers_generated():
    real, gen = t(-42.0, grad=True), t(-38.0, grad=True)
    loss, _ = spin_loss(real, gen, t(-45.0), t(-36.5), lam=0.1)
    loss.backward()
    assert real.grad.item() < 0 < gen.grad.item()


def test_spin_rejects_bad_input():
    with pytest.raises(ValueError, match="loss_type"):
        spin_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), loss_type="ipo")
    with pytest.raises(ValueError, match="lam must be > 0"):
        spin_loss(t(-1.0), t(-1.0), t(-1.0), t(-1.0), lam=-1)
