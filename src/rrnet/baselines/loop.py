"""The one training loop of the baselines: the plain denoising loss on the exemplar images.

What is trained differs per baseline (a text-encoder copy, new token rows, LoRA matrices); all
of them reach the loss through `encode(texts) -> prompt_embeds` and the UNet, so one loop serves
all three. Targets follow the scheduler's `prediction_type` (epsilon or v-prediction), seeds
work as in RRNet's training (one generator for posteriors, noise and timesteps; a seeded
shuffle).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rrnet.baselines.checkpoint import discard_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import Exemplar
from rrnet.baselines.pipeline_state import check_no_backbone_gradients
from rrnet.errors import RRNetError
from rrnet.losses import denoising_target, sample_timestep
from rrnet.mixed_precision import backward_and_step, gradient_scaler
from rrnet.tokens import tokenize_prompt
from rrnet.train import unet_predict

Encoder = Callable[[list[str]], torch.Tensor]
"""Texts -> prompt embeddings (B, L, D), with gradients into whatever is being trained."""

LOG_NAME = "train_log.jsonl"


def token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    """Padded ids as diffusers' `encode_prompt` makes them; an over-long prompt is a PromptError."""
    return torch.tensor([tokenize_prompt(tokenizer, text).input_ids for text in texts])


def encode_ids(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    """Last hidden state, as `StableDiffusionPipeline.encode_prompt` uses it (no clip skip)."""
    return text_encoder(ids.to(text_encoder.device))[0]


def denoising_loss(
    pipe, batch: list[Exemplar], encode: Encoder, noise_scheduler, config: BaselineConfig, generator: torch.Generator
) -> torch.Tensor:
    """MSE between the UNet's prediction and the true noise (or velocity), one timestep per image."""
    device = pipe.unet.device
    latents = torch.stack([e.sample(generator) for e in batch]).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    steps = noise_scheduler.config.num_train_timesteps
    t = torch.cat([sample_timestep(steps, generator, config.importance_sampling) for _ in batch]).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    target = denoising_target(noise_scheduler, latents, noise, t)
    pred = unet_predict(pipe, noisy, t, encode([e.text for e in batch]))
    return F.mse_loss(pred, target.float())


def _epoch(pipe, exemplars, encode, optimizer, scaler, noise_scheduler, config, generator, picker, desc) -> dict:
    """One pass over the exemplars in a seeded random order; returns the step losses and their mean."""
    order = list(range(len(exemplars)))
    picker.shuffle(order)
    losses = []
    for start in range(0, len(order), config.batch_size):
        batch = [exemplars[i] for i in order[start : start + config.batch_size]]
        loss = denoising_loss(pipe, batch, encode, noise_scheduler, config, generator)
        value = loss.item()
        if not math.isfinite(value):
            raise RRNetError(f"{desc}: training stopped, the loss became {value}; no checkpoint was written. "
                             "Try a lower --learning_rate")
        backward_and_step(loss, optimizer, scaler)
        losses.append(value)
    return {"loss": sum(losses) / len(losses), "losses": losses}


def fit(
    pipe,
    exemplars: list[Exemplar],
    encode: Encoder,
    parameters: list[torch.nn.Parameter],
    config: BaselineConfig,
    learning_rate: float,
    output_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "baseline",
) -> list[dict]:
    """AdamW on `parameters` for `config.epochs` passes over the exemplars; one log line per epoch.

    The caller has frozen the backbone and seeded the parameters' initialisation; the loop owns
    the data order, posteriors, noise and timesteps, all drawn from `config.seed`.
    """
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=config.weight_decay)
    scaler = gradient_scaler(pipe)
    generator = torch.Generator().manual_seed(config.seed)
    picker = random.Random(config.seed)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        discard_record(output_dir)
    history: list[dict] = []
    bar = tqdm(range(config.epochs), desc=desc, disable=not progress)
    log_path = Path(output_dir) / LOG_NAME if output_dir is not None else None
    with open(log_path, "w", encoding="utf-8") if log_path else nullcontext() as log_file:
        try:
            for epoch in bar:
                record = _epoch(pipe, exemplars, encode, optimizer, scaler, noise_scheduler, config, generator, picker,
                                desc)
                record = {"epoch": epoch + 1, **record}
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
        finally:
            optimizer.zero_grad(set_to_none=True)
    check_no_backbone_gradients(pipe, parameters)
    return history
