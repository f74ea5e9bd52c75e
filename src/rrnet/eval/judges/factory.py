"""Judges by name, as the command line asks for them; heavy model judges are imported lazily."""

from __future__ import annotations

from collections.abc import Callable

from rrnet.errors import RRNetError
from rrnet.eval.judges.base import Judge, JudgeQuery

JUDGE_KINDS: tuple[str, ...] = ("exact", "vlm", "detector")


class JudgeFactory:
    """Builds a judge when called; `check(query)` refuses what the judge cannot judge without
    loading its model, so a bad benchmark is refused before the first image is generated.
    `scenes` says whether the judge gives per-relation verdicts for prompts stating several
    relations, so a scene benchmark is refused before any model loads."""

    def __init__(self, build: Callable[[], Judge], check: Callable[[JudgeQuery], None] | None = None,
                 scenes: bool = False, kind: str = "") -> None:
        self._build, self._check = build, check
        self.scenes, self.kind = scenes, kind

    def __call__(self) -> Judge:
        return self._build()

    def check(self, query: JudgeQuery) -> None:
        if self._check is not None:
            self._check(query)


def judge_factory(kind: str, model: str | None = None, rule: str = "geneval", device: str | None = None,
                  batch_size: int = 8, dtype: str = "auto") -> JudgeFactory:
    """A zero-argument function that builds the judge, so its model is loaded only when needed."""
    if kind not in JUDGE_KINDS:
        raise RRNetError(f"unknown judge {kind!r}; choose from {list(JUDGE_KINDS)}")
    if kind == "exact":
        if model is not None:
            raise RRNetError("the exact judge takes no --judge_model")
        from rrnet.eval.judges.exact import ExactJudge

        return JudgeFactory(ExactJudge, ExactJudge().check, scenes=True, kind=kind)
    if not model:
        raise RRNetError(f"the {kind} judge needs a model (--judge_model: hub id or local folder)")
    if kind == "vlm":
        from rrnet.eval.judges.vlm import VLMJudge

        return JudgeFactory(lambda: VLMJudge.from_pretrained(model, device=device, dtype=dtype, batch_size=batch_size),
                            kind=kind)
    from rrnet.eval.judges.detector import DetectorJudge, check_positional

    return JudgeFactory(lambda: DetectorJudge.from_pretrained(model, rule=rule, device=device, batch_size=batch_size),
                        lambda query: check_positional(query.relation) and None, kind=kind)


def judge_factories(kinds: list[str], models: list[str] | None, **options) -> list[JudgeFactory]:
    """Pair `--judge` kinds with `--judge_model` values in order; the exact judge takes none."""
    models = list(models or [])
    needs = [k for k in kinds if k != "exact"]
    if len(models) != len(needs):
        raise RRNetError(
            f"--judge_model needs one model per vlm/detector judge ({len(needs)}), got {len(models)}"
        )
    it = iter(models)
    return [judge_factory(kind, None if kind == "exact" else next(it), **options) for kind in kinds]
