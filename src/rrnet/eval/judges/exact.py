"""The mini world's exact judge behind the common interface: known truth, CPU-cheap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from rrnet.errors import DataError
from rrnet.eval.judges.base import JudgeQuery, JudgeResult
from rrnet.world.judge import judge_image
from rrnet.world.vocab import object_names, relation_phrases


class ExactJudge:
    """Palette/shape/centroid judge for images of the mini world (`rrnet.world.judge`)."""

    name = "exact"
    label = "exact"

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "world": "rrnet.world"}

    def check(self, query: JudgeQuery) -> None:
        """Refuse relations the mini world cannot judge, instead of judging them wrong."""
        for word in (query.object_a, query.object_b):
            if word not in object_names():
                raise DataError(f"the exact judge only knows mini-world objects {list(object_names())}, got {word!r}")
        if query.relation not in relation_phrases():
            raise DataError(f"the exact judge only knows mini-world relations {list(relation_phrases())}, got {query.relation!r}")

    def judge(self, images: Sequence[Image.Image], query: JudgeQuery) -> list[JudgeResult]:
        self.check(query)
        out = []
        for image in images:
            j = judge_image(image, query.object_a, query.relation, query.object_b)
            out.append(JudgeResult(has_a=j.has_a, has_b=j.has_b, both=j.has_a and j.has_b, verdict=j.verdict))
        return out
