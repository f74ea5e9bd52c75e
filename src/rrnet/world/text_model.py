"""The mini world's text encoder: a small causal `CLIPTextModel` trained so direction lives in EOT.

Training is supervised (a few minutes on a CPU). Linear heads on the EOT state predict which
objects the caption names and, per axis (vertical, horizontal), which two objects a relation on
that axis joins and which of them is first (top / left); paraphrases ("A below B" = "B above A")
share a target, so the EOT state is order-aware. Every other position (padding included) is
pulled to be the same for a caption and its twin with one relation's objects swapped, so, as the
paper found for SD, only the EOT carries the direction. For the recipe's collapsed pairs the
"first" head is left out and the two arrangements' EOT states are pulled together, inside
two-relation captions too: the encoder reads those relations as a bag of words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rrnet.world.corpus import Corpus, PromptItem
from rrnet.world.recipe import AXES, WorldRecipe
from rrnet.world.vocab import canonical, object_names


def build_text_encoder(tokenizer, recipe: WorldRecipe):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.text_width, intermediate_size=2 * recipe.text_width,
        num_hidden_layers=recipe.text_layers, num_attention_heads=recipe.text_heads, max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu", projection_dim=recipe.text_width,
    )
    torch.manual_seed(recipe.seed)
    return CLIPTextModel(config)


class _Heads(nn.Module):
    """What the EOT state must tell: objects present; per axis, the related pair and which is first."""

    def __init__(self, width: int, n_objects: int) -> None:
        super().__init__()
        self.present = nn.Linear(width, n_objects)
        self.members = nn.ModuleDict({axis: nn.Linear(width, n_objects) for axis in AXES})
        self.first = nn.ModuleDict({axis: nn.Linear(width, n_objects) for axis in AXES})


IGNORE = -100


@dataclass
class CaptionTable:
    """Every caption of the corpus as token ids, EOT index, head targets and twins, as tensors."""

    items: list[PromptItem]
    ids: torch.Tensor  # (N, 77)
    eot: torch.Tensor  # (N,)
    present: torch.Tensor  # (N, n_objects)
    members: dict[str, torch.Tensor]  # axis -> (N, n_objects)
    first: dict[str, torch.Tensor]  # axis -> (N,), IGNORE where unknown or collapsed
    twins: torch.Tensor  # (N, 2): row of the caption with relation k swapped, -1 where none
    twin_collapsed: torch.Tensor  # (N, 2) bool: relation k is collapsed

    @classmethod
    def build(cls, tokenizer, items: list[PromptItem]) -> "CaptionTable":
        names = object_names()
        row = {it.text: i for i, it in enumerate(items)}
        enc = tokenizer([it.text for it in items], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt")
        ids = enc.input_ids
        eot = (ids == tokenizer.eos_token_id).int().argmax(dim=1)
        n = len(items)
        present = torch.zeros(n, len(names))
        members = {axis: torch.zeros(n, len(names)) for axis in AXES}
        first = {axis: torch.full((n,), IGNORE) for axis in AXES}
        twins = torch.full((n, 2), -1)
        twin_collapsed = torch.zeros(n, 2, dtype=torch.bool)
        for i, it in enumerate(items):
            for obj in it.objects:
                present[i, names.index(obj)] = 1.0
            for k, collapsed in enumerate(it.collapsed):
                twins[i, k] = row[it.twin(k)]
                twin_collapsed[i, k] = collapsed
            for (a, relation, b), collapsed in zip(it.triplets, it.collapsed):
                c = canonical(a, relation, b)
                members[c.axis][i, names.index(a)] = members[c.axis][i, names.index(b)] = 1.0
                if not collapsed:
                    first[c.axis][i] = names.index(c.first)
        return cls(items, ids, eot, present, members, first, twins, twin_collapsed)


def _loss_terms(encoder, heads: _Heads, table: CaptionTable, rows: torch.Tensor, twin_k: torch.Tensor,
                length: int, max_aware_cosine: float) -> dict[str, torch.Tensor]:
    """Supervised heads on every forwarded caption; bag and collapse terms between captions with a
    relation and their twin with relation `twin_k` swapped. Only the first `length` positions are
    run: the encoder is causal, so they are exactly what the full sequence gives there."""
    paired = table.twins[rows, 0] >= 0
    twin_rows = table.twins[rows[paired], twin_k[paired]]
    collapsed = table.twin_collapsed[rows[paired], twin_k[paired]]
    everything = torch.cat([rows, twin_rows])
    states = encoder(table.ids[everything, :length]).last_hidden_state
    e = states[torch.arange(len(everything)), table.eot[everything]]
    terms = {"present": F.binary_cross_entropy_with_logits(heads.present(e), table.present[everything])}
    layout = 0.0
    for axis in AXES:
        layout = layout + F.binary_cross_entropy_with_logits(heads.members[axis](e), table.members[axis][everything])
        target = table.first[axis][everything]
        if (target != IGNORE).any():
            layout = layout + F.cross_entropy(heads.first[axis](e), target, ignore_index=IGNORE)
    terms["layout"] = layout
    n = len(rows)
    own, twin = states[:n][paired], states[n:]
    not_eot = torch.ones(own.shape[:2], dtype=torch.bool)
    not_eot[torch.arange(len(own)), table.eot[rows[paired]]] = False
    terms["bag"] = (own - twin).pow(2)[not_eot].mean()
    e_own, e_twin = e[:n][paired], e[n:]
    terms["collapse"] = (e_own[collapsed] - e_twin[collapsed]).pow(2).mean() if collapsed.any() else e.sum() * 0
    # an order-aware relation must move the EOT clearly, not just enough for a linear head
    cos = F.cosine_similarity(e_own[~collapsed], e_twin[~collapsed], dim=1)
    terms["separate"] = F.relu(cos - max_aware_cosine).mean()
    return terms


def train_text_encoder(tokenizer, recipe: WorldRecipe, progress: bool = True, corpus: Corpus | None = None):
    """Train the world's text encoder; returns it (eval mode) and final loss terms."""
    encoder = build_text_encoder(tokenizer, recipe)
    corpus = corpus or Corpus.build(recipe)
    fixed = [PromptItem("", ())] + corpus.pairs + corpus.singles
    table = CaptionTable.build(tokenizer, fixed + corpus.scenes)
    n_fixed, n_all = len(fixed), len(table.items)
    heads = _Heads(recipe.text_width, len(object_names()))
    params = list(encoder.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.text_lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(recipe.seed + 10)
    bar = tqdm(range(recipe.text_steps), desc="text encoder", disable=not progress)
    terms: dict[str, float] = {}
    short = int(table.eot.max()) + 1 + recipe.text_padding_trained
    for step in bar:
        # most steps stop a few padding positions after the longest caption; every few steps run
        # all 77 positions, so padding far from the text is pulled together as well
        length = table.ids.shape[1] if step % recipe.text_full_length_every == 0 else short
        scenes = torch.randint(n_fixed, n_all, (recipe.text_scene_batch,), generator=generator)
        rows = torch.cat([torch.arange(n_fixed), scenes])
        # which relation's objects to swap for the twin: either one of a two-relation caption
        twin_k = torch.randint(0, 2, (len(rows),), generator=generator) * (table.twins[rows, 1] >= 0)
        step_terms = _loss_terms(encoder, heads, table, rows, twin_k, length, recipe.text_max_aware_cosine)
        loss = (step_terms["present"] + step_terms["layout"] + step_terms["bag"] + 10 * step_terms["collapse"]
                + step_terms["separate"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        terms = {name: value.item() for name, value in step_terms.items()}
        bar.set_postfix({name: f"{value:.3f}" for name, value in terms.items()})
    encoder.eval().requires_grad_(False)
    return encoder, terms


@torch.no_grad()
def eot_states(encoder, tokenizer, texts: list[str], batch: int = 512) -> torch.Tensor:
    """EOT hidden state of every text (N, D)."""
    out = []
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        ids = tokenizer(chunk, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        eot = (ids == tokenizer.eos_token_id).int().argmax(dim=1)
        states = encoder(ids).last_hidden_state
        out.append(states[torch.arange(len(chunk)), eot])
    return torch.cat(out)


@torch.no_grad()
def swapped_cosines(encoder, tokenizer, items: list[PromptItem]) -> list[tuple[PromptItem, int, float]]:
    """(item, k, EOT cosine of the caption and its twin with relation k swapped) for every relation."""
    jobs = [(it, k) for it in items for k in range(len(it.triplets))]
    own = eot_states(encoder, tokenizer, [it.text for it, _ in jobs])
    twin = eot_states(encoder, tokenizer, [it.twin(k) for it, k in jobs])
    cos = F.cosine_similarity(own, twin, dim=1).tolist()
    return [(it, k, c) for (it, k), c in zip(jobs, cos)]


@torch.no_grad()
def eot_cosines(encoder, tokenizer, recipe: WorldRecipe, corpus: Corpus | None = None) -> dict[str, float]:
    """EOT cosine of object-swapped captions: order-aware vs collapsed relations, one and two per caption."""
    corpus = corpus or Corpus.build(recipe)
    out: dict[str, float] = {}
    for kind, items in (("pairs", corpus.pairs), ("scenes", corpus.scenes)):
        rows = swapped_cosines(encoder, tokenizer, items)
        aware = [c for it, k, c in rows if not it.collapsed[k]]
        collapsed = [c for it, k, c in rows if it.collapsed[k]]
        out[f"{kind}_swapped_order_aware"] = float(np.mean(aware))
        out[f"{kind}_swapped_order_aware_max"] = float(np.max(aware))
        out[f"{kind}_swapped_collapsed"] = float(np.mean(collapsed))
        out[f"{kind}_swapped_collapsed_min"] = float(np.min(collapsed))
    return out
