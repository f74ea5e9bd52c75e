"""The mini world's autoencoder and denoiser: diffusers `AutoencoderKL` and `UNet2DConditionModel`.

Both are trained from scratch on rendered scenes with resumable loops (checkpoints in
safetensors + JSON). The UNet is conditioned through cross-attention and, strongly, through
`addition_embed_type="text"`: an attention-pooled summary of the text states added to the
timestep embedding (scale/shift of every ResBlock), so a change at the EOT reaches every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rrnet.training_state import has_state, load_state, save_state
from rrnet.world.corpus import Corpus, sample_batch
from rrnet.world.recipe import WorldRecipe


def build_vae(recipe: WorldRecipe):
    from diffusers import AutoencoderKL

    n = len(recipe.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=recipe.vae_channels, norm_num_groups=16, sample_size=recipe.size,
        mid_block_add_attention=False,
    )


def build_unet(recipe: WorldRecipe, latent_size: int):
    from diffusers import UNet2DConditionModel

    n = len(recipe.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=recipe.unet_channels, down_block_types=down, up_block_types=up,
        cross_attention_dim=recipe.text_width, attention_head_dim=4, norm_num_groups=16,
        addition_embed_type="text", addition_embed_type_num_heads=4,
    )


def shifted_cosine_betas(recipe: WorldRecipe, steps: int = 1000) -> list[float]:
    """Cosine schedule with every SNR multiplied by `snr_shift`, as explicit betas for the scheduler."""
    s = 0.008
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = (f[1:] / f[0]).clamp(1e-9, 1.0)
    snr = alpha_bar / (1 - alpha_bar).clamp(min=1e-12) * recipe.snr_shift
    shifted = snr / (1 + snr)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), shifted[:-1]])
    return (1 - shifted / prev).clamp(0, 0.999).tolist()


def make_scheduler(recipe: WorldRecipe):
    """The sampler the model folder carries, on the training schedule (explicit betas, v-prediction,
    trailing timesteps): DDIM, or DDPM's ancestral steps (DDIM with eta = 1), whose fresh noise at
    every step lets the denoiser correct a malformed object that a deterministic path keeps."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=1000, trained_betas=shifted_cosine_betas(recipe), prediction_type="v_prediction",
                  timestep_spacing="trailing", clip_sample=False, steps_offset=1)
    if recipe.sampler == "ddpm":
        return DDPMScheduler(**common)
    return DDIMScheduler(**common, set_alpha_to_one=False)


def _lr_at(step: int, base: float, warmup: int, total: int | None = None, decay_from: float = 1.0) -> float:
    """Linear warm-up, constant, then cosine decay to zero over the last (1 - decay_from) of `total`."""
    lr = base * min(1.0, (step + 1) / max(1, warmup))
    if total is not None and decay_from < 1.0:
        start = decay_from * total
        if step >= start:
            lr *= 0.5 * (1.0 + math.cos(math.pi * (step - start) / max(1.0, total - start)))
    return lr


def train_vae(recipe: WorldRecipe, work: Path, progress: bool = True):
    """Train the autoencoder on rendered scenes; resumes from `work/vae_state` if present."""
    vae = build_vae(recipe)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(recipe.seed + 1)
    torch.manual_seed(recipe.seed + 1)
    ckpt, step = work / "vae_state", 0
    if has_state(ckpt):
        step = load_state(ckpt, {"vae": vae}, optimizer, rng)["step"]
    corpus = Corpus.build(recipe)
    bar = tqdm(range(step, recipe.vae_steps), desc="autoencoder", initial=step, total=recipe.vae_steps, disable=not progress)
    for step in bar:
        images, _ = sample_batch(recipe, rng, recipe.vae_batch, corpus)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon, images)
        loss = mse + recipe.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(mse=f"{mse.item():.4f}")
        if (step + 1) % recipe.checkpoint_every == 0:
            save_state(ckpt, {"vae": vae}, optimizer, step + 1, rng)
    vae.eval().requires_grad_(False)
    fix_posterior_std(vae)
    with torch.no_grad():  # unit-variance latents, as SD's scaling factor gives
        images, _ = sample_batch(recipe, np.random.default_rng(recipe.seed + 2), 256, corpus)
        std = vae.encode(images).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae


POSTERIOR_LOGVAR = -12.0


@torch.no_grad()
def fix_posterior_std(vae, logvar: float = POSTERIOR_LOGVAR) -> None:
    """Make the posterior's std a tiny constant (exp(logvar / 2) ~ 0.0025).

    Trained with sampling and a near-zero KL weight, the encoder leaves its std near 1 and the
    decoder simply learns to ignore the noise. Diffusion training and exemplar encoding should
    see the posterior means, so the log-variance half of `quant_conv` is set to a constant.
    """
    conv = vae.quant_conv
    half = conv.out_channels // 2
    conv.weight[half:] = 0.0
    conv.bias[half:] = logvar


@torch.no_grad()
def caption_states(text_encoder, tokenizer, captions: list[str]) -> torch.Tensor:
    """Frozen text-encoder outputs (B, 77, D) of a batch of captions (cheap next to the UNet step)."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids).last_hidden_state


@dataclass(frozen=True)
class DenoiserPhase:
    """One resumable stretch of denoiser training: its checkpoint, length, schedule and seeds."""

    checkpoint: str
    steps: int
    lr: float
    warmup: int
    decay_from: float  # cosine decay over the last (1 - decay_from) of the steps
    seed: int  # torch stream (noise, timesteps); numpy stream (scenes) is seed + 1
    collapsed_rate: float = 0.0
    desc: str = "denoiser"


def first_phase(recipe: WorldRecipe) -> DenoiserPhase:
    return DenoiserPhase("unet_state", recipe.unet_steps, recipe.unet_lr, recipe.unet_warmup, recipe.unet_decay_from, recipe.seed + 3)


def tuning_phase(recipe: WorldRecipe) -> DenoiserPhase:
    return DenoiserPhase("unet_tune_state", recipe.tune_steps, recipe.tune_lr, recipe.unet_warmup // 2, 0.0, recipe.seed + 5,
                         recipe.tune_collapsed_rate, "denoiser, collapsed scenes")


def train_unet(recipe: WorldRecipe, vae, text_encoder, tokenizer, work: Path, progress: bool = True, start=None,
               phase: DenoiserPhase | None = None):
    """Train the denoiser (v-prediction) on VAE latents; EMA weights are returned. Resumable.

    The first phase starts from random weights; a later `phase` starts from `start` (the previous
    phase's EMA weights) with a fresh optimiser and EMA."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    phase = phase or first_phase(recipe)
    latent_size = recipe.size // (2 ** (len(recipe.vae_channels) - 1))
    torch.manual_seed(phase.seed)
    unet, ema_unet = build_unet(recipe, latent_size), build_unet(recipe, latent_size)
    if start is not None:
        unet.load_state_dict(start.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=phase.lr, weight_decay=0.01)
    rng = np.random.default_rng(phase.seed + 1)
    ckpt, step = work / phase.checkpoint, 0
    ema = EMAModel(unet.parameters(), decay=recipe.ema_decay)
    if has_state(ckpt):
        meta = load_state(ckpt, {"unet": unet, "ema": ema_unet}, optimizer, rng)
        step = meta["step"]
        ema = EMAModel(ema_unet.parameters(), decay=recipe.ema_decay)
        ema.optimization_step = meta["extra"]["ema_step"]
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, trained_betas=shifted_cosine_betas(recipe), prediction_type="v_prediction")
    corpus = Corpus.build(recipe)
    scale = vae.config.scaling_factor
    bar = tqdm(range(step, phase.steps), desc=phase.desc, initial=step, total=phase.steps, disable=not progress)
    unet.train()
    for step in bar:
        images, captions = sample_batch(recipe, rng, recipe.unet_batch, corpus, phase.collapsed_rate)
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample() * scale
        cond = caption_states(text_encoder, tokenizer, captions)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (len(latents),))
        pred = unet(noise_scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise_scheduler.get_velocity(latents, noise, t))
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, phase.lr, phase.warmup, phase.steps, phase.decay_from)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema.step(unet.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == phase.steps:
            ema.copy_to(ema_unet.parameters())
            save_state(ckpt, {"unet": unet, "ema": ema_unet}, optimizer, step + 1, rng, {"ema_step": ema.optimization_step})
    ema.copy_to(ema_unet.parameters())
    return ema_unet.eval().requires_grad_(False)
