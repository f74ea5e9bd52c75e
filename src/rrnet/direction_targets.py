"""Direction targets: what a direction edit looks like, read from prompts the text encoder already orders.

For an order-aware pair the text encoder gives "A R B" and "B R A" different EOT states: half
their difference is the direction part, and their mean is what an encoder blind to the order
would give both. Shown the graph of "A R B" over that mean, a rectifier should output the
direction part. Such pairs need no images and come in far greater numbers than exemplar folders,
so they teach one rectifier a direction edit that carries over to object pairs it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rrnet.errors import DataError
from rrnet.graph import PROMPT_ADJUST, batch_graphs
from rrnet.prompt_parser import parse_relations
from rrnet.rectifier import EncodedPrompt, RelationRectifier, Triplet, encode_prompt

PromptPair = tuple[str, str]  # a prompt and the same prompt with its two objects swapped


@dataclass
class DirectionTargets:
    """Graphs over the two prompts' mean EOT (both orders of each pair) and their target adjustments."""

    batched: object
    targets: torch.Tensor  # (N, D): half the EOT difference, prompt minus swap
    pairs: list[PromptPair]


def read_prompt_pairs(path: str | Path) -> list[PromptPair]:
    """'prompt | swapped prompt' per line; blank lines and # comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read prompt pairs ({' '.join(str(exc).split())[:120]})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise DataError(f"{path}:{number}: expected 'prompt | swapped prompt' (two different prompts)")
        pairs.append((parts[0], parts[1]))
    if not pairs:
        raise DataError(f"{path}: no prompt pairs")
    return pairs


def pair_triplet(pair: PromptPair, phrases: dict[str, str]) -> Triplet:
    """The (A, R, B) of a prompt pair, read with the relation phrases the rectifier trains on; the
    swapped prompt must state the same relation with the objects the other way round."""
    found = [parse_relations(prompt, phrases) for prompt in pair]
    if any(len(f) != 1 for f in found):
        raise DataError(f"prompt pair {pair!r}: each prompt must state one relation the rectifier trains on "
                        f"({', '.join(sorted(phrases))})")
    (a, r, b), (c, s, d) = found[0][0], found[1][0]
    if (c, s, d) != (b, r, a):
        raise DataError(f"prompt pair {pair!r}: the second prompt is not the first with its objects swapped")
    return Triplet(a, r, b)


def prepare_direction_targets(pipe, rectifier: RelationRectifier, pairs: Sequence[PromptPair]) -> DirectionTargets:
    """Encode every pair once; both orders of each pair become one training graph."""
    phrases = rectifier.relation_phrases()
    graphs, targets = [], []
    for pair in pairs:
        triplet = pair_triplet(pair, phrases)
        x, y = (encode_prompt(pipe, p) for p in pair)
        mean = 0.5 * (x.eot + y.eot)
        for enc, other, t in ((x, y, triplet), (y, x, triplet.swapped())):
            hidden = enc.hidden.clone()
            hidden[enc.tokens.eot_index] = mean
            sentence = encode_prompt(pipe, rectifier.object_sentence(t.object_a))
            graphs.append(rectifier.build_graph(pipe, t, EncodedPrompt(tokens=enc.tokens, hidden=hidden), sentence))
            targets.append(0.5 * (enc.eot - other.eot))
    device = next(rectifier.parameters()).device
    return DirectionTargets(batch_graphs(graphs), torch.stack(targets).to(device), list(pairs))


def direction_loss(rectifier: RelationRectifier, targets: DirectionTargets) -> torch.Tensor:
    """Mean squared distance between the prompt adjustments and the direction parts."""
    delta = rectifier.adjust_vectors(targets.batched)[:, PROMPT_ADJUST]
    return F.mse_loss(delta, targets.targets)
