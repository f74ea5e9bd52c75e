"""rrnet: Relation Rectification (RRNet) for diffusers text-to-image models."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["RelationRectifier", "RectifierConfig", "TrainConfig", "train_rectifier", "load_relation", "self_taught_folder"]


def __getattr__(name: str):
    """Import the heavy parts (torch, PyG, diffusers) only when they are used."""
    if name in ("RelationRectifier", "RectifierConfig"):
        from rrnet import rectifier

        return getattr(rectifier, name)
    if name in ("TrainConfig", "train_rectifier"):
        from rrnet import train

        return getattr(train, name)
    if name == "self_taught_folder":
        from rrnet.self_teach import self_taught_folder

        return self_taught_folder
    if name == "load_relation":
        from rrnet.data import load_relation

        return load_relation
    raise AttributeError(f"module 'rrnet' has no attribute {name!r}")
