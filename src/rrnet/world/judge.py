"""Exact judge of mini-world images: which objects are drawn and how they are arranged.

Pixels are snapped to the palette, each object colour keeps only its largest
4-connected region (so speckle noise is not mistaken for an object), the region
must be plausibly sized and shaped like the named object, and the relation is
read from the two regions' centroids along the relation's axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rrnet.errors import DataError
from rrnet.world.render import BASE_SIZE, shape_area_coefficient, shape_mask
from rrnet.world.vocab import BACKGROUND_RGB, OBJECTS, SHAPES, Triplet, check_relations, get_object, get_relation


_PALETTE = np.asarray([BACKGROUND_RGB] + [o.rgb for o in OBJECTS], dtype=np.int32)
_PALETTE_F = _PALETTE.astype(np.float32)
_PALETTE_SQ = (_PALETTE_F * _PALETTE_F).sum(axis=1)[None, :]
_INDEX_BY_NAME = {o.name: i + 1 for i, o in enumerate(OBJECTS)}
_RADIUS_FACTORS = (0.85, 1.0, 1.15)


@dataclass(frozen=True)
class JudgeConfig:
    """Tolerances of the judge; defaults accept clean renders and reject speckle.

    ``min_area_fraction`` of 6/1024 is 6 px at 32x32. ``max_colour_distance``
    (Euclidean RGB) leaves pixels far from every palette colour unassigned; at
    least ``min_core_fraction`` of a region's pixels must lie within
    ``core_colour_distance`` of its colour, which drawn objects meet and random
    speckle (spread over the whole colour cell) does not. A region is accepted
    as the named object when its shape IoU is at least ``min_shape_iou`` and
    within ``shape_margin`` of the best-matching shape.
    ``dominance`` is how much larger the along-axis centroid distance must be
    than the off-axis one; ``max_overlap`` is the largest allowed overlap of the
    two regions' extents along the axis, as a fraction of the smaller extent.
    """

    min_area_fraction: float = 6.0 / (BASE_SIZE * BASE_SIZE)
    max_area_fraction: float = 0.3
    max_colour_distance: float = 110.0
    core_colour_distance: float = 60.0
    min_core_fraction: float = 0.6
    min_shape_iou: float = 0.5
    shape_margin: float = 0.03
    dominance: float = 2.0
    max_overlap: float = 0.2


DEFAULT_CONFIG = JudgeConfig()


@dataclass(frozen=True)
class Detection:
    """An object found in an image.

    ``centroid`` is (x, y) in pixel units (pixel centres at i + 0.5), ``bbox``
    is (x0, y0, x1, y1) with exclusive ends, ``shape`` the best-matching shape.
    """

    name: str
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    area: int
    shape: str
    shape_iou: float


@dataclass(frozen=True)
class Judgement:
    """Verdict for "A <relation> B": ARB, BRA (the swapped arrangement) or neither."""

    has_a: bool
    has_b: bool
    verdict: str


def as_rgb_array(image) -> np.ndarray:
    """HxWx3 uint8 array from a PIL image or an array (alpha dropped)."""
    if hasattr(image, "convert") and not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr[:, :, :3]


def _nearest_palette(image: np.ndarray, config: JudgeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Palette index per pixel and squared distance to it (index 0 when too far from all)."""
    h, w = image.shape[:2]
    pix = image.reshape(-1, 3).astype(np.float32)
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, exact in float32 for 8-bit colours.
    d2 = (pix * pix).sum(axis=1, keepdims=True) - 2.0 * (pix @ _PALETTE_F.T) + _PALETTE_SQ
    nearest = d2.argmin(axis=1)
    dist2 = d2.min(axis=1)
    nearest[dist2 > config.max_colour_distance ** 2] = 0
    return nearest.reshape(h, w).astype(np.int16), dist2.reshape(h, w)


def classify_pixels(image: np.ndarray, config: JudgeConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Palette index per pixel: 0 for background or unassigned, k + 1 for ``OBJECTS[k]``."""
    return _nearest_palette(as_rgb_array(image), config)[0]


def label_components(classes: np.ndarray) -> np.ndarray:
    """4-connected components of equal non-zero class; label = smallest flat index, H*W for class 0.

    Min-label propagation with pointer jumping: converges in a few numpy passes.
    """
    h, w = classes.shape
    n = h * w
    fg = classes > 0
    lab = np.where(fg, np.arange(n).reshape(h, w), n)
    same_h = fg[:, 1:] & (classes[:, 1:] == classes[:, :-1])
    same_v = fg[1:, :] & (classes[1:, :] == classes[:-1, :])
    while True:
        old = lab
        lab = lab.copy()
        m = np.where(same_h, np.minimum(old[:, 1:], old[:, :-1]), n)
        np.minimum(lab[:, 1:], m, out=lab[:, 1:])
        np.minimum(lab[:, :-1], m, out=lab[:, :-1])
        m = np.where(same_v, np.minimum(lab[1:, :], lab[:-1, :]), n)
        np.minimum(lab[1:, :], m, out=lab[1:, :])
        np.minimum(lab[:-1, :], m, out=lab[:-1, :])
        ext = np.append(lab.ravel(), n)
        flat = ext[ext[lab.ravel()]]
        lab = flat.reshape(h, w)
        if np.array_equal(lab, old):
            return lab


def largest_regions(classes: np.ndarray) -> dict[int, np.ndarray]:
    """Boolean mask of the largest 4-connected region of every class present (ties: lowest label)."""
    labels = label_components(classes)
    n = classes.size
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)[:n]
    roots = np.nonzero(counts)[0]
    root_classes = classes.ravel()[roots]
    regions: dict[int, np.ndarray] = {}
    for cls in np.unique(root_classes):
        cand = roots[root_classes == cls]
        best = cand[np.argmax(counts[cand])]
        regions[int(cls)] = labels == best
    return regions


def shape_scores(mask: np.ndarray) -> dict[str, float]:
    """IoU of the region with each shape's template at its centroid, best over a few radii."""
    ys, xs = np.nonzero(mask)
    area = xs.size
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    h, w = mask.shape
    r_max = max(math.sqrt(area / shape_area_coefficient(s)) for s in SHAPES) * _RADIUS_FACTORS[-1]
    x0 = max(0, min(int(xs.min()), int(cx - r_max) - 1))
    x1 = min(w, max(int(xs.max()) + 1, int(math.ceil(cx + r_max)) + 1))
    y0 = max(0, min(int(ys.min()), int(cy - r_max) - 1))
    y1 = min(h, max(int(ys.max()) + 1, int(math.ceil(cy + r_max)) + 1))
    window = mask[y0:y1, x0:x1]
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1) + 0.5 - cy)[:, None]
    scores: dict[str, float] = {}
    for shape in SHAPES:
        r0 = math.sqrt(area / shape_area_coefficient(shape))
        best = 0.0
        for f in _RADIUS_FACTORS:
            tmpl = shape_mask(shape, dx, dy, r0 * f)
            inter = np.count_nonzero(tmpl & window)
            union = area + np.count_nonzero(tmpl) - inter
            best = max(best, inter / union)
        scores[shape] = best
    return scores


def _detection(name: str, mask: np.ndarray, dist2: np.ndarray, config: JudgeConfig) -> Detection | None:
    """Detection for the region if its size, colour purity and shape fit the named object, else None."""
    area = int(np.count_nonzero(mask))
    total = mask.size
    if area < config.min_area_fraction * total or area > config.max_area_fraction * total:
        return None
    core = np.count_nonzero(dist2[mask] <= config.core_colour_distance ** 2)
    if core < config.min_core_fraction * area:
        return None
    scores = shape_scores(mask)
    best_shape = max(scores, key=scores.get)
    own = scores[get_object(name).shape]
    if own < config.min_shape_iou or own < scores[best_shape] - config.shape_margin:
        return None
    ys, xs = np.nonzero(mask)
    centroid = (float(xs.mean() + 0.5), float(ys.mean() + 0.5))
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Detection(name, centroid, bbox, area, best_shape, float(own))


def _detect_all(image, names: tuple[str, ...], config: JudgeConfig) -> dict[str, Detection]:
    classes, dist2 = _nearest_palette(as_rgb_array(image), config)
    regions = largest_regions(classes)
    found: dict[str, Detection] = {}
    for name in names:
        mask = regions.get(_INDEX_BY_NAME[get_object(name).name])
        det = None if mask is None else _detection(name, mask, dist2, config)
        if det is not None:
            found[name] = det
    return found


def find_objects(image, config: JudgeConfig = DEFAULT_CONFIG) -> dict[str, Detection]:
    """All vocabulary objects present in the image, keyed by name."""
    return _detect_all(image, tuple(o.name for o in OBJECTS), config)


def relation_verdict(det_a: Detection, det_b: Detection, relation: str, config: JudgeConfig = DEFAULT_CONFIG) -> str:
    """ARB, BRA or neither from two detections; overlap or a diagonal layout is neither."""
    rel = get_relation(relation)
    along, off = (0, 1) if rel.axis == "x" else (1, 0)
    d = det_b.centroid[along] - det_a.centroid[along]
    o = det_b.centroid[off] - det_a.centroid[off]
    if abs(d) < config.dominance * abs(o) or d == 0:
        return "neither"
    lo_a, hi_a = det_a.bbox[along], det_a.bbox[along + 2]
    lo_b, hi_b = det_b.bbox[along], det_b.bbox[along + 2]
    overlap = max(0, min(hi_a, hi_b) - max(lo_a, lo_b))
    if overlap > config.max_overlap * min(hi_a - lo_a, hi_b - lo_b):
        return "neither"
    a_is_first = d > 0
    return "ARB" if a_is_first == rel.a_first else "BRA"


def judge_image(image, a: str, relation: str, b: str, config: JudgeConfig = DEFAULT_CONFIG) -> Judgement:
    """Judge whether the image shows "A <relation> B" (ARB), the swap (BRA), or neither."""
    get_relation(relation)
    if a == b:
        raise DataError("a relation needs two different objects")
    found = _detect_all(image, (a, b), config)
    det_a, det_b = found.get(a), found.get(b)
    if det_a is None or det_b is None:
        return Judgement(det_a is not None, det_b is not None, "neither")
    return Judgement(True, True, relation_verdict(det_a, det_b, relation, config))


RELATION_OUTCOMES = ("correct", "swapped", "neither", "missing")
_OUTCOME_OF_VERDICT = {"ARB": "correct", "BRA": "swapped", "neither": "neither"}


@dataclass(frozen=True)
class RelationsJudgement:
    """Verdicts for a caption of one or two relations.

    ``outcomes[k]`` is "correct", "swapped", "neither" or "missing" (an object of relation k not
    found); ``objects_found`` says whether every named object was found.
    """

    triplets: tuple[Triplet, ...]
    outcomes: tuple[str, ...]
    objects_found: bool

    @property
    def all_correct(self) -> bool:
        return all(o == "correct" for o in self.outcomes)


def judge_relations(image, triplets, config: JudgeConfig = DEFAULT_CONFIG) -> RelationsJudgement:
    """Judge every relation a caption states, each from the same detections."""
    triplets = check_relations(triplets)
    names = tuple(dict.fromkeys(name for a, _, b in triplets for name in (a, b)))
    found = _detect_all(image, names, config)
    outcomes = []
    for a, relation, b in triplets:
        if a not in found or b not in found:
            outcomes.append("missing")
        else:
            outcomes.append(_OUTCOME_OF_VERDICT[relation_verdict(found[a], found[b], relation, config)])
    return RelationsJudgement(triplets, tuple(outcomes), len(found) == len(names))
