"""How alike a prompt and its object-swapped prompt (OSP) look to the model (paper Sec. 3.1).

The paper's key observation is that the EOT hidden states of "A R B" and "B R A" have a cosine
similarity close to 1, so the UNet cannot tell them apart; RRNet's job is to push them apart.
This measures that cosine for the base text encoder and, given a rectifier, for the rectified
EOT (the rectifier's `prompt_embeds` at the EOT index) at each alpha. The cosine of the mean
word-token state (positions between the start token and EOT) is reported alongside, as a
reference for how much the rest of the sequence differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from rrnet.analysis.records import write_json
from rrnet.errors import PromptError
from rrnet.generate import DEFAULT_ALPHAS
from rrnet.rectifier import EncodedPrompt, RelationRectifier, encode_prompt

OSP_FILE = "osp.json"


@dataclass
class PairSimilarity:
    """Cosines for one prompt pair; `rectified_eot_cosine` maps alpha (as text, e.g. "0.6") to cosine."""

    prompt: str
    swapped: str
    eot_cosine: float
    word_mean_cosine: float | None
    rectified_eot_cosine: dict[str, float] = field(default_factory=dict)


@dataclass
class OSPReport:
    """All pairs, the alphas the rectified cosines were taken at, and their means."""

    pairs: list[PairSimilarity]
    alphas: list[float] = field(default_factory=list)
    triplet: list[str] | None = None

    def summary(self) -> dict:
        n = len(self.pairs)
        rectified = {key: sum(p.rectified_eot_cosine[key] for p in self.pairs) / n for key in self.pairs[0].rectified_eot_cosine} if n else {}
        return {"pairs": n, "eot_cosine_mean": sum(p.eot_cosine for p in self.pairs) / n if n else None,
                "rectified_eot_cosine_mean": rectified}

    def as_dict(self) -> dict:
        return {"analysis": "osp_eot_cosine", "alphas": self.alphas, "triplet": self.triplet,
                "summary": self.summary(), "pairs": [asdict(p) for p in self.pairs]}

    def save(self, output_dir: str | Path, metadata: dict | None = None) -> Path:
        """Write `osp.json` into `output_dir`."""
        return write_json(Path(output_dir) / OSP_FILE, {**self.as_dict(), **(metadata or {})})


def alpha_key(alpha: float) -> str:
    return f"{alpha:g}"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors, computed in float64."""
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def word_mean(encoded: EncodedPrompt) -> torch.Tensor | None:
    """Mean hidden state of the tokens between the start token and EOT (None for an empty prompt)."""
    eot = encoded.tokens.eot_index
    return encoded.hidden[1:eot].mean(0) if eot > 1 else None


def parse_pair(text: str) -> tuple[str, str]:
    """"prompt|swapped prompt" -> (prompt, swapped prompt); anything else is a one-line error."""
    parts = [p.strip() for p in text.split("|")]
    if len(parts) != 2 or not all(parts):
        raise PromptError(f"{text!r}: a pair is two non-empty prompts separated by one '|', e.g. 'a book on a bowl|a bowl on a book'")
    return parts[0], parts[1]


def osp_similarity(
    pipe,
    pairs: Sequence[tuple[str, str]],
    rectifier: RelationRectifier | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    triplet: tuple[str, str, str] | None = None,
) -> OSPReport:
    """EOT cosine of each (prompt, swapped) pair: base model, and rectified at each alpha if given."""
    if not pairs:
        raise PromptError("no prompt pairs to compare")
    if rectifier is not None:
        rectifier.check_backbone(pipe)
    alphas = [float(a) for a in alphas] if rectifier is not None else []
    results = []
    for prompt, swapped in pairs:
        x, y = encode_prompt(pipe, prompt), encode_prompt(pipe, swapped)
        wx, wy = word_mean(x), word_mean(y)
        result = PairSimilarity(prompt, swapped, cosine(x.eot, y.eot), None if wx is None or wy is None else cosine(wx, wy))
        for alpha in alphas:
            embeds = rectifier.prompt_embeds(pipe, [prompt, swapped], alpha=alpha, triplet=triplet).float()
            result.rectified_eot_cosine[alpha_key(alpha)] = cosine(embeds[0, x.tokens.eot_index], embeds[1, y.tokens.eot_index])
        results.append(result)
    return OSPReport(pairs=results, alphas=alphas, triplet=list(triplet) if triplet else None)
