"""Opening a rectifier folder that may be damaged, foreign or from another rrnet version.

`RelationRectifier.from_pretrained` trusts its config's types; a `config.json` with a string
for a width, a format from a newer rrnet, a pickle renamed to `.safetensors` or weights full
of NaN must each end as one CheckpointError line, never a traceback or a silently broken model.
Every reader (generate, evaluate, experiment) opens rectifiers through `load_rectifier`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from rrnet.errors import CheckpointError
from rrnet.rectifier import (
    ADJUSTERS,
    CONFIG_NAME,
    EDIT_POSITIONS,
    FORMAT,
    WEIGHTS_NAME,
    RectifierConfig,
    RelationRectifier,
    resolve_rectifier_folder,
)

FORMAT_VERSION = 2  # the newest config format this rrnet reads (2: SDXL's text_widths and pooled_width)
_LIMITS = {"text_width": 65536, "hidden": 65536, "heads": 64, "num_layers": 64}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _strings(value, n: int | None = None) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) and x.strip() for x in value) and (
        n is None or len(value) == n)


def check_config(raw: object, path: Path) -> dict:
    """The config's fields, each of the type and range a rectifier can be built from."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not an rrnet rectifier config (expected a JSON object)")
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rrnet rectifier config (format {raw.get('format')!r})")
    version = raw.get("format_version", 1)
    if not _positive_int(version):
        raise CheckpointError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: made by a newer rrnet (format version {version}); this rrnet reads version "
                              f"{FORMAT_VERSION} and older; upgrade rrnet")
    known = {f.name for f in dataclasses.fields(RectifierConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown key {unknown[0]!r} in the rectifier config")
    if "text_width" not in raw:
        raise CheckpointError(f"{path}: missing key 'text_width'")
    for key, limit in _LIMITS.items():
        if key in raw and not (_positive_int(raw[key]) and raw[key] <= limit):
            raise CheckpointError(f"{path}: {key} must be an integer from 1 to {limit}, got {raw[key]!r}")
    widths, pooled = raw.get("text_widths"), raw.get("pooled_width")
    if widths is not None and not (isinstance(widths, list) and len(widths) > 1
                                   and all(_positive_int(w) and w <= _LIMITS["text_width"] for w in widths)):
        raise CheckpointError(f"{path}: text_widths must be a list of text encoder widths, got {widths!r}")
    if widths is not None and sum(widths) != raw["text_width"]:
        raise CheckpointError(f"{path}: text_widths {widths} do not add up to text_width {raw['text_width']}")
    if pooled is not None and not (_positive_int(pooled) and pooled <= _LIMITS["text_width"]):
        raise CheckpointError(f"{path}: pooled_width must be an integer from 1 to {_LIMITS['text_width']}, got {pooled!r}")
    if (widths is None) != (pooled is None):
        raise CheckpointError(f"{path}: text_widths and pooled_width come together (an SDXL rectifier) or not at all")
    if "adjuster" in raw and raw["adjuster"] not in ADJUSTERS:
        raise CheckpointError(f"{path}: adjuster must be one of {list(ADJUSTERS)}, got {raw['adjuster']!r}")
    for key in ("antisymmetric", "joint_relations"):
        if not isinstance(raw.get(key, False), bool):
            raise CheckpointError(f"{path}: {key} must be true or false, got {raw[key]!r}")
    if raw.get("antisymmetric") and raw.get("adjuster", "hgcn") != "hgcn":
        raise CheckpointError(f"{path}: antisymmetric needs the graph network adjuster (the role adjuster is "
                              "antisymmetric by construction, the triplet adjuster has no structure)")
    if "edit_positions" in raw and raw["edit_positions"] not in EDIT_POSITIONS:
        raise CheckpointError(f"{path}: edit_positions must be one of {list(EDIT_POSITIONS)}, got {raw['edit_positions']!r}")
    template = raw.get("object_template", "{}")
    if not isinstance(template, str) or template.count("{}") != 1:
        raise CheckpointError(f"{path}: object_template must be text with one '{{}}', got {template!r}")
    triplets = raw.get("triplets", [])
    words = ("object_a", "relation", "object_b")
    if not isinstance(triplets, list) or not all(
            isinstance(t, dict) and set(t) == set(words) and all(isinstance(t[w], str) and t[w].strip() for w in words)
            for t in triplets):
        raise CheckpointError(f"{path}: triplets must be a list of {{object_a, relation, object_b}} texts")
    prompts = raw.get("prompts", [])
    if not isinstance(prompts, list) or not all(_strings(pair, 2) for pair in prompts):
        raise CheckpointError(f"{path}: prompts must be a list of [prompt, swapped prompt] pairs")
    phrases = raw.get("relation_phrases", {})
    if not isinstance(phrases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in phrases.items()):
        raise CheckpointError(f"{path}: relation_phrases must map phrases to relation words")
    if raw.get("backbone") is not None and not isinstance(raw["backbone"], str):
        raise CheckpointError(f"{path}: backbone must be a model id or null, got {raw['backbone']!r}")
    if not isinstance(raw.get("training", {}), dict):
        raise CheckpointError(f"{path}: training must be an object")
    return raw


def check_weights(path: Path) -> None:
    """A safetensors file (never unpickled) whose tensors are all finite."""
    try:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise CheckpointError(f"{path}: weight {key!r} holds NaN or infinite values")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({reason})") from None


def load_rectifier(folder: str | Path, device: str | torch.device = "cpu", **hub_kwargs) -> RelationRectifier:
    """`RelationRectifier.from_pretrained` after checking the folder (or the files of a Hub repository
    id): one CheckpointError line for anything missing, damaged, foreign or too new."""
    folder = resolve_rectifier_folder(folder, **hub_kwargs)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: rectifier folder not found")
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found (a rectifier folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        raw = json.loads(config_path.read_bytes().decode("utf-8"), parse_constant=lambda c: math.nan)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: unreadable rectifier config ({' '.join(str(exc).split())[:120]})") from None
    check_config(raw, config_path)
    check_weights(weights_path)
    try:
        return RelationRectifier.from_pretrained(folder, device=device)
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CheckpointError(f"{folder}: cannot build the rectifier ({reason})") from None


def rectifier_digest(folder: str | Path) -> str:
    """Content hash of a rectifier (weights and config): what its images were made with."""
    from rrnet.eval.provenance import files_digest

    folder = Path(folder)
    return files_digest(folder, [folder / CONFIG_NAME, folder / WEIGHTS_NAME])
