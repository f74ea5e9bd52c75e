"""rrnet: Relation Rectification (RRNet) for diffusers text-to-image models."""

__version__ = "0.1.0"
