"""Backpropagating through frozen fp16 models into fp32 trained weights without losing gradients.

With `--mixed_precision fp16` the frozen text encoder, UNet and VAE hold fp16 weights, so the
backward pass through them runs in fp16 and small gradients flush to zero before they reach the
fp32 rectifier. A gradient scaler multiplies the loss before backward and divides the gradients
after (skipping a step whose gradients overflowed), as diffusers' training scripts do through
accelerate. The frozen models already compute in fp16, so there is nothing for autocast to add.
bf16 has fp32's exponent range and needs no scaling; fp32 runs exactly as without a scaler.
"""

from __future__ import annotations

import torch


def gradient_scaler(pipe) -> torch.amp.GradScaler:
    """A scaler that is active only when the frozen UNet runs in fp16 (a no-op otherwise)."""
    unet = pipe.unet
    enabled = unet.dtype == torch.float16 and unet.device.type in ("cuda", "cpu", "xpu", "mps")
    return torch.amp.GradScaler(unet.device.type if enabled else "cpu", enabled=enabled)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """One optimiser step on `loss` through the scaler (plain backward + step when it is disabled)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
