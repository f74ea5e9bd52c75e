"""Shared set-up for benchmarks: a random SD-shaped backbone and a relation folder at its size."""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

from rrnet.backbones.clip_vocab import clip_tokenizer
from rrnet.backbones.shapes import SHAPES, build_pipeline_from_shape
from rrnet.data import load_relation
from rrnet.world.exemplars import write_relation_folder


def benchmark_pipeline(shape_name: str, device: str = "cpu", dtype=None):
    """Random-weight pipeline of a named shape (timings do not depend on weight values)."""
    pipe = build_pipeline_from_shape(SHAPES[shape_name], clip_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype) if dtype is not None else pipe.to(device)


def benchmark_relation(resolution: int, n_images: int = 3):
    """A mini-world relation folder rendered at the backbone's resolution."""
    root = Path(tempfile.mkdtemp(prefix="rrnet-bench-"))
    folder = write_relation_folder(root, "red circle", "above", "blue square", n_images=n_images, size=resolution, seed=0)
    return load_relation(folder)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
