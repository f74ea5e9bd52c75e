"""Personalized diffusion (paper, Table 1): training the whole text encoder on the exemplars.

A copy of the text encoder is trained in fp32 with the plain denoising loss, the prompt's images
under the prompt and the swapped prompt's images under the swapped prompt; UNet and VAE stay
frozen and the pipeline's own text encoder is never touched. The result is saved as the
transformers folder `rrnet.baselines.personalized` applies.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from rrnet.atomic import atomic_write_folder
from rrnet.baselines.checkpoint import write_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import prepare_exemplars
from rrnet.baselines.loop import baseline_identity, encode_ids, fit, token_ids
from rrnet.baselines.personalized import KIND, TEXT_ENCODER_FOLDER
from rrnet.baselines.pipeline_state import frozen_backbone
from rrnet.data import RelationSpec
from rrnet.resume import Checkpointing


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
