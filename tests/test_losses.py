import math

import pytest
import torch
from diffusers import DDPMScheduler

from rrnet.losses import denoising_target, relation_compelling_loss, sample_timestep, timestep_probabilities


def test_loss_equals_the_formula_on_fixed_tensors():
    g = torch.Generator().manual_seed(0)
    pred_own, pred_other, eps = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    out = relation_compelling_loss(pred_own, eps, pred_other, eps, positive_weight=10, negative_weight=2)
    mse_own = ((pred_own - eps) ** 2).mean()
    mse_other = ((pred_other - eps) ** 2).mean()
    assert torch.allclose(out.loss, 10 * mse_own - 2 * mse_other)
    assert out.positive.item() == pytest.approx(mse_own.item()) and out.negative.item() == pytest.approx(mse_other.item())
    assert not out.positive.requires_grad and not out.negative.requires_grad


def test_no_negative_term():
    a, b = torch.ones(1, 2), torch.zeros(1, 2)
    out = relation_compelling_loss(a, b, None, None, positive_weight=3, negative_weight=2)
    assert out.loss.item() == pytest.approx(3.0) and out.negative is None


def test_timestep_distribution_follows_one_minus_half_cosine():
    p = timestep_probabilities(1000)
    assert p.shape == (1000,) and p.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert p[999] / p[0] == pytest.approx((1 - 0.5 * math.cos(math.pi * 999 / 1000)) / 0.5, rel=1e-4)
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_timestep(1000, g) for _ in range(4000)])
    assert (draws >= 500).float().mean() > 0.6  # late timesteps are favoured (expected ~0.66)
    assert draws.min() >= 0 and draws.max() < 1000


def test_timestep_minimum_keeps_only_late_timesteps_in_their_importance_proportions():
    g = torch.Generator().manual_seed(0)
    late = torch.cat([sample_timestep(1000, g, minimum=0.5) for _ in range(4000)])
    assert late.min() >= 500 and late.max() < 1000
    # within the kept range the importance weights still apply: p(999) / p(500) = 1.5 / 1.0
    assert (late >= 750).float().mean() > 0.53
    uniform = torch.cat([sample_timestep(1000, g, importance=False, minimum=0.8) for _ in range(2000)])
    assert uniform.min() >= 800 and abs((uniform >= 900).float().mean().item() - 0.5) < 0.05


def test_velocity_target_for_v_prediction_models():
    sched = DDPMScheduler(prediction_type="v_prediction")
    z, eps, t = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.tensor([10, 900])
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(denoising_target(sched, z, eps, t), a * eps - s * z, atol=1e-5)
    assert denoising_target(DDPMScheduler(), z, eps, t) is eps
