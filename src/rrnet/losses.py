"""Relation-compelling losses and the timestep distribution used to train a rectifier.

Per pair step the frozen UNet denoises each side's own images (positive term) and the other
side's images (negative term) under the same rectified conditioning, with one noise draw and one
timestep shared by both terms:  loss = w_pos * MSE(own) - w_neg * MSE(other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def timestep_probabilities(num_train_timesteps: int, strength: float = 0.5) -> torch.Tensor:
    """p(t) proportional to 1 - strength * cos(pi t / T): favours large t, where layout is decided."""
    t = torch.arange(num_train_timesteps, dtype=torch.float64)
    weights = 1.0 - strength * torch.cos(math.pi * t / num_train_timesteps)
    return (weights / weights.sum()).float()


def sample_timestep(
    num_train_timesteps: int, generator: torch.Generator, importance: bool = True, strength: float = 0.5,
    minimum: float = 0.0,
) -> torch.Tensor:
    """One timestep (shape (1,)), drawn from the importance distribution or uniformly; with `minimum`
    > 0, only from t >= minimum * T (the noise levels at which a layout is still being decided)."""
    if not importance and minimum <= 0:
        return torch.randint(0, num_train_timesteps, (1,), generator=generator)
    probs = (timestep_probabilities(num_train_timesteps, strength) if importance
             else torch.ones(num_train_timesteps, dtype=torch.float32))
    if minimum > 0:
        probs[: int(minimum * num_train_timesteps)] = 0
        probs = probs / probs.sum()
    return torch.multinomial(probs, 1, generator=generator)


def denoising_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


@dataclass
class PairLoss:
    """The combined loss and its two terms (detached tensors: reading them waits for the device, so callers do it last)."""

    loss: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor | None


def relation_compelling_loss(
    pred_own: torch.Tensor,
    target_own: torch.Tensor,
    pred_other: torch.Tensor | None,
    target_other: torch.Tensor | None,
    positive_weight: float = 10.0,
    negative_weight: float = 2.0,
) -> PairLoss:
    """`positive_weight * MSE(own) - negative_weight * MSE(other)`; no negative term when `pred_other` is None."""
    positive = F.mse_loss(pred_own.float(), target_own.float())
    loss = positive_weight * positive
    negative = None
    if pred_other is not None:
        negative = F.mse_loss(pred_other.float(), target_other.float())
        loss = loss - negative_weight * negative
        negative = negative.detach()
    return PairLoss(loss=loss, positive=positive.detach(), negative=negative)
