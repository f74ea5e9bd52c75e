"""The mini world's exact judge behind the common interface: known truth, CPU-cheap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from rrnet.errors import DataError
from rrnet.eval.judges.base import JudgeQuery, JudgeResult, SceneQuery, SceneResult
from rrnet.world.judge import judge_image, judge_relations
from rrnet.world.vocab import check_relations, object_names, relation_phrases


class ExactJudge:
    """Palette/shape/centroid judge for images of the mini world (`rrnet.world.judge`)."""

    name = "exact"
    label = "exact"

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "world": "rrnet.world"}

    def check(self, query: JudgeQuery | SceneQuery) -> None:
        """Refuse relations the mini world cannot judge, instead of judging them wrong."""
        triplets = query.relations if isinstance(query, SceneQuery) else [(query.object_a, query.relation, query.object_b)]
        for a, relation, b in triplets:
            for word in (a, b):
                if word not in object_names():
                    raise DataError(f"the exact judge only knows mini-world objects {list(object_names())}, got {word!r}")
            if relation not in relation_phrases():
                raise DataError(f"the exact judge only knows mini-world relations {list(relation_phrases())}, got {relation!r}")
        if isinstance(query, SceneQuery):  # the world's scene grammar: two relations sharing one object, two axes
            try:
                check_relations(query.relations)
            except DataError as exc:
                raise DataError(f"the exact judge cannot judge {query.prompt!r}: {exc}") from None

    def judge(self, images: Sequence[Image.Image], query: JudgeQuery) -> list[JudgeResult]:
        self.check(query)
        out = []
        for image in images:
            j = judge_image(image, query.object_a, query.relation, query.object_b)
            out.append(JudgeResult(has_a=j.has_a, has_b=j.has_b, both=j.has_a and j.has_b, verdict=j.verdict))
        return out

    def judge_scene(self, images: Sequence[Image.Image], query: SceneQuery) -> list[SceneResult]:
        """Each relation of the prompt judged from the same detections (`rrnet.world.judge.judge_relations`)."""
        self.check(query)
        out = []
        for image in images:
            j = judge_relations(image, query.relations)
            out.append(SceneResult(outcomes=j.outcomes, objects_found=j.objects_found))
        return out
