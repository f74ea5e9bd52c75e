"""The one training loop of the baselines: the plain denoising loss on the exemplar images.

What is trained differs per baseline (a text-encoder copy, new token rows, LoRA matrices); all
of them reach the loss through `encode(texts) -> prompt_embeds` and the UNet, so one loop serves
all three. Targets follow the scheduler's `prediction_type` (epsilon or v-prediction), seeds
work as in RRNet's training (one generator for posteriors, noise and timesteps; a seeded
shuffle).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rrnet.backbones.denoising import unet_predict
from rrnet.backbones.loading import model_key
from rrnet.baselines.checkpoint import RECORD_NAME, discard_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import Exemplar
from rrnet.baselines.pipeline_state import check_no_backbone_gradients
from rrnet.data import RelationSpec
from rrnet.errors import CheckpointError, RRNetError
from rrnet.locking import output_lock
from rrnet.losses import denoising_target, sample_timestep
from rrnet.mixed_precision import backward_and_step, gradient_scaler
from rrnet.resume import Checkpointer, Checkpointing, RunLog, images_digest, start_output, stop_requests, training_rng
from rrnet.tokens import tokenize_prompt

Encoder = Callable[[list[str]], torch.Tensor]
"""Texts -> prompt embeddings (B, L, D), with gradients into whatever is being trained."""

LOG_NAME = "train_log.jsonl"  # the same name RRNet's training writes (rrnet.resume.LOG_NAME)


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


def baseline_identity(kind: str, pipe, spec: RelationSpec, config: BaselineConfig, model_id: str | None) -> dict:
    """What a baseline checkpoint must agree with to be resumed: settings, relation, images, model."""
    from dataclasses import asdict

    images = [*spec.images_prompt, *spec.images_swapped]
    settings = {k: v for k, v in asdict(config).items() if k != "epochs"}
    return {"kind": f"baseline-{kind}", "config": {**settings, "learning_rate": config.rate(kind)},
            "relation": {"words": [spec.object_a, spec.relation, spec.object_b],
                         "prompts": [spec.prompt, spec.swapped_prompt], "images": images_digest(images)},
            "model": model_key(model_id), "dtype": str(pipe.unet.dtype)}


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
    checkpointing: Checkpointing | None = None,
    identity: dict | None = None,
) -> list[dict]:
    """AdamW on `parameters` for `config.epochs` passes over the exemplars; one log line per epoch.

    The caller has frozen the backbone and seeded the parameters' initialisation; the loop owns
    the data order, posteriors, noise and timesteps, all drawn from `config.seed`. With an output
    folder, `checkpointing` writes `checkpoint-N/` folders (and one on Ctrl-C) and resumes from one
    to the same parameters an uninterrupted run ends with.
    """
    checkpointing = checkpointing or Checkpointing()
    with output_lock(output_dir):
        return _fit_locked(pipe, exemplars, encode, parameters, config, learning_rate, output_dir, progress, desc,
                           checkpointing, identity)


def _fit_locked(pipe, exemplars, encode, parameters, config, learning_rate, output_dir, progress, desc, checkpointing,
                identity) -> list[dict]:
    from diffusers import DDPMScheduler

    resume = None
    if output_dir is not None:
        finished = (Path(output_dir) / RECORD_NAME).is_file()
        resume = start_output(output_dir, checkpointing, finished, lambda: discard_record(output_dir),
                              f"{desc} baseline")
    elif checkpointing.every or checkpointing.resume_from:
        raise RRNetError("checkpointing and resuming need an output folder")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=config.weight_decay)
    scaler = gradient_scaler(pipe)
    generator = torch.Generator().manual_seed(config.seed)
    picker = random.Random(config.seed)
    trained = torch.nn.ParameterList(parameters)
    with training_rng(config.seed, pipe.unet.device), stop_requests() as stop:
        saver = Checkpointer(output_dir, checkpointing, identity or {"kind": desc}, {"trained": trained}, optimizer,
                             scaler, {"train": generator}, {"picker": picker}, stop)
        # step: optimiser steps done; epoch: epochs done; position: batches done in the current epoch
        state: dict = {"step": 0, "epoch": 0, "position": 0, "order": None, "losses": None, "history": []}
        if resume is not None:
            state = saver.load(resume)
            if state["epoch"] > config.epochs:
                raise CheckpointError(f"{resume}: the run is past epoch {state['epoch']}, beyond --epochs {config.epochs}")
        log = RunLog(output_dir, state["history"]) if output_dir is not None else None
        bar = tqdm(range(state["epoch"], config.epochs), desc=desc, disable=not progress, initial=state["epoch"],
                   total=config.epochs)
        try:
            for epoch in bar:
                if state["position"] == 0:
                    order = list(range(len(exemplars)))
                    picker.shuffle(order)
                    state["order"], state["losses"] = order, []
                order = state["order"]
                batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
                for index in range(state["position"], len(batches)):
                    batch = [exemplars[i] for i in batches[index]]
                    loss = denoising_loss(pipe, batch, encode, noise_scheduler, config, generator)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise RRNetError(f"{desc}: training stopped, the loss became {value} at step "
                                         f"{state['step'] + 1}; no checkpoint was written. Try a lower --learning_rate")
                    backward_and_step(loss, optimizer, scaler)
                    state["losses"].append(value)
                    state["step"] += 1
                    state["position"] = index + 1
                    saver.after_step(state)
                losses = state["losses"]
                record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "losses": losses}
                state["history"].append(record)
                state.update(epoch=epoch + 1, position=0, order=None, losses=None)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                if log is not None:
                    log.write(record)
        finally:
            optimizer.zero_grad(set_to_none=True)
            if log is not None:
                log.close()
    check_no_backbone_gradients(pipe, parameters)
    return state["history"]
