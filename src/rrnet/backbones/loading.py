"""Loading any Stable Diffusion model that diffusers can load, with clear errors for bad input."""

from __future__ import annotations

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


def load_pipeline(model: str, device: str | None = None, mixed_precision: str = "no", progress: bool = True):
    """`StableDiffusionPipeline.from_pretrained` (hub id or local folder) on `device`.

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
        from diffusers import StableDiffusionPipeline

        # safetensors only: a pickled .bin in a model folder is never unpickled
        pipe = StableDiffusionPipeline.from_pretrained(model, dtype=DTYPES[mixed_precision], use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RRNetError(f"could not load model {model!r}: {first}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    pipe = pipe.to(device or default_device())
    pipe.set_progress_bar_config(disable=True)
    return pipe
