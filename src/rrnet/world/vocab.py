"""Vocabulary of the mini world: coloured shapes and positional relations.

Every object has a unique colour and a unique shape, so a rendered or generated
image can be judged exactly by colour first and shape second. Colours sit near
distinct corners of the RGB cube and far from the near-black background.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrnet.errors import DataError

BACKGROUND_RGB: tuple[int, int, int] = (24, 24, 24)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")


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
    WorldObject("red", "circle", (220, 40, 40)),
    WorldObject("blue", "square", (40, 60, 240)),
    WorldObject("green", "triangle", (40, 200, 40)),
    WorldObject("yellow", "diamond", (230, 210, 40)),
    WorldObject("purple", "cross", (190, 50, 210)),
    WorldObject("cyan", "ring", (30, 210, 210)),
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
