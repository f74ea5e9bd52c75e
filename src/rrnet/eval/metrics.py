"""Counting judged images into the paper's numbers: relation accuracy and OGA, with 95% intervals.

Relation accuracy is the fraction of images with both objects present and the relation drawn the
prompt's way round (the same definition under every judge, `JudgeResult.correct`); Object
Generation Accuracy (OGA) the fraction where both objects were found (for the VLM judge:
questions 1-3 all answered yes). Unreadable answers stay in the denominator, so a judge that
cannot answer lowers accuracy rather than being quietly dropped, and their count is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from rrnet.eval.judges.base import JudgeResult
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
