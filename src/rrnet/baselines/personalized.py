"""Personalized diffusion (paper, Table 1): the whole text encoder fine-tuned on the exemplars.

A copy of the text encoder is trained in fp32 with the plain denoising loss, the prompt's images
under the prompt and the swapped prompt's images under the swapped prompt; UNet and VAE stay
frozen and the pipeline's own text encoder is never touched. The result is an ordinary
transformers folder (`text_encoder/`: config.json + model.safetensors), so it also drops into a
diffusers model folder in place of the original.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rrnet.atomic import atomic_write_folder
from rrnet.baselines.checkpoint import read_record, write_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import prepare_exemplars
from rrnet.baselines.loop import baseline_identity, encode_ids, fit, token_ids
from rrnet.baselines.pipeline_state import frozen_backbone
from rrnet.data import RelationSpec
from rrnet.resume import Checkpointing
from rrnet.errors import CheckpointError

KIND = "personalized"
TEXT_ENCODER_FOLDER = "text_encoder"


def train_personalized(
    pipe,
    spec: RelationSpec,
    config: BaselineConfig | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    model_id: str | None = None,
    checkpointing: Checkpointing | None = None,
) -> tuple[torch.nn.Module, list[dict]]:
    """Fine-tune a copy of the text encoder; returns it (eval mode) and the per-epoch history."""
    config = config or BaselineConfig()
    config.check()
    with frozen_backbone(pipe):
        exemplars = prepare_exemplars(pipe, spec, config)
        tuned = copy.deepcopy(pipe.text_encoder).float().requires_grad_(True).train()
        tokenizer = pipe.tokenizer

        def encode(texts: list[str]) -> torch.Tensor:
            return encode_ids(tuned, token_ids(tokenizer, texts))

        history = fit(pipe, exemplars, encode, list(tuned.parameters()), config, config.rate(KIND),
                      output_dir, progress, desc=KIND, checkpointing=checkpointing,
                      identity=baseline_identity(KIND, pipe, spec, config, model_id))
    tuned.eval().requires_grad_(False)
    if output_dir is not None:
        atomic_write_folder(Path(output_dir) / TEXT_ENCODER_FOLDER, tuned.save_pretrained)
        write_record(output_dir, KIND, pipe, spec, config, history, model_id, text_encoder=TEXT_ENCODER_FOLDER)
    return tuned, history


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
