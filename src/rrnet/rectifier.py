"""The relation rectifier: graph network -> adjustment vector -> edited EOT embedding.

The text encoder, UNet and VAE stay frozen. The rectifier reads the frozen token-embedding table
(object and relation nodes) and the EOT hidden states (adjust nodes), runs the HGCN, and adds
`alpha * delta` to the prompt embedding at the first EOT position only. The result is plain
`prompt_embeds`, so any diffusers pipeline that accepts `prompt_embeds` can use it.

SDXL (`rrnet.backbones.sdxl`): the graph network works on both encoders' states side by side (the
2048-wide EOT row of `prompt_embeds`, both token tables' rows for a word), and the pooled
embedding follows the same edit through text_encoder_2's own last layer, final layer norm and
projection, so `prompt_embeds` returns both tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import MLP

from rrnet.atomic import atomic_write, atomic_write_text
from rrnet.backbones import sdxl
from rrnet.errors import CheckpointError, PromptError
from rrnet.graph import (OBJECT, OBJECT_SENTENCE_ADJUST, PROMPT_ADJUST, RELATION, batch_graphs, mirrored, prompt_graph,
                         relation_graph)
from rrnet.hgcn import HGCN
from rrnet.prompt_parser import parse_relations, relation_phrases
from rrnet.tokens import PromptTokens, order_in_prompt, tokenize_prompt, word_embedding

CONFIG_NAME = "config.json"
# "free": the no-graph-network ablation, one learned vector per prompt; "role": the prompt's adjustment is
# f(A, R) - f(B, R), one vector per object in its role, summed over the prompt's relations (`role_vectors`);
# "triplet": f(A, R, B), an MLP of the whole triplet with no structure imposed (`triplet_vectors`)
ADJUSTERS = ("hgcn", "free", "role", "triplet")
EDIT_POSITIONS = ("eot", "after_eot")  # "after_eot": the ablation editing the EOT and all padding after it
WEIGHTS_NAME = "rectifier.safetensors"
OBJECT_TEMPLATE = "this is a photo of {}"
FORMAT = "rrnet-rectifier"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Triplet:
    """A directional relation: `object_a relation object_b`, e.g. ("book", "placed", "bowl")."""

    object_a: str
    relation: str
    object_b: str

    def swapped(self) -> "Triplet":
        return Triplet(self.object_b, self.relation, self.object_a)


@dataclass
class RectifierConfig:
    """Everything needed to rebuild a rectifier and check it fits a backbone; stored as JSON."""

    text_width: int  # width of the EOT vector it edits (SDXL: both encoders' widths summed)
    hidden: int = 512
    heads: int = 2
    num_layers: int = 2
    object_template: str = OBJECT_TEMPLATE
    triplets: list[dict] = field(default_factory=list)
    prompts: list[list[str]] = field(default_factory=list)
    relation_phrases: dict[str, str] = field(default_factory=dict)  # phrase -> relation word; empty: from the prompts
    backbone: str | None = None
    training: dict = field(default_factory=dict)
    adjuster: str = "hgcn"
    edit_positions: str = "eot"
    # the prompt's adjustment is g(A R B) - g(B R A) over the same EOT: swapping the objects negates it,
    # so a pair whose two prompts share an EOT is always pushed to two opposite layouts
    antisymmetric: bool = False
    # trained on prompts stating several relations: such a prompt gets one joint graph; otherwise each
    # of its relations gets its own graph and their adjustments are summed (the paper's Appendix E.2)
    joint_relations: bool = False
    format: str = FORMAT
    format_version: int = 1
    # SDXL (format version 2): each text encoder's width, in `prompt_embeds` order, and the pooled
    # embedding's; absent (None) for SD 1.x / 2.x, whose rectifier files keep format version 1
    text_widths: list[int] | None = None
    pooled_width: int | None = None

    def backbone_description(self) -> str:
        """What it was trained for, in the words of `describe_backbone`."""
        return describe_backbone(self.text_widths or [self.text_width], self.pooled_width)


def describe_backbone(widths: Sequence[int], pooled: int | None) -> str:
    """A backbone's text conditioning in one phrase, for errors about a rectifier that does not fit."""
    if pooled is None and len(widths) == 1:
        return f"a text encoder of width {widths[0]}"
    return (f"{len(widths)} text encoders of widths {' + '.join(str(w) for w in widths)} and a pooled embedding "
            f"of width {pooled} (SDXL)")


def backbone_mismatch(config: RectifierConfig, widths: Sequence[int], pooled: int | None) -> str | None:
    """Why a rectifier cannot edit a backbone with these text widths (None when it can)."""
    trained = list(config.text_widths or [config.text_width])
    if trained == list(widths) and config.pooled_width == pooled:
        return None
    if config.pooled_width is None and pooled is None:  # SD 1.x / 2.x on both sides: the original message
        return f"rectifier was trained for a text encoder of width {config.text_width}, this model's is {widths[0]}"
    return f"rectifier was trained for {config.backbone_description()}; this model has {describe_backbone(widths, pooled)}"


@dataclass
class EncodedPrompt:
    """A prompt's tokens and its frozen text-encoder output (L, D); for SDXL also its pooled embedding (P,)."""

    tokens: PromptTokens
    hidden: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def eot(self) -> torch.Tensor:
        return self.hidden[self.tokens.eot_index]


def swap_cosine(pipe, a: str, phrase: str, b: str) -> float:
    """Cosine of the EOT states of "a A R a B" and "a B R a A": near 1 where the text encoder
    loses the direction (a collapsed relation), well below it where the encoder orders the pair."""
    states = [encode_prompt(pipe, f"a {x} {phrase} a {y}").eot.float() for x, y in ((a, b), (b, a))]
    return float(torch.nn.functional.cosine_similarity(states[0], states[1], dim=0))


def encode_prompt(pipe, prompt: str) -> EncodedPrompt:
    """Encode one prompt exactly as the pipeline would (its own `encode_prompt`), plus positions."""
    tokens = tokenize_prompt(pipe.tokenizer, prompt)
    if sdxl.is_sdxl(pipe):
        # tokenizer 1 pads with the EOT token, tokenizer 2 with "!": over the same BPE the first EOT agrees
        if tokenize_prompt(pipe.tokenizer_2, prompt).eot_index != tokens.eot_index:
            raise PromptError(f"the two tokenizers end the prompt {prompt!r} at different positions")
        with torch.no_grad():
            embeds, pooled = sdxl.encode(pipe, prompt)
        return EncodedPrompt(tokens=tokens, hidden=embeds[0].float(), pooled=pooled[0].float())
    device = pipe.text_encoder.device
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
    return EncodedPrompt(tokens=tokens, hidden=embeds[0].float())


def word_features(pipe, tokens: PromptTokens, word: str) -> torch.Tensor:
    """A word's node feature: its token-embedding-table rows (mean over its BPE tokens), from each
    text encoder side by side as in `prompt_embeds` (SDXL's encoders share the BPE, so the same ids)."""
    rows = [word_embedding(encoder, pipe.tokenizer, tokens, word) for encoder in sdxl.text_encoders(pipe)]
    return rows[0] if len(rows) == 1 else torch.cat(rows)


def add_at_eot(prompt_embeds: torch.Tensor, eot_index: torch.Tensor, delta: torch.Tensor, alpha: float | torch.Tensor = 1.0,
               positions: str = "eot") -> torch.Tensor:
    """Return a copy of `prompt_embeds` (B, L, D) with `alpha * delta[b]` added at `eot_index[b]`.

    `positions="after_eot"` adds it at the EOT and at every later (padding) position as well.
    """
    if positions == "after_eot":
        index = torch.arange(prompt_embeds.shape[1], device=prompt_embeds.device)
        mask = (index[None, :] >= eot_index.to(prompt_embeds.device)[:, None]).to(prompt_embeds.dtype)
        return prompt_embeds + mask[:, :, None] * (alpha * delta).to(prompt_embeds.dtype)[:, None, :]
    if positions != "eot":
        raise ValueError(f"positions must be one of {EDIT_POSITIONS}, got {positions!r}")
    rows = torch.arange(prompt_embeds.shape[0], device=prompt_embeds.device)
    edit = torch.zeros_like(prompt_embeds)
    edit = edit.index_put((rows, eot_index.to(prompt_embeds.device)), (alpha * delta).to(edit.dtype))
    return prompt_embeds + edit


def looks_like_hub_id(name: str) -> bool:
    """"owner/name" and not a local path: how diffusers tells a Hub repository from a folder."""
    parts = str(name).split("/")
    return (len(parts) == 2 and all(parts) and not str(name).startswith((".", "~"))
            and not Path(name).exists() and "\\" not in str(name))


def resolve_rectifier_folder(name_or_path: str | Path, **hub_kwargs) -> Path:
    """A local rectifier folder, or a Hub repository's `config.json` and `rectifier.safetensors`
    downloaded into the Hub cache (never a pickled `.bin`: only those two files are fetched)."""
    if not looks_like_hub_id(str(name_or_path)):
        return Path(name_or_path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], **hub_kwargs))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CheckpointError(f"{name_or_path}: no such rectifier folder, and the Hub repository could not be "
                              f"fetched ({reason})") from None


class RelationRectifier(nn.Module, PyTorchModelHubMixin, library_name="rrnet", tags=["relation-rectification"]):
    """An HGCN that outputs one adjustment vector per prompt (and one per object sentence).

    Saved and loaded like other adapters (`save_pretrained`, `from_pretrained` with a folder or a
    Hub repository id, `push_to_hub` from huggingface_hub's mixin), always as safetensors + JSON.
    """

    def __init__(self, config: RectifierConfig) -> None:
        super().__init__()
        if config.adjuster not in ADJUSTERS:
            raise CheckpointError(f"unknown rectifier adjuster {config.adjuster!r}; expected one of {ADJUSTERS}")
        if config.edit_positions not in EDIT_POSITIONS:
            raise CheckpointError(f"unknown edit positions {config.edit_positions!r}; expected one of {EDIT_POSITIONS}")
        if config.adjuster == "free" and len(config.triplets) > 1:
            raise CheckpointError("a free-vector rectifier (no graph network) holds one relation; this config lists "
                                  f"{len(config.triplets)}")
        self.config = config
        width = config.text_width
        if config.adjuster == "hgcn":
            self.hgcn = HGCN(width, width, hidden=config.hidden, heads=config.heads, num_layers=config.num_layers)
        elif config.adjuster == "role":  # f([object, relation]) -> what that object in that role adds to the EOT
            self.role = MLP([2 * width, config.hidden, width], act="silu", norm=None)
            nn.init.zeros_(self.role.lins[-1].weight)  # starts as the base model, as the free vectors do
            nn.init.zeros_(self.role.lins[-1].bias)
        elif config.adjuster == "triplet":  # f([A, R, B]) -> [prompt adjustment, object-sentence adjustment]
            self.triplet = MLP([3 * width, config.hidden, config.hidden, 2 * width], act="silu", norm=None)
            nn.init.zeros_(self.triplet.lins[-1].weight)
            nn.init.zeros_(self.triplet.lins[-1].bias)
        else:  # [direction (A-R-B, B-R-A), adjust node (prompt, object sentence), width]
            self.free = nn.Parameter(torch.zeros(2, 2, width))

    # ---- graphs -------------------------------------------------------------------------------
    def object_sentence(self, obj: str) -> str:
        return self.config.object_template.format(obj)

    def build_graph(self, pipe, triplet: Triplet, prompt: EncodedPrompt, object_sentence: EncodedPrompt):
        """The graph of `prompt`, read as `triplet` in prompt order (subject first)."""
        feats = [word_features(pipe, prompt.tokens, w) for w in (triplet.object_a, triplet.relation, triplet.object_b)]
        device = next(self.parameters()).device
        graph = relation_graph(*feats, prompt.eot, object_sentence.eot)
        if self.config.adjuster == "free":
            direction = self.direction_of(triplet)
            if direction < 0:  # checked here, on the host, so training steps never wait on the device
                raise PromptError("a free-vector rectifier (no graph network) only knows the two prompts it was trained on")
            graph.direction = torch.tensor([direction])
        return graph.to(device)

    def build_prompt_graph(self, pipe, triplets: Sequence[Triplet], prompt: EncodedPrompt,
                           object_sentence: EncodedPrompt):
        """One graph for a prompt stating one relation or several: one node per distinct object
        (an object named twice is one node), one relation node per relation, one prompt adjust node.
        With one relation it is `build_graph`'s graph."""
        if len(triplets) == 1:
            return self.build_graph(pipe, triplets[0], prompt, object_sentence)
        if self.config.adjuster == "free":
            raise PromptError("a free-vector rectifier (no graph network) only knows the two prompts it was trained on")
        names = list(dict.fromkeys(x for t in triplets for x in (t.object_a, t.object_b)))
        objects = [word_features(pipe, prompt.tokens, n) for n in names]
        relations = [(names.index(t.object_a), word_features(pipe, prompt.tokens, t.relation), names.index(t.object_b))
                     for t in triplets]
        graph = prompt_graph(objects, relations, prompt.eot, object_sentence.eot)
        return graph.to(next(self.parameters()).device)

    def direction_of(self, triplet: Triplet) -> int:
        """0 for the trained triplet, 1 for its swap, -1 for anything else, or when the rectifier knows
        several relations (free vectors hold one relation's two prompts only)."""
        known = self.known_triplets()
        if len(known) != 1:
            return -1
        return 0 if triplet == known[0] else 1 if triplet == known[0].swapped() else -1

    def adjust_vectors(self, graphs: list | Batch) -> torch.Tensor:
        """(G, 2, D) adjustment vectors: [:, 0] for the prompt, [:, 1] for its object sentence.

        `graphs` is a list of graphs or, for graphs used at every training step, their `batch_graphs`.
        """
        batch = graphs if isinstance(graphs, Batch) else batch_graphs(graphs)
        if self.config.adjuster == "free":
            return self.free[batch.direction.to(self.free.device)]
        if self.config.adjuster == "role":
            return self.role_vectors(batch)
        if self.config.adjuster == "triplet":
            return self.triplet_vectors(batch)
        out = self.hgcn.adjust_vectors(batch)
        if not self.config.antisymmetric:
            return out
        other = self.hgcn.adjust_vectors(mirrored(batch))
        prompt = 0.5 * (out[:, PROMPT_ADJUST] - other[:, PROMPT_ADJUST])
        return torch.stack([prompt, out[:, OBJECT_SENTENCE_ADJUST]], dim=1)

    @staticmethod
    def _relation_members(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per relation node: its subject's and its object's object node, its graph; per graph, its
        first relation node."""
        n = batch[RELATION].x.shape[0]
        into = batch[OBJECT, "to_relation", RELATION].edge_index  # (subject, relation)
        out_of = batch[RELATION, "to_object", OBJECT].edge_index  # (relation, object)
        subject = torch.empty(n, dtype=torch.long, device=into.device).index_put_((into[1],), into[0])
        target = torch.empty(n, dtype=torch.long, device=into.device).index_put_((out_of[0],), out_of[1])
        graph_of = batch[RELATION].batch
        first = torch.full((batch.num_graphs,), n, dtype=torch.long, device=graph_of.device)
        first = first.scatter_reduce(0, graph_of, torch.arange(n, device=graph_of.device), reduce="amin")
        return subject, target, graph_of, first

    @staticmethod
    def _summed_per_graph(batch: Batch, per_relation: torch.Tensor, graph_of: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(batch.num_graphs, per_relation.shape[1], dtype=per_relation.dtype, device=per_relation.device)
        return out.index_add(0, graph_of, per_relation)

    def role_vectors(self, batch: Batch) -> torch.Tensor:
        """(G, 2, D) for the role adjuster: the prompt's adjustment is the sum over its relations of
        f(subject, R) - f(object, R), so swapping a relation's objects negates its part and an object
        pair never trained on gets what its objects learned in their roles with other partners; the
        object sentence gets f(subject, R) of the first relation (what the edit asks of that object)."""
        objects, relations = batch[OBJECT].x, batch[RELATION].x
        subject, target, graph_of, first = self._relation_members(batch)
        as_subject = self.role(torch.cat([objects[subject], relations], dim=1))
        as_object = self.role(torch.cat([objects[target], relations], dim=1))
        prompt = self._summed_per_graph(batch, as_subject - as_object, graph_of)
        return torch.stack([prompt, as_subject[first]], dim=1)

    def triplet_vectors(self, batch: Batch) -> torch.Tensor:
        """(G, 2, D) for the triplet adjuster: each relation's (subject, relation, object) features
        go through one MLP whose output holds its prompt part and its object-sentence part. Nothing
        ties the edits of two triplets together, so each relation it trains on can get its own edit,
        shared part included (the per-pair rectifier's freedom, in one network); the prompt's
        adjustment sums its relations' parts, the object sentence takes the first relation's."""
        objects, relations = batch[OBJECT].x, batch[RELATION].x
        subject, target, graph_of, first = self._relation_members(batch)
        out = self.triplet(torch.cat([objects[subject], relations, objects[target]], dim=1))
        width = relations.shape[1]
        prompt = self._summed_per_graph(batch, out[:, :width], graph_of)
        return torch.stack([prompt, out[first, width:]], dim=1)

    # ---- inference ----------------------------------------------------------------------------
    def known_triplets(self) -> list[Triplet]:
        return [Triplet(**t) for t in self.config.triplets]

    def relation_phrases(self) -> dict[str, str]:
        """Phrase -> relation word for every relation the rectifier was trained on (see `prompt_parser`)."""
        if self.config.relation_phrases:
            return dict(self.config.relation_phrases)
        known = self.known_triplets()
        prompts = [list(p) for p in self.config.prompts]
        pairs = [((t.object_a, t.relation, t.object_b), prompts[k] if k < len(prompts) else []) for k, t in enumerate(known)]
        return relation_phrases(pairs)

    def find_triplets(self, prompt: str) -> list[Triplet]:
        """Every (A, R, B) the prompt states with a relation this rectifier knows, in prompt order
        (empty if there is none it can rectify)."""
        found = [Triplet(*t) for t in parse_relations(prompt, self.relation_phrases())]
        if self.config.adjuster == "free":  # free vectors exist only for the two trained prompts
            found = [t for t in found if self.direction_of(t) >= 0][:1]
        return found

    def find_triplet(self, prompt: str) -> Triplet | None:
        """The first (A, R, B) the prompt states with a relation this rectifier knows; None if none."""
        found = self.find_triplets(prompt)
        return found[0] if found else None

    def swap_cosine(self, pipe, triplet: Triplet) -> float:
        """Cosine of the EOT states of "a A R a B" and "a B R a A" (R: the relation's longest known
        phrase): near 1 where the text encoder loses the direction, which is what needs rectifying."""
        phrases = [p for p, word in self.relation_phrases().items() if word == triplet.relation]
        phrase = max(phrases, key=len) if phrases else triplet.relation
        return swap_cosine(pipe, triplet.object_a, phrase, triplet.object_b)

    def collapsed_only(self, pipe, triplets: Sequence[Triplet], collapse_gate: float | None) -> list[Triplet]:
        """The triplets a `collapse_gate` lets through (swap cosine >= the gate); all of them without one."""
        if collapse_gate is None:
            return list(triplets)
        return [t for t in triplets if self.swap_cosine(pipe, t) >= collapse_gate]

    def prompt_graphs(self, pipe, triplets: Sequence[Triplet], prompt: EncodedPrompt) -> list:
        """The graphs whose prompt adjustments, summed, edit this prompt: one joint graph, or (for a
        rectifier trained on one relation per prompt) one graph per relation."""
        sentence = encode_prompt(pipe, self.object_sentence(triplets[0].object_a))
        if len(triplets) == 1 or self.config.joint_relations:
            return [self.build_prompt_graph(pipe, triplets, prompt, sentence)]
        return [self.build_graph(pipe, t, prompt, encode_prompt(pipe, self.object_sentence(t.object_a))) for t in triplets]

    def check_backbone(self, pipe) -> None:
        """One CheckpointError line when the rectifier was trained for other text encoders (an SD
        rectifier on SDXL, another width, ...)."""
        problem = backbone_mismatch(self.config, sdxl.text_widths(pipe), sdxl.pooled_width(pipe))
        if problem is not None:
            raise CheckpointError(problem)

    @torch.no_grad()
    def prompt_embeds(
        self,
        pipe,
        prompts: str | list[str],
        alpha: float = 0.6,
        triplet: tuple[str, str, str] | None = None,
        strict: bool = False,
        collapse_gate: float | None = None,
    ) -> torch.Tensor | sdxl.SDXLConditioning:
        """Rectified `prompt_embeds` (B, L, D) for `pipe(prompt_embeds=...)`; alpha=0 is the base model.

        For an SDXL pipeline, `(prompt_embeds, pooled_prompt_embeds)` (an `SDXLConditioning`) for
        `pipe(prompt_embeds=..., pooled_prompt_embeds=...)`: the EOT row of `prompt_embeds` (both
        encoders' parts) is edited, and the pooled embedding follows that edit through
        text_encoder_2's own last layer, final layer norm and projection.

        The triplet of each prompt is read from the prompt itself: a relation phrase the rectifier
        was trained on and the noun phrases around it, in prompt order, objects it never saw
        included. A prompt with no such relation keeps the base model's embedding (a logged note),
        so the rectifier can sit in front of a pipeline for every prompt; `strict=True` makes that
        an error. `triplet` (A, R, B) overrides the parser; its direction is read from which
        object comes first in each prompt.

        `collapse_gate` (e.g. 0.99) edits only the relations whose direction the text encoder
        loses: a triplet whose two orders, "a A R a B" and "a B R a A", get EOT states with cosine
        below the gate is already told apart by the encoder and is left as the base model draws it.
        """
        self.check_backbone(pipe)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        encoded, graphs, owners = [], [], []
        for prompt in prompts:
            enc = encode_prompt(pipe, prompt)
            encoded.append(enc)
            if triplet is not None:
                t = Triplet(*triplet)
                found = [t if order_in_prompt(pipe.tokenizer, enc.tokens, t.object_a, t.object_b) else t.swapped()]
            else:
                found = self.find_triplets(prompt)
                if not found:
                    known = ", ".join(sorted(self.relation_phrases())) or "none"
                    if strict:
                        raise PromptError(f"prompt {prompt!r} states no relation this rectifier knows ({known}) "
                                          "with objects on both sides")
                    logger.info("prompt %r states no relation this rectifier knows (%s): base embedding kept", prompt, known)
                    continue
            found = self.collapsed_only(pipe, found, collapse_gate)
            if not found:
                logger.info("prompt %r: the text encoder orders every relation it states: base embedding kept", prompt)
                continue
            for graph in self.prompt_graphs(pipe, found, enc):
                graphs.append(graph)
                owners.append(len(encoded) - 1)
        embeds = torch.stack([e.hidden for e in encoded])
        pooled = torch.stack([e.pooled for e in encoded]) if encoded[0].pooled is not None else None
        if graphs:  # only the rows with a triplet change; the others stay the pipeline's own
            deltas = self.adjust_vectors(graphs)[:, PROMPT_ADJUST]
            rows = sorted(set(owners))
            summed = torch.zeros(len(encoded), deltas.shape[-1], dtype=deltas.dtype, device=deltas.device)
            summed = summed.index_add(0, torch.tensor(owners, device=deltas.device), deltas)[rows].to(embeds.device)
            eots = torch.tensor([encoded[i].tokens.eot_index for i in rows])
            before = embeds[rows]
            embeds[rows] = after = add_at_eot(before, eots, summed, alpha, self.config.edit_positions)
            if pooled is not None:
                pooled[rows] = sdxl.edited_pooled(pipe, pooled[rows], before, after, eots)
        if pooled is not None:
            dtype = pipe.text_encoder_2.dtype
            return sdxl.SDXLConditioning(embeds.to(dtype), pooled.to(dtype))
        return embeds.to(pipe.text_encoder.dtype)

    # ---- persistence --------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **push_to_hub_kwargs) -> Path:
        """Write `rectifier.safetensors` + `config.json`, each atomically (temp file + rename);
        with `push_to_hub`, also upload the folder (huggingface_hub's `push_to_hub`).

        `config.json` is the folder's completion marker: an old one is removed before the new
        weights go in and the new one is written last, so a reader never pairs new weights with an
        old config, and a kill in between leaves a folder that reads as unfinished."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).unlink(missing_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(out / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": FORMAT}))
        push_to_hub_kwargs.pop("config", None)  # the mixin passes its own copy; ours is written below
        push_to_hub_kwargs.pop("model_card_kwargs", None)
        values = asdict(self.config)
        for key in ("text_widths", "pooled_width"):  # SD 1.x / 2.x files stay as they were (format version 1)
            if values[key] is None:
                del values[key]
        text = json.dumps(values, indent=2, sort_keys=True) + "\n"
        atomic_write_text(out / CONFIG_NAME, text)
        if push_to_hub:
            self.push_to_hub(repo_id or out.name, **push_to_hub_kwargs)
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, device: str | torch.device = "cpu",
                        **hub_kwargs) -> "RelationRectifier":
        """Load from a folder or a Hub repository id ("owner/name"; `revision`, `cache_dir`, `token`,
        `local_files_only` pass to huggingface_hub), from safetensors + JSON only: nothing is
        unpickled, and weights of another shape are an error, never a silent partial load."""
        directory = resolve_rectifier_folder(pretrained_model_name_or_path, **hub_kwargs)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"{path}: not found (a rectifier folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
        from rrnet.rectifier_files import check_config

        try:
            raw = check_config(json.loads(config_path.read_text(encoding="utf-8")), config_path)
            config = RectifierConfig(**raw)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise CheckpointError(f"{config_path}: invalid rectifier config ({exc})") from None
        model = cls(config)
        try:
            state = load_file(weights_path, device=str(device))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{weights_path}: weights do not match {config_path} ({first})") from None
        return model.to(device)

