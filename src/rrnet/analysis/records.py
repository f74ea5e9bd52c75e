"""Shared output plumbing of the analyses: JSON records and per-variant image folders.

Every analysis writes the same predictable layout as `rrnet generate`:
`{output_dir}/{index}_{prompt_slug}/{variant}/{k:03d}.png`, a `grid.png` and one JSON record,
each file written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from rrnet.atomic import atomic_write_text
from rrnet.data import save_image_atomic
from rrnet.generate import GenerationSettings


def write_json(path: str | Path, record: dict) -> Path:
    """Indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def sampling_record(settings: GenerationSettings) -> dict:
    """The sampling settings that matter for a fixed-conditioning experiment (no alphas)."""
    record = asdict(settings)
    record.pop("alphas")
    return record


def save_variant(images: list[Image.Image], folder: Path) -> list[Path]:
    """Write image k as `folder/{k:03d}.png` (image k always comes from seed + k)."""
    return [save_image_atomic(image, folder / f"{k:03d}.png") for k, image in enumerate(images)]


def relative(paths: list[Path], root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]
