"""A tiny Stable-Diffusion-shaped backbone with random weights, saved as a normal diffusers folder.

It has SD's real tokenizer (from the CLIP BPE file) and SD's component classes, only very small,
so tests and examples exercise exactly the code paths a real SD 1.x / 2.x model does, on a CPU,
without any download. `build_tiny_sdxl_pipeline` does the same for SDXL.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rrnet.atomic import atomic_write_folder
from rrnet.backbones.clip_vocab import clip_tokenizer
from rrnet.backbones.shapes import SHAPES, build_pipeline_from_shape

TINY_RESOLUTION = SHAPES["tiny"].resolution


def build_tiny_pipeline(seed: int = 0, sd_version: int = 2, prediction_type: str = "epsilon"):
    """Build a randomly initialised `StableDiffusionPipeline` (SD-2 pads with "!", SD-1 with EOT)."""
    tokenizer = clip_tokenizer(pad_token="!" if sd_version == 2 else "<|endoftext|>")
    return build_pipeline_from_shape(SHAPES["tiny"], tokenizer, seed, prediction_type, sd_version)


def build_tiny_sdxl_pipeline(seed: int = 0, force_zeros_for_empty_prompt: bool = True):
    """A randomly initialised `StableDiffusionXLPipeline` with SDXL's parts, very small.

    Two CLIP encoders of different widths (32 and 48; the second a `CLIPTextModelWithProjection`
    projecting to 40), so a slice taken from the wrong encoder or width fails loudly; tokenizer 1
    pads with the EOT token, tokenizer 2 with "!" (as SDXL's do); a UNet with cross-attention on
    both encoders' states and `addition_embed_type="text_time"` (pooled embedding + time ids).
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = clip_tokenizer(pad_token="<|endoftext|>"), clip_tokenizer(pad_token="!")

    def text_config(width: int, projection: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="gelu",
            projection_dim=projection,
        )

    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config(32, 32))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(48, 40))
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 16), norm_num_groups=8, sample_size=TINY_RESOLUTION,
        )
        time_embed = 8
        unet = UNet2DConditionModel(
            sample_size=TINY_RESOLUTION // 2, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32 + 48,
            attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
            addition_embed_type="text_time", addition_time_embed_dim=time_embed,
            projection_class_embeddings_input_dim=6 * time_embed + 40,
        )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
            steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
        )
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=False,
    )


def save_pipeline_atomic(pipeline, out_dir: str | Path) -> Path:
    """`save_pretrained` into a temporary sibling folder, then rename: never a half-written model."""
    return atomic_write_folder(out_dir, lambda tmp: pipeline.save_pretrained(tmp, safe_serialization=True))


def build_tiny_backbone(
    out_dir: str | Path, seed: int = 0, sd_version: int = 2, prediction_type: str = "epsilon", sdxl: bool = False
) -> Path:
    """Write a tiny random backbone that `StableDiffusionPipeline.from_pretrained` loads
    (`sdxl=True`: a `StableDiffusionXLPipeline` folder; `sd_version` and `prediction_type` do not apply)."""
    if sdxl:
        return save_pipeline_atomic(build_tiny_sdxl_pipeline(seed=seed), out_dir)
    pipeline = build_tiny_pipeline(seed=seed, sd_version=sd_version, prediction_type=prediction_type)
    return save_pipeline_atomic(pipeline, out_dir)
