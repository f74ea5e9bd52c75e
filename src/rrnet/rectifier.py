"""The relation rectifier: graph network -> adjustment vector -> edited EOT embedding.

The text encoder, UNet and VAE stay frozen. The rectifier reads the frozen token-embedding table
(object and relation nodes) and the EOT hidden states (adjust nodes), runs the HGCN, and adds
`alpha * delta` to the prompt embedding at the first EOT position only. The result is plain
`prompt_embeds`, so any diffusers pipeline that accepts `prompt_embeds` can use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch_geometric.data import Batch

from rrnet.atomic import atomic_write, atomic_write_text
from rrnet.errors import CheckpointError, PromptError
from rrnet.graph import PROMPT_ADJUST, batch_graphs, relation_graph
from rrnet.hgcn import HGCN
from rrnet.tokens import PromptTokens, order_in_prompt, tokenize_prompt, word_embedding

CONFIG_NAME = "config.json"
ADJUSTERS = ("hgcn", "free")  # "free": the no-graph-network ablation, one learned vector per prompt
EDIT_POSITIONS = ("eot", "after_eot")  # "after_eot": the ablation editing the EOT and all padding after it
WEIGHTS_NAME = "rectifier.safetensors"
OBJECT_TEMPLATE = "this is a photo of {}"
FORMAT = "rrnet-rectifier"


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

    text_width: int
    hidden: int = 512
    heads: int = 2
    num_layers: int = 2
    object_template: str = OBJECT_TEMPLATE
    triplets: list[dict] = field(default_factory=list)
    prompts: list[list[str]] = field(default_factory=list)
    backbone: str | None = None
    training: dict = field(default_factory=dict)
    adjuster: str = "hgcn"
    edit_positions: str = "eot"
    format: str = FORMAT
    format_version: int = 1


@dataclass
class EncodedPrompt:
    """A prompt's tokens and its frozen text-encoder output (L, D)."""

    tokens: PromptTokens
    hidden: torch.Tensor

    @property
    def eot(self) -> torch.Tensor:
        return self.hidden[self.tokens.eot_index]


def encode_prompt(pipe, prompt: str) -> EncodedPrompt:
    """Encode one prompt exactly as the pipeline would (its own `encode_prompt`), plus positions."""
    tokens = tokenize_prompt(pipe.tokenizer, prompt)
    device = pipe.text_encoder.device
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
    return EncodedPrompt(tokens=tokens, hidden=embeds[0].float())


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


class RelationRectifier(nn.Module):
    """An HGCN that outputs one adjustment vector per prompt (and one per object sentence)."""

    def __init__(self, config: RectifierConfig) -> None:
        super().__init__()
        if config.adjuster not in ADJUSTERS:
            raise CheckpointError(f"unknown rectifier adjuster {config.adjuster!r}; expected one of {ADJUSTERS}")
        if config.edit_positions not in EDIT_POSITIONS:
            raise CheckpointError(f"unknown edit positions {config.edit_positions!r}; expected one of {EDIT_POSITIONS}")
        self.config = config
        width = config.text_width
        if config.adjuster == "hgcn":
            self.hgcn = HGCN(width, width, hidden=config.hidden, heads=config.heads, num_layers=config.num_layers)
        else:  # [direction (A-R-B, B-R-A), adjust node (prompt, object sentence), width]
            self.free = nn.Parameter(torch.zeros(2, 2, width))

    # ---- graphs -------------------------------------------------------------------------------
    def object_sentence(self, obj: str) -> str:
        return self.config.object_template.format(obj)

    def build_graph(self, pipe, triplet: Triplet, prompt: EncodedPrompt, object_sentence: EncodedPrompt):
        """The graph of `prompt`, read as `triplet` in prompt order (subject first)."""
        tok, enc = pipe.tokenizer, pipe.text_encoder
        feats = [word_embedding(enc, tok, prompt.tokens, w) for w in (triplet.object_a, triplet.relation, triplet.object_b)]
        device = next(self.parameters()).device
        graph = relation_graph(*feats, prompt.eot, object_sentence.eot)
        if self.config.adjuster == "free":
            direction = self.direction_of(triplet)
            if direction < 0:  # checked here, on the host, so training steps never wait on the device
                raise PromptError("a free-vector rectifier (no graph network) only knows the two prompts it was trained on")
            graph.direction = torch.tensor([direction])
        return graph.to(device)

    def direction_of(self, triplet: Triplet) -> int:
        """0 for the trained triplet, 1 for its swap, -1 for anything else."""
        known = self.known_triplets()
        if known and triplet == known[0]:
            return 0
        return 1 if known and triplet == known[0].swapped() else -1

    def adjust_vectors(self, graphs: list | Batch) -> torch.Tensor:
        """(G, 2, D) adjustment vectors: [:, 0] for the prompt, [:, 1] for its object sentence.

        `graphs` is a list of graphs or, for graphs used at every training step, their `batch_graphs`.
        """
        batch = graphs if isinstance(graphs, Batch) else batch_graphs(graphs)
        if self.config.adjuster == "hgcn":
            return self.hgcn.adjust_vectors(batch)
        return self.free[batch.direction.to(self.free.device)]

    # ---- inference ----------------------------------------------------------------------------
    def known_triplets(self) -> list[Triplet]:
        return [Triplet(**t) for t in self.config.triplets]

    def match_triplet(self, pipe, tokens: PromptTokens) -> Triplet:
        """The trained triplet whose three words are in the prompt, in the prompt's direction."""
        for triplet in self.known_triplets():
            try:
                forward = order_in_prompt(pipe.tokenizer, tokens, triplet.object_a, triplet.object_b)
                order_in_prompt(pipe.tokenizer, tokens, triplet.relation, triplet.object_a)
            except PromptError:
                continue
            return triplet if forward else triplet.swapped()
        known = "; ".join(f"{t.object_a} / {t.relation} / {t.object_b}" for t in self.known_triplets()) or "none"
        raise PromptError(
            f"prompt {tokens.prompt!r} does not contain the words of a trained relation ({known}); pass triplet=(A, R, B)"
        )

    def check_backbone(self, pipe) -> None:
        width = pipe.text_encoder.config.hidden_size
        if width != self.config.text_width:
            raise CheckpointError(
                f"rectifier was trained for a text encoder of width {self.config.text_width}, this model's is {width}"
            )

    @torch.no_grad()
    def prompt_embeds(
        self,
        pipe,
        prompts: str | list[str],
        alpha: float = 0.6,
        triplet: tuple[str, str, str] | None = None,
    ) -> torch.Tensor:
        """Rectified `prompt_embeds` (B, L, D) for `pipe(prompt_embeds=...)`; alpha=0 is the base model.

        `triplet` (A, R, B) names the words for prompts outside the trained relation (unseen
        objects); direction is read from which object comes first in each prompt.
        """
        self.check_backbone(pipe)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        encoded, graphs = [], []
        for prompt in prompts:
            enc = encode_prompt(pipe, prompt)
            if triplet is not None:
                t = Triplet(*triplet)
                t = t if order_in_prompt(pipe.tokenizer, enc.tokens, t.object_a, t.object_b) else t.swapped()
            else:
                t = self.match_triplet(pipe, enc.tokens)
            graphs.append(self.build_graph(pipe, t, enc, encode_prompt(pipe, self.object_sentence(t.object_a))))
            encoded.append(enc)
        deltas = self.adjust_vectors(graphs)[:, PROMPT_ADJUST]
        embeds = torch.stack([e.hidden for e in encoded])
        eots = torch.tensor([e.tokens.eot_index for e in encoded])
        out = add_at_eot(embeds, eots, deltas.to(embeds.device), alpha, self.config.edit_positions)
        return out.to(pipe.text_encoder.dtype)

    # ---- persistence --------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write `rectifier.safetensors` + `config.json`, each atomically (temp file + rename)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(out / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": FORMAT}))
        text = json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n"
        atomic_write_text(out / CONFIG_NAME, text)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "RelationRectifier":
        """Load from safetensors + JSON only: nothing is unpickled."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"{path}: not found (a rectifier folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise CheckpointError(f"{config_path}: not an rrnet rectifier config")
            config = RectifierConfig(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
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

