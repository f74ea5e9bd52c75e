"""Procedural renderer for mini-world scenes with exactly known ground truth.

Shapes are rasterised by testing pixel centres against the continuous shape,
all shapes lie inside the circle of their radius and have their centroid at
their centre, so placement by centre gives non-overlap and centroid truth.
Scenes hold one object, two objects in one relation, or three objects in two
relations that share one object (one vertical, one horizontal: an "L").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rrnet.errors import DataError
from rrnet.world.vocab import (
    BACKGROUND_RGB,
    Triplet,
    canonical,
    caption_for,
    check_relations,
    get_object,
    get_relation,
    prompt_for,
)

BASE_SIZE = 32
RADIUS_RANGE = (4.0, 7.0)  # at BASE_SIZE, scaled with image size
SCENE_RADIUS_RANGE = (4.0, 6.0)  # three objects share the frame: a little smaller
GAP = 2.0  # minimum free space between the two circumscribed circles, at BASE_SIZE
MAX_OFFSET = 3.0  # largest off-axis offset of the two centres, at BASE_SIZE
OFFSET_FRACTION = 0.25  # off-axis offset also at most this fraction of the separation
MARGIN = 1.0  # distance of every circumscribed circle from the frame edge, pixels

_SQUARE_HALF = 0.85
_CROSS_ARM = 0.96
_CROSS_HALF_WIDTH = 0.3
_BAR_HALF_LENGTH = 0.95
_BAR_HALF_WIDTH = 0.42
_SQRT3 = math.sqrt(3.0)


@dataclass(frozen=True)
class Placement:
    """Where one object was drawn: centre (x, y) in pixel units and its radius."""

    name: str
    centre: tuple[float, float]
    radius: float


@dataclass(frozen=True)
class SceneTruth:
    """Ground truth of a rendered two-object scene; the image shows A <relation> B."""

    a: str
    relation: str
    b: str
    placement_a: Placement
    placement_b: Placement
    size: int
    prompt: str
    verdict: str = "ARB"


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` with radius ``r`` at offsets (dx, dy) from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = _SQUARE_HALF * r
        return (ax <= h) & (ay <= h)
    if shape == "triangle":
        # Equilateral, apex up, inscribed in the circle: centroid at the centre.
        return (dy <= 0.5 * r) & (ax <= (dy + r) / _SQRT3)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "cross":
        arm, half = _CROSS_ARM * r, _CROSS_HALF_WIDTH * r
        return ((ax <= half) & (ay <= arm)) | ((ay <= half) & (ax <= arm))
    if shape == "column":
        return (ax <= _BAR_HALF_WIDTH * r) & (ay <= _BAR_HALF_LENGTH * r)
    if shape == "bar":
        return (ax <= _BAR_HALF_LENGTH * r) & (ay <= _BAR_HALF_WIDTH * r)
    if shape == "wedge":
        # The triangle upside down: apex down, centroid at the centre.
        return (-dy <= 0.5 * r) & (ax <= (r - dy) / _SQRT3)
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=None)
def shape_area_coefficient(shape: str) -> float:
    """Area of ``shape`` divided by radius squared (for estimating radius from area)."""
    n = 400
    grid = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    dx, dy = np.meshgrid(grid, grid)
    return float(shape_mask(shape, dx, dy, 1.0).mean() * 4.0)


def _paint(image: np.ndarray, shape: str, rgb: tuple[int, int, int], cx: float, cy: float, r: float) -> None:
    """Fill the pixels whose centres fall inside the shape."""
    h, w = image.shape[:2]
    x0, x1 = max(0, int(cx - r) - 1), min(w, int(math.ceil(cx + r)) + 1)
    y0, y1 = max(0, int(cy - r) - 1), min(h, int(math.ceil(cy + r)) + 1)
    xs = np.arange(x0, x1) + 0.5 - cx
    ys = np.arange(y0, y1) + 0.5 - cy
    mask = shape_mask(shape, xs[None, :], ys[:, None], r)
    image[y0:y1, x0:x1][mask] = rgb


def _canvas(size: int) -> np.ndarray:
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND_RGB
    return image


def _add_noise(image: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Mild Gaussian pixel noise (std in 0-255 units); keeps colours classifiable."""
    if noise <= 0:
        return image
    noisy = image.astype(np.float32) + rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _sample_radius(rng: np.random.Generator, scale: float, radius_range: tuple[float, float] = RADIUS_RANGE) -> float:
    lo, hi = radius_range
    return float(rng.uniform(lo * scale, hi * scale))


def _sample_pair(rng: np.random.Generator, size: int, r1: float, r2: float) -> tuple[float, float, float, float] | None:
    """Sample (along1, along2, off1, off2) for first/second object, or None if they cannot fit."""
    scale = size / BASE_SIZE
    d_min = r1 + r2 + GAP * scale
    d_max = size - 2 * MARGIN - r1 - r2
    if d_max < d_min:
        return None
    d = float(rng.uniform(d_min, d_max))
    p1 = float(rng.uniform(MARGIN + r1, size - MARGIN - r2 - d))
    o_max = min(OFFSET_FRACTION * d, MAX_OFFSET * scale)
    o = float(rng.uniform(-o_max, o_max))
    lo = max(MARGIN + r1 + o / 2, MARGIN + r2 - o / 2)
    hi = min(size - MARGIN - r1 + o / 2, size - MARGIN - r2 - o / 2)
    if hi < lo:
        return None
    m = float(rng.uniform(lo, hi))
    return p1, p1 + d, m - o / 2, m + o / 2


def place_pair(a: str, relation: str, b: str, rng: np.random.Generator, size: int = BASE_SIZE) -> tuple[Placement, Placement]:
    """Random placements of A and B such that "A <relation> B" holds unambiguously."""
    rel = get_relation(relation)
    scale = size / BASE_SIZE
    for _ in range(100):
        ra, rb = _sample_radius(rng, scale), _sample_radius(rng, scale)
        r1, r2 = (ra, rb) if rel.a_first else (rb, ra)
        sample = _sample_pair(rng, size, r1, r2)
        if sample is not None:
            break
    else:
        raise ValueError(f"image size {size} is too small for two objects")
    along1, along2, off1, off2 = sample
    c1 = (along1, off1) if rel.axis == "x" else (off1, along1)
    c2 = (along2, off2) if rel.axis == "x" else (off2, along2)
    ca, cb = (c1, c2) if rel.a_first else (c2, c1)
    return Placement(a, ca, ra), Placement(b, cb, rb)


def draw(placements: tuple[Placement, ...] | list[Placement], size: int = BASE_SIZE) -> np.ndarray:
    """Rasterise placements onto a fresh background (no noise)."""
    image = _canvas(size)
    for p in placements:
        obj = get_object(p.name)
        _paint(image, obj.shape, obj.rgb, p.centre[0], p.centre[1], p.radius)
    return image


def render_scene(
    a: str,
    relation: str,
    b: str,
    rng: np.random.Generator,
    size: int = BASE_SIZE,
    noise: float = 0.0,
) -> tuple[np.ndarray, SceneTruth]:
    """Render "A <relation> B" as an HxWx3 uint8 image with its exact truth."""
    if a == b:
        raise DataError("a scene needs two different objects")
    pa, pb = place_pair(a, relation, b, rng, size)
    image = _add_noise(draw((pa, pb), size), rng, noise)
    truth = SceneTruth(a, relation, b, pa, pb, size, prompt_for(a, relation, b))
    return image, truth


@dataclass(frozen=True)
class SceneRelationsTruth:
    """Ground truth of a rendered scene of one or two relations: what the caption states, where
    every object was drawn."""

    triplets: tuple[Triplet, ...]
    placements: tuple[Placement, ...]
    size: int
    prompt: str

    def placement(self, name: str) -> Placement:
        return next(p for p in self.placements if p.name == name)


def _axis_partner(triplet: Triplet, shared: str) -> tuple[str, str, int]:
    """(partner object, axis, sign): the partner lies on `axis` at `sign` (-1 before, +1 after) of `shared`."""
    a, relation, b = triplet
    c = canonical(a, relation, b)
    partner = b if a == shared else a
    return partner, c.axis, -1 if c.first == partner else 1


def place_relations(triplets: tuple[Triplet, Triplet], rng: np.random.Generator, size: int = BASE_SIZE) -> tuple[Placement, ...]:
    """Placements for two relations sharing one object S: one partner above/below S, one left/right of it.

    Each partner sits along its axis at a gap from S with a small off-axis offset (as in two-object
    scenes), so each relation holds unambiguously; the two partners do not touch each other.
    """
    (a1, _, b1), (a2, _, b2) = triplets
    (shared,) = {a1, b1} & {a2, b2}
    partners = [_axis_partner(t, shared) for t in triplets]
    scale = size / BASE_SIZE
    for _ in range(1000):
        rs = _sample_radius(rng, scale, SCENE_RADIUS_RANGE)
        offsets = []  # (partner, radius, (dx, dy) from S)
        for partner, axis, sign in partners:
            rp = _sample_radius(rng, scale, SCENE_RADIUS_RANGE)
            d = float(rng.uniform(rs + rp + GAP * scale, max(rs + rp + GAP * scale, size - 2 * MARGIN - rs - rp)))
            o_max = min(OFFSET_FRACTION * d, MAX_OFFSET * scale)
            o = float(rng.uniform(-o_max, o_max))
            offsets.append((partner, rp, (sign * d, o) if axis == "x" else (o, sign * d)))
        # S's centre must keep every circle inside the frame: one interval per coordinate.
        box = []
        for k in (0, 1):
            lo = max([MARGIN + rs] + [MARGIN + rp - delta[k] for _, rp, delta in offsets])
            hi = min([size - MARGIN - rs] + [size - MARGIN - rp - delta[k] for _, rp, delta in offsets])
            box.append((lo, hi))
        (p1, r1, d1), (p2, r2, d2) = offsets
        if any(lo > hi for lo, hi in box) or math.dist(d1, d2) < r1 + r2 + GAP * scale:
            continue
        sx, sy = (float(rng.uniform(lo, hi)) for lo, hi in box)
        return (Placement(shared, (sx, sy), rs), Placement(p1, (sx + d1[0], sy + d1[1]), r1),
                Placement(p2, (sx + d2[0], sy + d2[1]), r2))
    raise ValueError(f"image size {size} is too small for three objects")


def render_relations(
    triplets, rng: np.random.Generator, size: int = BASE_SIZE, noise: float = 0.0
) -> tuple[np.ndarray, SceneRelationsTruth]:
    """Render a scene stating one or two relations (see `caption_for` for the caption)."""
    triplets = check_relations(triplets)
    if len(triplets) == 1:
        image, truth = render_scene(*triplets[0], rng, size, noise)
        placements = (truth.placement_a, truth.placement_b)
    else:
        placements = place_relations(triplets, rng, size)
        image = _add_noise(draw(placements, size), rng, noise)
    return image, SceneRelationsTruth(triplets, placements, size, caption_for(triplets))


def render_object(
    obj: str,
    rng: np.random.Generator,
    size: int = BASE_SIZE,
    noise: float = 0.0,
) -> tuple[np.ndarray, Placement]:
    """Render a single object at a random position and size, fully inside the frame."""
    r = _sample_radius(rng, size / BASE_SIZE)
    cx = float(rng.uniform(MARGIN + r, size - MARGIN - r))
    cy = float(rng.uniform(MARGIN + r, size - MARGIN - r))
    placement = Placement(obj, (cx, cy), r)
    return _add_noise(draw((placement,), size), rng, noise), placement


def to_pil(image: np.ndarray):
    """Convert an HxWx3 uint8 array to a PIL RGB image."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))


def render_pil(
    a: str,
    relation: str,
    b: str,
    rng: np.random.Generator,
    size: int = BASE_SIZE,
    noise: float = 0.0,
):
    """``render_scene`` returning a PIL image instead of an array."""
    image, truth = render_scene(a, relation, b, rng, size, noise)
    return to_pil(image), truth


def render_object_pil(obj: str, rng: np.random.Generator, size: int = BASE_SIZE, noise: float = 0.0):
    """``render_object`` returning a PIL image instead of an array."""
    image, placement = render_object(obj, rng, size, noise)
    return to_pil(image), placement
