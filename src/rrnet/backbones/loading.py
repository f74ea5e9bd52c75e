"""Loading any Stable Diffusion model that diffusers can load (SD 1.x / 2.x, SDXL), with clear
errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rrnet.errors import RRNetError

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_key(model_id: str | None) -> str | None:
    """A model as a run's identity records it: a local folder by its resolved path (so a resumed
    run finds it from any working directory), a hub id as given."""
    if model_id is not None and Path(model_id).exists():
        return str(Path(model_id).resolve())
    return model_id


def pipeline_class_name(model: str) -> str | None:
    """The pipeline class a model's `model_index.json` names (None when it cannot be read)."""
    path = Path(model)
    try:
        if path.exists():
            return json.loads((path / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.load_config(model).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


def pipeline_class(model: str):
    """`StableDiffusionXLPipeline` for a model whose index names it, else `StableDiffusionPipeline`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from rrnet.backbones.sdxl import SDXL_CLASS

    return StableDiffusionXLPipeline if pipeline_class_name(model) == SDXL_CLASS else StableDiffusionPipeline


def load_pipeline(model: str, device: str | None = None, mixed_precision: str = "no", progress: bool = True):
    """`StableDiffusionPipeline.from_pretrained` (hub id or local folder) on `device`; an SDXL
    model (its `model_index.json` names `StableDiffusionXLPipeline`) loads as that class.

    `mixed_precision` sets the dtype of the frozen models; a rectifier always runs in fp32.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        (lib.enable_progress_bar if progress else lib.disable_progress_bar)()

    if mixed_precision not in DTYPES:
        raise RRNetError(f"--mixed_precision must be one of {', '.join(DTYPES)}, got {mixed_precision!r}")
    path = Path(model)
    if path.exists() and not (path / "model_index.json").is_file():
        raise RRNetError(f"{model}: not a diffusers model folder (no model_index.json)")
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # diffusers imports image-processor classes; their torchvision notes are noise here
    try:
        # safetensors only: a pickled .bin in a model folder is never unpickled
        pipe = pipeline_class(model).from_pretrained(model, dtype=DTYPES[mixed_precision], use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RRNetError(f"could not load model {model!r}: {first}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    pipe = pipe.to(device or default_device())
    pipe.set_progress_bar_config(disable=True)
    return pipe
