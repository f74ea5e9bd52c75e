"""The judge interface: image + triplet -> object A present, B present, both present, verdict.

Every judge (exact, VLM, detector) answers the same question for a batch of images of one
prompt, so the runner, the judgement cache and the metrics never depend on how a judge works.
A verdict is "ARB" (the prompt's own direction), "BRA" (the swapped direction), "neither", or
None when the judge's answer could not be read; None is reported, never counted as a guess.

Relation accuracy means the same under every judge: an image is correct only when both objects
are present and the relation holds the prompt's way round (`JudgeResult.correct`). Each image
has exactly one `outcome`, so the counts of every judge add up the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from rrnet.errors import RRNetError

VERDICTS: tuple[str, ...] = ("ARB", "BRA", "neither")
OUTCOMES: tuple[str, ...] = ("correct", "swapped", "neither", "unreadable")


@dataclass(frozen=True)
class JudgeQuery:
    """What one image should show: "A R B" (`prompt`), as opposed to "B R A" (`swapped_prompt`)."""

    object_a: str
    relation: str
    object_b: str
    prompt: str
    swapped_prompt: str

    def swapped(self) -> JudgeQuery:
        """The query for images of the swapped prompt: A and B trade places."""
        return JudgeQuery(self.object_b, self.relation, self.object_a, self.swapped_prompt, self.prompt)


@dataclass
class JudgeResult:
    """One image's judgement; `detail` keeps what the judge saw (raw answers, boxes) for auditing."""

    has_a: bool
    has_b: bool
    both: bool
    verdict: str | None
    unparseable: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise RRNetError(f"verdict must be one of {VERDICTS} or None, got {self.verdict!r}")

    @property
    def correct(self) -> bool:
        """Both objects are present and the relation is drawn the prompt's way round."""
        return self.outcome == "correct"

    @property
    def outcome(self) -> str:
        """One of OUTCOMES: an unreadable answer is never a guess, a missing object is never correct."""
        if self.verdict is None or self.unparseable:
            return "unreadable"
        if not self.both:
            return "neither"
        return {"ARB": "correct", "BRA": "swapped"}.get(self.verdict, "neither")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeResult:
        try:
            return cls(
                has_a=bool(data["has_a"]), has_b=bool(data["has_b"]), both=bool(data["both"]),
                verdict=data["verdict"], unparseable=list(data.get("unparseable", [])),
                detail=dict(data.get("detail", {})),
            )
        except (KeyError, TypeError) as exc:
            raise RRNetError(f"malformed judgement record: {exc}") from exc


@runtime_checkable
class Judge(Protocol):
    """A relation judge. `name` is its kind ("exact", "vlm", "detector"); `label` names it in
    table columns ("Position(label)"), e.g. a model's short name; `describe()` identifies it
    fully (model id, rule, decoding settings) and keys the judgement cache, so changing any of
    it re-judges instead of reusing stale verdicts. A judge that can give each relation of a
    prompt stating several relations its own verdict also has
    `judge_scene(images, SceneQuery) -> list[SceneResult]`; scene benchmarks take only such judges."""

    name: str
    label: str

    def describe(self) -> dict[str, Any]: ...

    def judge(self, images: Sequence[Image.Image], query: JudgeQuery) -> list[JudgeResult]: ...


# ---------------------------------------------------------------------------------------------
# Prompts stating several relations (scenes)
# ---------------------------------------------------------------------------------------------

SCENE_OUTCOMES: tuple[str, ...] = ("correct", "swapped", "neither", "missing", "unreadable")


@dataclass(frozen=True)
class SceneQuery:
    """What one image of a prompt stating several relations should show: every (A, R, B) of
    `relations`, in prompt order. A judge that can answer it gives each relation its own verdict."""

    relations: tuple[tuple[str, str, str], ...]
    prompt: str


@dataclass
class SceneResult:
    """One image's verdicts for a `SceneQuery`: `outcomes[k]` (one of SCENE_OUTCOMES) for relation k
    ("missing": an object of that relation was not found), and whether every named object was found."""

    outcomes: tuple[str, ...]
    objects_found: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outcomes = tuple(self.outcomes)
        bad = [o for o in self.outcomes if o not in SCENE_OUTCOMES]
        if bad or not self.outcomes:
            raise RRNetError(f"scene outcomes must be one or more of {SCENE_OUTCOMES}, got {list(self.outcomes)!r}")

    @property
    def all_correct(self) -> bool:
        """Every relation of the prompt is drawn the prompt's way round (so every object is present)."""
        return all(o == "correct" for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": list(self.outcomes), "objects_found": self.objects_found, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneResult:
        try:
            return cls(outcomes=tuple(data["outcomes"]), objects_found=bool(data["objects_found"]),
                       detail=dict(data.get("detail", {})))
        except (KeyError, TypeError) as exc:
            raise RRNetError(f"malformed scene judgement record: {exc}") from exc


def judges_scenes(judge: object) -> bool:
    """Whether a judge (or a judge factory) gives per-relation verdicts for prompts stating several
    relations: a judge with `judge_scene`, or a factory that says so."""
    scenes = getattr(judge, "scenes", None)
    return bool(scenes) if scenes is not None else callable(getattr(judge, "judge_scene", None))
