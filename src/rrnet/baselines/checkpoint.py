"""Baseline checkpoint folders: weights in the formats diffusers loads, and `baseline.json`.

`baseline.json` is written last, so a folder holding it is complete; it names the kind, the
relation, the backbone and the training settings, and is what the evaluation methods look for.
Everything is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rrnet.atomic import atomic_write_text
from rrnet.backbones.denoising import default_resolution
from rrnet.baselines.config import BaselineConfig
from rrnet.data import RelationSpec
from rrnet.errors import CheckpointError

RECORD_NAME = "baseline.json"
FORMAT = "rrnet-baseline"
VERSION = 1


def discard_record(output_dir: str | Path) -> None:
    """A run starting in `output_dir` first removes its old `baseline.json`: until the new one is
    written, the folder must not look like a finished checkpoint."""
    (Path(output_dir) / RECORD_NAME).unlink(missing_ok=True)


def write_record(
    output_dir: str | Path,
    kind: str,
    pipe,
    spec: RelationSpec,
    config: BaselineConfig,
    history: list[dict],
    model_id: str | None = None,
    **extra: Any,
) -> Path:
    """Write `baseline.json` (last, atomically): what was trained, on what, and how."""
    record = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "relation": {
            "name": spec.name,
            "object_a": spec.object_a,
            "relation": spec.relation,
            "object_b": spec.object_b,
            "prompt": spec.prompt,
            "swapped_prompt": spec.swapped_prompt,
        },
        "backbone": model_id,
        "backbone_dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "training": {
            **asdict(config),
            "learning_rate": config.rate(kind),
            "resolution": config.resolution or default_resolution(pipe),
        },
        "final_loss": history[-1]["loss"] if history else None,
        **extra,
    }
    return atomic_write_text(Path(output_dir) / RECORD_NAME, json.dumps(record, indent=2) + "\n")


def read_record(folder: str | Path, kind: str) -> dict[str, Any]:
    """`baseline.json` of a checkpoint folder, checked to be a baseline of `kind`."""
    path = Path(folder) / RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found; not a baseline checkpoint folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({' '.join(str(exc).split())})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rrnet baseline record")
    if record.get("kind") != kind:
        raise CheckpointError(f"{path}: a {record.get('kind')!r} checkpoint, expected {kind!r}")
    return record
