"""Textual Inversion (paper, Appendix A): new token embeddings for the relation, nothing else.

Token design. The relation word in each prompt is replaced by a learned token, one per direction
by default: "a red block <above-arb> a blue block" and "a blue block <above-bra> a red block"
(tokens are `<{relation folder}-arb>` / `<{relation folder}-bra>`). Each token sees only its own
direction's images, so the baseline gets the same information RRNet gets (which prompt is which
direction); with `shared_token` one token `<{relation folder}-rel>` stands in both prompts, the
classic "one new word" reading, where only word order tells the directions apart. Both start
from the relation word's embedding (the mean of its BPE rows), so before training the rewritten
prompts encode (nearly; exactly for a one-token word) like the originals.

Training never edits the pipeline's tokenizer or embedding table: a copy of the tokenizer knows
the new tokens, and the text encoder's input embedding is wrapped for the run so the new ids
read trainable vectors while every existing row stays frozen. The files are diffusers'
single-token format, `{token: (1, D) tensor}` in safetensors, one file per token:
`learned_embeds.safetensors` (A R B token, or the shared one) and
`learned_embeds_swapped.safetensors` (B R A token), loadable with `pipe.load_textual_inversion`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from rrnet.atomic import atomic_write
from rrnet.baselines.checkpoint import read_record, write_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import prepare_exemplars, relation_prompts
from rrnet.baselines.loop import baseline_identity, encode_ids, fit, token_ids
from rrnet.baselines.pipeline_state import frozen_backbone, preserved_rng, quiet_loaders
from rrnet.data import RelationSpec
from rrnet.resume import Checkpointing
from rrnet.errors import CheckpointError, PromptError, RRNetError
from rrnet.tokens import word_token_ids

KIND = "textual_inversion"
WEIGHT_FILES = {"prompt": "learned_embeds.safetensors", "swapped": "learned_embeds_swapped.safetensors"}


def relation_tokens(spec: RelationSpec, shared: bool = False) -> dict[str, str]:
    """The learned token of each side ("prompt": A R B, "swapped": B R A), named after the relation."""
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-") or "relation"
    if shared:
        return {"prompt": f"<{slug}-rel>", "swapped": f"<{slug}-rel>"}
    return {"prompt": f"<{slug}-arb>", "swapped": f"<{slug}-bra>"}


def with_token(prompt: str, relation: str, token: str) -> str:
    """`prompt` with its first whole-word occurrence of `relation` replaced by `token`."""
    words = relation.split()
    pattern = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE)
    rewritten, count = pattern.subn(token, prompt, count=1)
    if not words or count == 0:
        raise PromptError(f"relation word {relation!r} is not in the prompt {prompt!r}; textual inversion replaces it")
    return rewritten


def prompt_side(prompt: str, spec: RelationSpec) -> str:
    """Which direction a prompt reads: the spec's own prompts, else whichever object comes first."""
    if prompt == spec.prompt:
        return "prompt"
    if prompt == spec.swapped_prompt:
        return "swapped"
    found = {}
    for key, word in (("a", spec.object_a), ("b", spec.object_b)):
        match = re.search(r"(?<!\w)" + re.escape(word) + r"(?!\w)", prompt, re.IGNORECASE)
        if match is None:
            raise PromptError(f"object {word!r} is not in the prompt {prompt!r}; cannot tell its direction")
        found[key] = match.start()
    return "prompt" if found["a"] < found["b"] else "swapped"


class LearnedTokenEmbedding(nn.Module):
    """A frozen token-embedding table plus trainable vectors for new token ids (past its end or not)."""

    def __init__(self, base: nn.Embedding, token_ids: list[int], init: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("token_ids", torch.tensor(token_ids), persistent=False)
        self.vectors = nn.Parameter(init.detach().float().clone())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        match = input_ids.unsqueeze(-1) == self.token_ids.to(input_ids.device)  # (..., L, tokens)
        hit = match.any(-1)
        out = self.base(input_ids.masked_fill(hit, 0))
        learned = match.to(self.vectors.dtype) @ self.vectors
        return torch.where(hit.unsqueeze(-1), learned.to(out.dtype), out)


def relation_word_embedding(pipe, relation: str) -> torch.Tensor:
    """Mean embedding-table row of the relation word's BPE tokens: where the new tokens start."""
    table = pipe.text_encoder.get_input_embeddings().weight
    ids = torch.tensor(word_token_ids(pipe.tokenizer, relation), device=table.device)
    return table[ids].detach().float().mean(0)


def tokenizer_with(tokenizer, tokens: list[str]):
    """A copy of `tokenizer` that knows `tokens` (the pipeline's own stays as it is)."""
    vocab = tokenizer.get_vocab()
    taken = [t for t in tokens if t in vocab]
    if taken:
        raise RRNetError(f"token {taken[0]!r} is already in the tokenizer; unload it or rename the relation folder")
    extended = copy.deepcopy(tokenizer)
    extended.add_tokens(tokens)
    return extended


def train_textual_inversion(
    pipe,
    spec: RelationSpec,
    config: BaselineConfig | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    model_id: str | None = None,
    checkpointing: Checkpointing | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Learn the relation token(s); returns {token: vector (D,)} and the per-epoch history."""
    config = config or BaselineConfig()
    config.check()
    tokens = relation_tokens(spec, config.shared_token)
    unique = list(dict.fromkeys(tokens.values()))
    texts = {side: with_token(text, spec.relation, tokens[side]) for side, text in relation_prompts(spec).items()}
    tokenizer = tokenizer_with(pipe.tokenizer, unique)
    text_encoder = pipe.text_encoder
    with frozen_backbone(pipe):
        exemplars = prepare_exemplars(pipe, spec, config, texts)
        base = text_encoder.get_input_embeddings()
        init = relation_word_embedding(pipe, spec.relation).expand(len(unique), -1)
        learned = LearnedTokenEmbedding(base, tokenizer.convert_tokens_to_ids(unique), init)
        text_encoder.set_input_embeddings(learned)
        try:
            def encode(batch: list[str]) -> torch.Tensor:
                return encode_ids(text_encoder, token_ids(tokenizer, batch))

            history = fit(pipe, exemplars, encode, [learned.vectors], config, config.rate(KIND),
                          output_dir, progress, desc=KIND, checkpointing=checkpointing,
                          identity=baseline_identity(KIND, pipe, spec, config, model_id))
        finally:
            text_encoder.set_input_embeddings(base)
    vectors = {token: learned.vectors[i].detach().cpu().clone() for i, token in enumerate(unique)}
    if output_dir is not None:
        files = save_learned_embeds(output_dir, tokens, vectors)
        write_record(output_dir, KIND, pipe, spec, config, history, model_id, tokens=tokens, replaces=spec.relation,
                     weights=files, prompts=texts)
    return vectors, history


def save_learned_embeds(output_dir: str | Path, tokens: dict[str, str], vectors: dict[str, torch.Tensor]) -> dict[str, str]:
    """One diffusers single-token file per token; returns {token: file name}."""
    from safetensors.torch import save_file

    files: dict[str, str] = {}
    for side, token in tokens.items():
        if token in files:
            continue  # the shared token: one file
        files[token] = WEIGHT_FILES[side]
        tensor = {token: vectors[token].reshape(1, -1).contiguous()}
        atomic_write(Path(output_dir) / files[token], lambda tmp, t=tensor: save_file(t, tmp))
    return files


class _EmbeddingSnapshot:
    """The text encoder's input embedding as it was: diffusers' load/unload resize it in place."""

    def __init__(self, text_encoder) -> None:
        self.module = text_encoder.get_input_embeddings()
        self.data = self.module.weight.data
        self.requires_grad = self.module.weight.requires_grad
        self.num_embeddings = self.module.num_embeddings
        self.padding_idx = self.module.padding_idx
        self.vocab_size = text_encoder.config.vocab_size

    def restore(self, text_encoder) -> None:
        self.module.weight.data = self.data
        self.module.weight.requires_grad_(self.requires_grad)
        self.module.num_embeddings = self.num_embeddings
        self.module.padding_idx = self.padding_idx
        text_encoder.set_input_embeddings(self.module)
        text_encoder.config.vocab_size = self.vocab_size


@contextmanager
def textual_inversion_applied(pipe, folder: str | Path) -> Iterator[dict]:
    """Load the learned tokens with diffusers' loader; yield the checkpoint record; unload after."""
    folder = Path(folder)
    record = read_record(folder, KIND)
    weights = record.get("weights")
    if not isinstance(weights, dict) or not weights or not isinstance(record.get("tokens"), dict):
        raise CheckpointError(f"{folder}: baseline record lists no learned tokens")
    paths = [folder / name for name in weights.values()]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(f"{missing[0]}: learned embedding file not found")
    tokens = list(weights)
    present = [t for t in tokens if t in pipe.tokenizer.get_vocab()]
    if present:
        raise CheckpointError(f"{folder}: token {present[0]!r} is already loaded in this pipeline")
    text_encoder = pipe.text_encoder
    snapshot = _EmbeddingSnapshot(text_encoder)
    try:
        with preserved_rng(text_encoder.device), quiet_loaders():
            pipe.load_textual_inversion([str(p) for p in paths], token=tokens)
    except (ValueError, OSError, KeyError) as exc:
        _unload(pipe, tokens, snapshot)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder}: cannot load the learned tokens ({first[:200]})") from None
    try:
        yield record
    finally:
        _unload(pipe, tokens, snapshot)


def _unload(pipe, tokens: list[str], snapshot: _EmbeddingSnapshot) -> None:
    """Remove the tokens from the tokenizer (diffusers), then put the original embedding back."""
    loaded = [t for t in tokens if t in pipe.tokenizer.get_vocab()]
    if loaded:
        with preserved_rng(pipe.text_encoder.device), quiet_loaders():
            pipe.unload_textual_inversion(loaded)
    snapshot.restore(pipe.text_encoder)
