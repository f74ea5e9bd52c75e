"""`train_baseline`: one entry point for the three baselines, picked by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rrnet.baselines.config import BaselineConfig, normalize_kind
from rrnet.data import RelationSpec

if TYPE_CHECKING:
    from rrnet.resume import Checkpointing


def _trainers() -> dict[str, Callable[..., tuple[Any, list[dict]]]]:
    from rrnet.baselines.lora_training import train_lora
    from rrnet.baselines.personalized_training import train_personalized
    from rrnet.baselines.textual_inversion_training import train_textual_inversion

    return {"personalized": train_personalized, "textual_inversion": train_textual_inversion, "lora": train_lora}


def train_baseline(
    kind: str,
    pipe,
    spec: RelationSpec,
    config: BaselineConfig | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    model_id: str | None = None,
    checkpointing: Checkpointing | None = None,
) -> tuple[Any, list[dict]]:
    """Train baseline `kind` ("personalized", "textual_inversion"/"textual-inversion", "lora") on one relation.

    Returns what was learned (the tuned text encoder / {token: vector} / the LoRA state dict) and
    the per-epoch history; with `output_dir`, writes the checkpoint folder and `train_log.jsonl`
    (and `checkpoint-N/` training states as `checkpointing` asks; it can resume from one).
    The pipeline is handed back unchanged.
    """
    from rrnet.backbones.sdxl import refuse_sdxl
    from rrnet.locking import output_lock

    refuse_sdxl(pipe, "baseline training")
    trainer = _trainers()[normalize_kind(kind)]
    with output_lock(output_dir):  # one writer per folder, from the first file to baseline.json
        return trainer(pipe, spec, config, output_dir, progress=progress, model_id=model_id, checkpointing=checkpointing)
