"""Personalized diffusion (paper, Table 1): how a tuned text encoder is applied to a pipeline.

The checkpoint holds an ordinary transformers folder (`text_encoder/`: config.json +
model.safetensors), so it also drops into a diffusers model folder in place of the original;
inside `personalized_applied` the pipeline's text encoder holds the tuned weights. Training
lives in `rrnet.baselines.personalized_training`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rrnet.baselines.checkpoint import read_record
from rrnet.errors import CheckpointError

KIND = "personalized"
TEXT_ENCODER_FOLDER = "text_encoder"


def load_tuned_text_encoder(folder: str | Path, like: torch.nn.Module) -> torch.nn.Module:
    """The tuned text encoder of a checkpoint (fp32, CPU), checked to fit the model `like`."""
    path = Path(folder) / TEXT_ENCODER_FOLDER
    if not path.is_dir():
        raise CheckpointError(f"{path}: tuned text encoder folder not found")
    try:
        tuned = type(like).from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot load the tuned text encoder ({first})") from None
    ours, theirs = like.state_dict(), tuned.state_dict()
    wrong = sorted(set(ours) ^ set(theirs)) or [k for k in ours if ours[k].shape != theirs[k].shape]
    if wrong:
        raise CheckpointError(f"{path}: text encoder does not fit this model (differs at {wrong[0]!r})")
    return tuned


@contextmanager
def personalized_applied(pipe, folder: str | Path) -> Iterator[None]:
    """The pipeline's text encoder holds the tuned weights inside the block, its own after."""
    read_record(folder, KIND)
    tuned = load_tuned_text_encoder(folder, pipe.text_encoder)
    text_encoder = pipe.text_encoder
    original = {k: v.detach().to("cpu", copy=True) for k, v in text_encoder.state_dict().items()}
    text_encoder.load_state_dict(tuned.state_dict())
    del tuned
    try:
        yield
    finally:
        text_encoder.load_state_dict(original)
