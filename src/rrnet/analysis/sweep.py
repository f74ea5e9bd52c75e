"""The alpha sweep (paper Fig. 4): the same seeds at increasing alpha, one grid row per prompt.

The images, grid and `generation.json` come from `rrnet.generate.generate` unchanged; this adds
`alpha_sweep.json` with, for a prompt pair, the rectified EOT cosine at each alpha (how far
apart the rectifier pushes the pair, Sec. 3.1) and, for a mini-world relation, the exact judge's
fractions at each alpha.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from rrnet.analysis.judging import judge_for_prompt
from rrnet.analysis.osp import osp_similarity
from rrnet.analysis.records import write_json
from rrnet.errors import PromptError, RRNetError
from rrnet.generate import (
    DEFAULT_ALPHAS,
    GenerationResult,
    GenerationSettings,
    alpha_label,
    generate,
)
from rrnet.rectifier import RelationRectifier

SWEEP_FILE = "alpha_sweep.json"


@dataclass
class SweepResult:
    generation: GenerationResult
    record: Path
    summary: dict


def _load(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def alpha_sweep(
    pipe,
    rectifier: RelationRectifier,
    prompts: Sequence[str],
    output_dir: str | Path,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    settings: GenerationSettings | None = None,
    triplet: tuple[str, str, str] | None = None,
    progress: bool = True,
    metadata: dict | None = None,
) -> SweepResult:
    """`generate` every prompt at every alpha, then write `alpha_sweep.json` next to its outputs."""
    if not prompts:
        raise PromptError("no prompts given")
    if not alphas:
        raise RRNetError("an alpha sweep needs at least one alpha")
    prompts, alphas = list(prompts), [float(a) for a in alphas]
    settings = dataclasses.replace(settings or GenerationSettings(), alphas=tuple(alphas))
    result = generate(pipe, prompts, output_dir, rectifier, settings, triplet, progress=progress, metadata=metadata)
    out = result.output_dir
    cosines = None
    if len(prompts) == 2:
        report = osp_similarity(pipe, [(prompts[0], prompts[1])], rectifier, alphas, triplet)
        pair = report.pairs[0]
        cosines = {"base": pair.eot_cosine, **{alpha_label(a): pair.rectified_eot_cosine[f"{a:g}"] for a in alphas}}
    judged = {
        prompt: {label: judge_for_prompt(pipe.tokenizer, _load(paths), prompt, triplet) for label, paths in per_alpha.items()}
        for prompt, per_alpha in result.images.items()
    }
    if all(v is None for per in judged.values() for v in per.values()):
        judged = None
    summary = {"eot_cosine_between_prompts": cosines, "judged": judged}
    record = {
        "analysis": "alpha_sweep", "prompts": prompts, "alphas": alphas, "triplet": list(triplet) if triplet else None,
        "settings": dataclasses.asdict(settings), "generation": "generation.json", "grid": "grid.png",
        "images": {p: {a: [str(x.relative_to(out)) for x in v] for a, v in d.items()} for p, d in result.images.items()},
        **summary, **(metadata or {}),
    }
    return SweepResult(generation=result, record=write_json(out / SWEEP_FILE, record), summary=summary)
