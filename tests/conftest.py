"""Shared fixtures: a tiny random SD backbone and a small relation folder, both built locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

SHARED_EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "rr-examples"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from rrnet.backbones.tiny import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("models") / "tiny-sd2", seed=0)


@pytest.fixture(scope="module")
def world_pipe():
    """The shipped mini-world pipeline, loaded once per test module."""
    from rrnet.backbones.loading import load_pipeline
    from rrnet.world.record import shipped_backbone

    pipe = load_pipeline(str(shipped_backbone()), device="cpu", progress=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def tiny_pipe(tiny_model_dir):
    from rrnet.backbones.loading import load_pipeline

    return load_pipeline(str(tiny_model_dir), device="cpu")


def _scene(colors: list[tuple[int, int, int]], boxes: list[tuple[int, int, int, int]], size: int = 48) -> Image.Image:
    image = Image.new("RGB", (size, size), (40, 40, 40))
    for color, box in zip(colors, boxes):
        image.paste(color, box)
    return image


def write_relation(root: Path, images_per_folder: int = 2) -> Path:
    """An official-layout relation: 'a red block above a blue block' vs the swap."""
    folder = root / "above"
    index = {
        "A": "red block", "R": "above", "B": "blue block",
        "ARB": "a red block above a blue block", "BRA": "a blue block above a red block",
        "ARB_dir": "arb", "BRA_dir": "bra",
    }
    red, blue = (220, 30, 30), (30, 60, 220)
    top, bottom = (16, 4, 32, 20), (16, 28, 32, 44)
    layouts = {"arb": ([red, blue], [top, bottom]), "bra": ([blue, red], [top, bottom]),
               "red block": ([red], [(14, 14, 34, 34)]), "blue block": ([blue], [(14, 14, 34, 34)])}
    for name, (colors, boxes) in layouts.items():
        (folder / name).mkdir(parents=True)
        for k in range(images_per_folder):
            shifted = [(x0 + k, y0, x1 + k, y1) for x0, y0, x1, y1 in boxes]
            _scene(colors, shifted).save(folder / name / f"{k}.png")
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture()
def relation_dir(tmp_path) -> Path:
    return write_relation(tmp_path)
