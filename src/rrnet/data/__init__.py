"""Relation specs, their on-disk formats (official index.json, our manifests), image loading."""

from rrnet.data.images import (
    IMAGE_EXTENSIONS,
    check_image,
    find_images,
    is_image,
    load_image,
    load_images,
    natural_key,
    save_image_atomic,
)
from rrnet.data.specs import RelationSpec, find_relations, load_relation, load_relations

__all__ = [
    "IMAGE_EXTENSIONS",
    "RelationSpec",
    "check_image",
    "find_images",
    "find_relations",
    "is_image",
    "load_image",
    "load_images",
    "load_relation",
    "load_relations",
    "natural_key",
    "save_image_atomic",
]
