"""Stable-Diffusion-shaped pipelines with random weights, from a named shape.

Speed and memory do not depend on weight values, so benchmarks build the real SD 2.1-base
architecture (or a scaled-down one) from its known configuration instead of downloading it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BackboneShape:
    """Sizes of an SD-2-style backbone (UNet with cross-attention, CLIP text encoder, KL VAE)."""

    resolution: int
    unet_channels: tuple[int, ...]
    head_dims: tuple[int, ...] | int
    layers_per_block: int
    text_width: int
    text_layers: int
    text_heads: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    norm_groups: int = 32
    cross_attn_levels: int | None = None  # None: every level but the last has cross-attention


SHAPES: dict[str, BackboneShape] = {
    "tiny": BackboneShape(32, (16, 32), (2, 4), 1, 32, 2, 4, (8, 16), 1, norm_groups=8, cross_attn_levels=1),
    # SD 2.1-base with every width divided by 4, at 256 px: the same layout, CPU-sized
    "mid": BackboneShape(256, (80, 160, 320, 320), (5, 10, 20, 20), 2, 256, 23, 4, (32, 64, 128, 128), 2, norm_groups=16),
    "sd21-base": BackboneShape(512, (320, 640, 1280, 1280), (5, 10, 20, 20), 2, 1024, 23, 16, (128, 256, 512, 512), 2),
}


def _unet_blocks(n: int, cross: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    down = tuple("CrossAttnDownBlock2D" if i < cross else "DownBlock2D" for i in range(n))
    up = tuple(reversed(tuple(b.replace("Down", "Up") for b in down)))
    return down, up


def build_pipeline_from_shape(
    shape: BackboneShape, tokenizer, seed: int = 0, prediction_type: str = "epsilon", sd_version: int = 2
):
    """A `StableDiffusionPipeline` of the given shape with random weights and a PNDM scheduler."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=shape.text_width, intermediate_size=4 * shape.text_width if shape.text_width > 64 else 2 * shape.text_width,
            num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads, max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            hidden_act="gelu", projection_dim=shape.text_width,
        ))
        n_vae = len(shape.vae_channels)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=shape.vae_layers,
            down_block_types=("DownEncoderBlock2D",) * n_vae, up_block_types=("UpDecoderBlock2D",) * n_vae,
            block_out_channels=shape.vae_channels, norm_num_groups=shape.norm_groups, sample_size=shape.resolution,
        )
        n = len(shape.unet_channels)
        down, up = _unet_blocks(n, n - 1 if shape.cross_attn_levels is None else shape.cross_attn_levels)
        unet = UNet2DConditionModel(
            sample_size=shape.resolution // 2 ** (n_vae - 1), in_channels=4, out_channels=4,
            layers_per_block=shape.layers_per_block, block_out_channels=shape.unet_channels,
            down_block_types=down, up_block_types=up, cross_attention_dim=shape.text_width,
            attention_head_dim=shape.head_dims if sd_version == 2 else 8, use_linear_projection=sd_version == 2,
            norm_num_groups=shape.norm_groups,
        )
        scheduler = PNDMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
        )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
