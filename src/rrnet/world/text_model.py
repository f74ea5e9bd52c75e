"""The mini world's text encoder: a small causal `CLIPTextModel` trained so direction lives in EOT.

Training is supervised and full-batch (a few seconds). Linear heads on the EOT state predict
which objects the prompt names and, for two-object prompts, the layout (axis, which object is
left/top, which is right/bottom); paraphrases ("A below B" = "B above A") share a target, so
the EOT state is order-aware. Every other position is pulled to be the same for a prompt and
its object-swapped twin, so, as the paper found for SD, only the EOT carries the direction.
For the recipe's collapsed pairs the direction heads are left out and the two directions' EOT
states are pulled together: the encoder reads those prompts as a bag of words.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from rrnet.tokens import tokenize_prompt
from rrnet.world.corpus import PromptItem, all_prompts
from rrnet.world.recipe import WorldRecipe
from rrnet.world.vocab import object_names


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
    """What the EOT state must tell: objects present, layout axis, first and second object."""

    def __init__(self, width: int, n_objects: int) -> None:
        super().__init__()
        self.present = nn.Linear(width, n_objects)
        self.axis = nn.Linear(width, 2)
        self.first = nn.Linear(width, n_objects)
        self.second = nn.Linear(width, n_objects)


def _swap_partner(items: list[PromptItem]) -> list[int]:
    """Index of each pair prompt's object-swapped twin (same relation), -1 for other prompts."""
    index = {it.text: i for i, it in enumerate(items)}
    out = []
    for it in items:
        if it.relation is None:
            out.append(-1)
            continue
        a, b = it.objects
        out.append(index[f"a {b} {it.relation} a {a}"])
    return out


def train_text_encoder(tokenizer, recipe: WorldRecipe, progress: bool = True):
    """Train the world's text encoder; returns it (eval mode) and final loss terms."""
    encoder = build_text_encoder(tokenizer, recipe)
    items = all_prompts(recipe)
    names = object_names()
    tokens = [tokenize_prompt(tokenizer, it.text) for it in items]
    ids = torch.tensor([t.input_ids for t in tokens])
    eot = torch.tensor([t.eot_index for t in tokens])
    present = torch.zeros(len(items), len(names))
    for i, it in enumerate(items):
        for obj in it.objects:
            present[i, names.index(obj)] = 1.0
    directed = torch.tensor([it.relation is not None and not it.collapsed for it in items])
    axis = torch.tensor([int(it.axis == "y") if it.axis else 0 for it in items])
    first = torch.tensor([names.index(it.first) if it.first else 0 for it in items])
    second = torch.tensor([names.index(it.second) if it.second else 0 for it in items])
    partner = torch.tensor(_swap_partner(items))
    has_partner = partner >= 0
    collapsed = torch.tensor([it.collapsed for it in items])
    not_eot = torch.ones(ids.shape, dtype=torch.bool)
    not_eot[torch.arange(len(items)), eot] = False

    heads = _Heads(recipe.text_width, len(names))
    params = list(encoder.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=recipe.text_lr, weight_decay=0.01)
    rows = torch.arange(len(items))
    bar = tqdm(range(recipe.text_steps), desc="text encoder", disable=not progress)
    terms = {}
    for _ in bar:
        states = encoder(ids).last_hidden_state
        e = states[rows, eot]
        loss_present = F.binary_cross_entropy_with_logits(heads.present(e[1:]), present[1:])
        d = e[directed]
        loss_layout = (F.cross_entropy(heads.axis(d), axis[directed]) + F.cross_entropy(heads.first(d), first[directed])
                       + F.cross_entropy(heads.second(d), second[directed]))
        twin = states[partner.clamp(min=0)]
        mask = (not_eot & not_eot[partner.clamp(min=0)])[has_partner]
        loss_bag = (states[has_partner] - twin[has_partner]).pow(2)[mask].mean()
        loss_collapse = (e[collapsed] - e[partner[collapsed]]).pow(2).mean()
        loss = loss_present + loss_layout + loss_bag + 10 * loss_collapse
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        terms = {"present": loss_present.item(), "layout": loss_layout.item(), "bag": loss_bag.item(), "collapse": loss_collapse.item()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
    encoder.eval().requires_grad_(False)
    return encoder, terms


@torch.no_grad()
def eot_cosines(encoder, tokenizer, recipe: WorldRecipe) -> dict[str, float]:
    """Mean EOT cosine of object-swapped prompts: order-aware pairs, collapsed pairs, paraphrases."""
    def eot_state(text):
        t = tokenize_prompt(tokenizer, text)
        return encoder(torch.tensor([t.input_ids])).last_hidden_state[0, t.eot_index]

    from rrnet.world.corpus import pair_prompts
    from rrnet.world.vocab import inverse_relation

    aware, collapsed, paraphrase = [], [], []
    for it in pair_prompts(recipe):
        a, b = it.objects
        cos = F.cosine_similarity(eot_state(it.text), eot_state(f"a {b} {it.relation} a {a}"), dim=0).item()
        (collapsed if it.collapsed else aware).append(cos)
        para = f"a {b} {inverse_relation(it.relation)} a {a}"
        paraphrase.append(F.cosine_similarity(eot_state(it.text), eot_state(para), dim=0).item())
    mean = lambda xs: sum(xs) / len(xs)
    return {"swapped_order_aware": mean(aware), "swapped_collapsed": mean(collapsed), "swapped_collapsed_min": min(collapsed),
            "paraphrase": mean(paraphrase)}
