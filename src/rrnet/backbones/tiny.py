"""A tiny Stable-Diffusion-shaped backbone with random weights, saved as a normal diffusers folder.

It has SD's real tokenizer (from the CLIP BPE file) and SD's component classes, only very small,
so tests and examples exercise exactly the code paths a real SD 1.x / 2.x model does, on a CPU,
without any download.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from rrnet.backbones.clip_vocab import clip_tokenizer

TINY_RESOLUTION = 32


def build_tiny_pipeline(
    seed: int = 0, sd_version: int = 2, prediction_type: str = "epsilon", text_width: int = 32
):
    """Build a randomly initialised `StableDiffusionPipeline` (SD-2 pads with "!", SD-1 with EOT)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(pad_token="!" if sd_version == 2 else "<|endoftext|>")
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_width,
        intermediate_size=2 * text_width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
        projection_dim=text_width,
    )
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_width,
        attention_head_dim=(2, 4) if sd_version == 2 else 8,
        use_linear_projection=sd_version == 2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pipeline_atomic(pipeline, out_dir: str | Path) -> Path:
    """`save_pretrained` into a temporary sibling folder, then rename: never a half-written model."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        pipeline.save_pretrained(tmp, safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def build_tiny_backbone(
    out_dir: str | Path, seed: int = 0, sd_version: int = 2, prediction_type: str = "epsilon"
) -> Path:
    """Write a tiny random backbone that `StableDiffusionPipeline.from_pretrained` loads."""
    pipeline = build_tiny_pipeline(seed=seed, sd_version=sd_version, prediction_type=prediction_type)
    return save_pipeline_atomic(pipeline, out_dir)
