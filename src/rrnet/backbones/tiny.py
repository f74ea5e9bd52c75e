"""A tiny Stable-Diffusion-shaped backbone with random weights, saved as a normal diffusers folder.

It has SD's real tokenizer (from the CLIP BPE file) and SD's component classes, only very small,
so tests and examples exercise exactly the code paths a real SD 1.x / 2.x model does, on a CPU,
without any download.
"""

from __future__ import annotations

from pathlib import Path

from rrnet.atomic import atomic_write_folder
from rrnet.backbones.clip_vocab import clip_tokenizer
from rrnet.backbones.shapes import SHAPES, build_pipeline_from_shape

TINY_RESOLUTION = SHAPES["tiny"].resolution


def build_tiny_pipeline(seed: int = 0, sd_version: int = 2, prediction_type: str = "epsilon"):
    """Build a randomly initialised `StableDiffusionPipeline` (SD-2 pads with "!", SD-1 with EOT)."""
    tokenizer = clip_tokenizer(pad_token="!" if sd_version == 2 else "<|endoftext|>")
    return build_pipeline_from_shape(SHAPES["tiny"], tokenizer, seed, prediction_type, sd_version)


def save_pipeline_atomic(pipeline, out_dir: str | Path) -> Path:
    """`save_pretrained` into a temporary sibling folder, then rename: never a half-written model."""
    return atomic_write_folder(out_dir, lambda tmp: pipeline.save_pretrained(tmp, safe_serialization=True))


def build_tiny_backbone(
    out_dir: str | Path, seed: int = 0, sd_version: int = 2, prediction_type: str = "epsilon"
) -> Path:
    """Write a tiny random backbone that `StableDiffusionPipeline.from_pretrained` loads."""
    pipeline = build_tiny_pipeline(seed=seed, sd_version=sd_version, prediction_type=prediction_type)
    return save_pipeline_atomic(pipeline, out_dir)
