"""Positional relations between detected boxes, following two published benchmark rules.

Coordinates are image pixels with y growing downwards, so "above" means a smaller y.

* GenEval (Ghosh et al. 2023, `evaluate_images.py::relative_position`): the centre offset is
  shrunk on each axis by 0.1 x (sum of the two box extents on that axis), so that touching or
  overlapping objects with nearly equal centres count as "no relation"; the shrunk offset is
  divided by the *unshrunk* offset's length and a direction counts when its component exceeds
  0.5. Two directions can hold at once (a diagonal).
* VISOR (Gokhale et al. 2022): centroids only, compared along the relation's own axis
  ("left of" looks at x only, "above" at y only), with strict inequalities. An image counts
  when ANY pair of detections above the score threshold (one box of A, one of B) satisfies the
  relation, as published; not only each object's best box.

How the two rules pick boxes differs, and `verdict_from_boxes` keeps each as published: GenEval
compares the best-scoring box of each object, VISOR searches every pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rrnet.errors import RRNetError

GENEVAL_POSITION_THRESHOLD = 0.1
_GENEVAL_EPS = 1e-3
_GENEVAL_DIRECTION = 0.5

LEFT, RIGHT, ABOVE, BELOW = "left of", "right of", "above", "below"
RELATIONS: tuple[str, ...] = (LEFT, RIGHT, ABOVE, BELOW)
RULES: tuple[str, ...] = ("geneval", "visor")

_SYNONYMS: dict[str, str] = {
    LEFT: LEFT,
    "on the left of": LEFT,
    "to the left of": LEFT,
    RIGHT: RIGHT,
    "on the right of": RIGHT,
    "to the right of": RIGHT,
    ABOVE: ABOVE,
    "on top of": ABOVE,
    "over": ABOVE,
    BELOW: BELOW,
    "under": BELOW,
    "beneath": BELOW,
    "underneath": BELOW,
}


@dataclass(frozen=True)
class Box:
    """An axis-aligned detection box in image coordinates, with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    @property
    def size(self) -> tuple[float, float]:
        """(width, height); absolute, so a box given with swapped corners still has a size."""
        return (abs(self.x1 - self.x0), abs(self.y1 - self.y0))


def canonical_relation(relation: str) -> str:
    """Map a relation phrase (any case, extra spaces) to one of RELATIONS, or raise RRNetError."""
    key = " ".join(relation.lower().split())
    if key not in _SYNONYMS:
        supported = ", ".join(sorted(_SYNONYMS))
        raise RRNetError(f"unsupported positional relation {relation!r}; supported: {supported}")
    return _SYNONYMS[key]


def _sign(value: float) -> float:
    return (value > 0) - (value < 0)


def geneval_relations(
    box_a: Box, box_b: Box, threshold: float = GENEVAL_POSITION_THRESHOLD
) -> frozenset[str]:
    """Every relation "A <rel> B" that GenEval's relative_position reports (possibly none)."""
    (ax, ay), (bx, by) = box_a.center, box_b.center
    (aw, ah), (bw, bh) = box_a.size, box_b.size
    offset = (ax - bx, ay - by)
    extents = (aw + bw, ah + bh)
    revised = [
        max(abs(o) - threshold * e, 0.0) * _sign(o) for o, e in zip(offset, extents)
    ]
    if all(abs(r) < _GENEVAL_EPS for r in revised):
        return frozenset()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    found = set()
    if dx < -_GENEVAL_DIRECTION:
        found.add(LEFT)
    if dx > _GENEVAL_DIRECTION:
        found.add(RIGHT)
    if dy < -_GENEVAL_DIRECTION:
        found.add(ABOVE)
    if dy > _GENEVAL_DIRECTION:
        found.add(BELOW)
    return frozenset(found)


def visor_relations(box_a: Box, box_b: Box) -> frozenset[str]:
    """Every relation "A <rel> B" under VISOR's centroid rule (one per axis at most)."""
    (ax, ay), (bx, by) = box_a.center, box_b.center
    found = set()
    if ax < bx:
        found.add(LEFT)
    if ax > bx:
        found.add(RIGHT)
    if ay < by:
        found.add(ABOVE)
    if ay > by:
        found.add(BELOW)
    return frozenset(found)


def check_rule(rule: str) -> str:
    """Return the rule name unchanged, or raise RRNetError if it is not one of RULES."""
    if rule not in RULES:
        raise RRNetError(f"unknown position rule {rule!r}; expected one of: {', '.join(RULES)}")
    return rule


def relations(box_a: Box, box_b: Box, rule: str = "geneval") -> frozenset[str]:
    """Relations "A <rel> B" under the named rule; an unknown rule raises RRNetError."""
    if check_rule(rule) == "geneval":
        return geneval_relations(box_a, box_b)
    return visor_relations(box_a, box_b)


def relation_holds(box_a: Box, box_b: Box, relation: str, rule: str = "geneval") -> bool:
    """Whether "A <relation> B" holds; synonyms such as "on top of" or "under" are accepted."""
    return canonical_relation(relation) in relations(box_a, box_b, rule)


def _best(boxes: list[Box]) -> Box:
    """The highest-scoring box; the first one wins a tie, so results do not depend on sorting."""
    return max(boxes, key=lambda box: box.score)


def _any_pair_holds(boxes_a: list[Box], boxes_b: list[Box], relation: str, rule: str) -> bool:
    return any(relation_holds(a, b, relation, rule) for a in boxes_a for b in boxes_b)


def verdict_from_boxes(
    boxes_a: list[Box], boxes_b: list[Box], relation: str, rule: str = "geneval"
) -> tuple[bool, bool, str]:
    """(has_a, has_b, verdict) with verdict "ARB", "BRA" or "neither".

    GenEval: the best box of each object decides. VISOR: ARB when any (A box, B box) pair
    satisfies "A R B", else BRA when any pair satisfies "B R A". ARB is checked first: the
    image counts as correct when the prompt's relation is found at all, as VISOR scores it.
    """
    canonical = canonical_relation(relation)
    check_rule(rule)
    has_a, has_b = bool(boxes_a), bool(boxes_b)
    if not (has_a and has_b):
        return has_a, has_b, "neither"
    if rule == "visor":
        candidates_a, candidates_b = boxes_a, boxes_b
    else:
        candidates_a, candidates_b = [_best(boxes_a)], [_best(boxes_b)]
    if _any_pair_holds(candidates_a, candidates_b, canonical, rule):
        return True, True, "ARB"
    if _any_pair_holds(candidates_b, candidates_a, canonical, rule):
        return True, True, "BRA"
    return True, True, "neither"
