"""Vocabulary of the mini world: coloured shapes and positional relations.

Every object has a unique colour and a unique shape, so a rendered or generated
image can be judged exactly by colour first and shape second. The eight colours are
at least 150 apart in RGB from each other and from the near-black background, and
the shapes are solid enough to survive 32 px (no thin rings or stars).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rrnet.errors import DataError

Triplet = tuple[str, str, str]

BACKGROUND_RGB: tuple[int, int, int] = (24, 24, 24)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "column", "bar", "wedge")


@dataclass(frozen=True)
class WorldObject:
    """One drawable object: a colour name, a shape name and the exact fill colour."""

    colour: str
    shape: str
    rgb: tuple[int, int, int]

    @property
    def name(self) -> str:
        """Name as used in prompts, e.g. "red circle"."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Relation:
    """A positional relation "A <phrase> B".

    ``axis`` is "x" (grows rightwards) or "y" (grows downwards, image rows);
    ``a_first`` says whether A has the smaller coordinate on that axis when the
    relation holds ("left of" and "above" put A first).
    """

    phrase: str
    axis: str
    a_first: bool


@dataclass(frozen=True)
class CanonicalRelation:
    """Relation in a form where "A below B" and "B above A" compare equal.

    ``first`` has the smaller coordinate than ``second`` along ``axis``.
    """

    axis: str
    first: str
    second: str


OBJECTS: tuple[WorldObject, ...] = (
    WorldObject("red", "circle", (215, 50, 10)),
    WorldObject("blue", "square", (10, 70, 220)),
    WorldObject("green", "triangle", (60, 170, 35)),
    WorldObject("yellow", "diamond", (225, 215, 40)),
    WorldObject("purple", "cross", (150, 5, 205)),
    WorldObject("cyan", "column", (60, 240, 235)),
    WorldObject("white", "bar", (250, 250, 250)),
    WorldObject("pink", "wedge", (245, 120, 165)),
)

RELATIONS: tuple[Relation, ...] = (
    Relation("left of", "x", True),
    Relation("right of", "x", False),
    Relation("above", "y", True),
    Relation("below", "y", False),
)

_OBJECTS_BY_NAME = {o.name: o for o in OBJECTS}
_RELATIONS_BY_PHRASE = {r.phrase: r for r in RELATIONS}


def object_names() -> tuple[str, ...]:
    """All object names, in palette order."""
    return tuple(o.name for o in OBJECTS)


def relation_phrases() -> tuple[str, ...]:
    """All relation phrases."""
    return tuple(r.phrase for r in RELATIONS)


def get_object(name: str) -> WorldObject:
    """Look up an object by name; unknown names are a user error."""
    try:
        return _OBJECTS_BY_NAME[name]
    except KeyError:
        raise DataError(f"unknown object {name!r}; known: {', '.join(object_names())}") from None


def get_relation(phrase: str) -> Relation:
    """Look up a relation by phrase; unknown phrases are a user error."""
    try:
        return _RELATIONS_BY_PHRASE[phrase]
    except KeyError:
        raise DataError(
            f"unknown relation {phrase!r}; known: {', '.join(relation_phrases())}"
        ) from None


def inverse_relation(phrase: str) -> str:
    """The phrase that states the same fact with the objects swapped ("above" -> "below")."""
    rel = get_relation(phrase)
    for other in RELATIONS:
        if other.axis == rel.axis and other.a_first != rel.a_first:
            return other.phrase
    raise DataError(f"relation {phrase!r} has no inverse")


def prompt_for(a: str, relation: str, b: str) -> str:
    """Prompt text for "A <relation> B", e.g. "a red circle above a blue square"."""
    get_object(a)
    get_relation(relation)
    get_object(b)
    return f"a {a} {relation} a {b}"


def check_relations(triplets: Sequence[Triplet]) -> tuple[Triplet, ...]:
    """Validate the relations of one caption: one, or two that share exactly one object.

    Two relations must lie on different axes (one of left of / right of, one of above / below):
    that is the world's scene grammar, and it keeps every scene drawable without ambiguity.
    """
    triplets = tuple(tuple(t) for t in triplets)
    if len(triplets) not in (1, 2):
        raise DataError(f"a mini-world caption states one or two relations, got {len(triplets)}")
    for a, relation, b in triplets:
        get_object(a)
        get_relation(relation)
        get_object(b)
        if a == b:
            raise DataError(f"a relation needs two different objects, got {a!r} twice")
    if len(triplets) == 2:
        (a1, r1, b1), (a2, r2, b2) = triplets
        shared = {a1, b1} & {a2, b2}
        if len(shared) != 1:
            raise DataError("the two relations of a caption must share exactly one object, "
                            f"got {a1!r}/{b1!r} and {a2!r}/{b2!r}")
        if get_relation(r1).axis == get_relation(r2).axis:
            raise DataError(f"the two relations of a caption must lie on different axes, got {r1!r} and {r2!r}")
    return triplets


def caption_for(triplets: Sequence[Triplet]) -> str:
    """Caption of one or two relations: "a red circle above a blue square and a green triangle
    left of the blue square". Relations are joined by "and"; an object named before is "the X"."""
    triplets = check_relations(triplets)
    named: set[str] = set()
    clauses = []
    for a, relation, b in triplets:
        words = []
        for obj in (a, b):
            words.append(f"{'the' if obj in named else 'a'} {obj}")
            named.add(obj)
        clauses.append(f"{words[0]} {relation} {words[1]}")
    return " and ".join(clauses)


def swap_clause(triplets: Sequence[Triplet], k: int) -> tuple[Triplet, ...]:
    """The same relations with the objects of relation `k` swapped (its opposite arrangement)."""
    out = [tuple(t) for t in triplets]
    a, relation, b = out[k]
    out[k] = (b, relation, a)
    return tuple(out)


def object_prompt(obj: str) -> str:
    """Prompt text for a single-object image."""
    get_object(obj)
    return f"a photo of a {obj}"


def canonical(a: str, relation: str, b: str) -> CanonicalRelation:
    """Canonical form of "A <relation> B" so that equivalent statements compare equal."""
    rel = get_relation(relation)
    get_object(a)
    get_object(b)
    first, second = (a, b) if rel.a_first else (b, a)
    return CanonicalRelation(rel.axis, first, second)


def same_fact(s1: tuple[str, str, str], s2: tuple[str, str, str]) -> bool:
    """Whether two (A, relation, B) statements describe the same arrangement."""
    return canonical(*s1) == canonical(*s2)
