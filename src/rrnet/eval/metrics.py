"""Counting judged images into the paper's numbers: relation accuracy and OGA, with 95% intervals;
and, for prompts stating several relations (scenes), the all-relations-correct rate, per-relation
accuracy and object accuracy.

Relation accuracy is the fraction of images with both objects present and the relation drawn the
prompt's way round (the same definition under every judge, `JudgeResult.correct`); Object
Generation Accuracy (OGA) the fraction where both objects were found (for the VLM judge:
questions 1-3 all answered yes). Unreadable answers stay in the denominator, so a judge that
cannot answer lowers accuracy rather than being quietly dropped, and their count is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from rrnet.eval.judges.base import SCENE_OUTCOMES, JudgeResult, SceneResult
from rrnet.eval.stats import wilson_interval

POSITION, ACTION = "position", "action"
CATEGORIES: tuple[str, ...] = (POSITION, ACTION)

# Relation words (or phrase heads) that name a place rather than an action.
_POSITION_WORDS = frozenset({
    "above", "below", "beneath", "under", "underneath", "over", "on", "onto", "upon", "atop", "top",
    "placed", "left", "right", "behind", "front", "inside", "in", "into", "beside", "next", "near",
    "between", "around", "outside", "across", "against", "along", "opposite",
})


def infer_category(relation: str) -> str:
    """"position" when any word of the relation is a spatial preposition, else "action"."""
    words = relation.lower().replace("-", " ").split()
    return POSITION if any(word in _POSITION_WORDS for word in words) else ACTION


@dataclass
class Tally:
    """Counts of judged images; `add` one result at a time, `+` to pool relations."""

    n: int = 0
    correct: int = 0
    swapped: int = 0
    neither: int = 0
    unreadable: int = 0
    objects: int = 0

    def add(self, result: JudgeResult) -> None:
        """Count one image under its one outcome (correct / swapped / neither / unreadable)."""
        outcome = result.outcome
        self.n += 1
        self.correct += outcome == "correct"
        self.swapped += outcome == "swapped"
        self.neither += outcome == "neither"
        self.unreadable += outcome == "unreadable"
        self.objects += bool(result.both)

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        """Counts, rates and Wilson intervals; rates are None when nothing was judged."""
        def rate(k: int) -> float | None:
            return k / self.n if self.n else None

        return {
            "n": self.n, "correct": self.correct, "swapped": self.swapped, "neither": self.neither,
            "unreadable": self.unreadable, "objects": self.objects,
            "relation_accuracy": rate(self.correct),
            "relation_accuracy_ci": list(wilson_interval(self.correct, self.n, confidence)) if self.n else None,
            "swapped_rate": rate(self.swapped),
            "oga": rate(self.objects),
            "oga_ci": list(wilson_interval(self.objects, self.n, confidence)) if self.n else None,
        }


def tally(results: Iterable[JudgeResult]) -> Tally:
    out = Tally()
    for result in results:
        out.add(result)
    return out


def summarize(per_relation: dict[str, Tally], categories: dict[str, str], confidence: float = 0.95) -> dict[str, Any]:
    """Per relation, per category (pooled images) and overall summaries of one method setting."""
    by_category: dict[str, Tally] = {}
    for name, counts in per_relation.items():
        by_category[categories[name]] = by_category.get(categories[name], Tally()) + counts
    overall = sum(per_relation.values(), Tally())
    return {
        "overall": overall.summary(confidence),
        "categories": {cat: counts.summary(confidence) for cat, counts in sorted(by_category.items())},
        "relations": {name: counts.summary(confidence) for name, counts in per_relation.items()},
    }


@dataclass
class SceneTally:
    """Counts of judged images of prompts stating several relations; `+` pools prompts and scenes.

    `n` counts images, `relation_verdicts` counts relations judged (each relation of each image
    once), so per-relation accuracy is `relations_correct / relation_verdicts`. Its Wilson interval treats the
    relations of one image as separate trials; they share an image, so the interval is a little
    narrower than an image-level one. An image is all-correct only when every relation is correct,
    which implies every object was found.
    """

    n: int = 0
    all_correct: int = 0
    objects: int = 0
    relation_verdicts: int = 0
    relations_correct: int = 0
    swapped: int = 0
    neither: int = 0
    missing: int = 0
    unreadable: int = 0

    def add(self, result: SceneResult) -> None:
        self.n += 1
        self.all_correct += result.all_correct
        self.objects += bool(result.objects_found)
        self.relation_verdicts += len(result.outcomes)
        for outcome in result.outcomes:
            self.relations_correct += outcome == "correct"
            self.swapped += outcome == "swapped"
            self.neither += outcome == "neither"
            self.missing += outcome == "missing"
            self.unreadable += outcome == "unreadable"

    def __add__(self, other: SceneTally) -> SceneTally:
        return SceneTally(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        """Counts, the three rates and their Wilson intervals; rates are None when nothing was judged."""
        def rate(k: int, n: int) -> tuple[float | None, list[float] | None]:
            return (k / n, list(wilson_interval(k, n, confidence))) if n else (None, None)

        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, k, n in (("all_correct_rate", self.all_correct, self.n),
                          ("relation_accuracy", self.relations_correct, self.relation_verdicts),
                          ("object_accuracy", self.objects, self.n)):
            out[key], out[f"{key}_ci"] = rate(k, n)
        return out


def scene_tally(results: Iterable[SceneResult]) -> SceneTally:
    out = SceneTally()
    for result in results:
        out.add(result)
    return out


def scene_relation_counts(relations: Sequence[Sequence[str]], results: Sequence[SceneResult],
                          confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per relation of one prompt (in prompt order): its outcome counts and accuracy with interval,
    so a prompt whose pooled numbers look fine still shows which of its relations fails."""
    out = []
    for k, triplet in enumerate(relations):
        counts = {outcome: sum(r.outcomes[k] == outcome for r in results) for outcome in SCENE_OUTCOMES}
        n = len(results)
        out.append({"relation": list(triplet), "n": n, **counts,
                    "accuracy": counts["correct"] / n if n else None,
                    "accuracy_ci": list(wilson_interval(counts["correct"], n, confidence)) if n else None})
    return out
