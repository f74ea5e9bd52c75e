"""Textual Inversion (paper, Appendix A): training new token embeddings for the relation.

The tokens (named and placed in the prompts as `rrnet.baselines.textual_inversion` describes)
start from the relation word's embedding (the mean of its BPE rows), so before training the
rewritten prompts encode (nearly; exactly for a one-token word) like the originals.

Training never edits the pipeline's tokenizer or embedding table: a copy of the tokenizer knows
the new tokens, and the text encoder's input embedding is wrapped for the run so the new ids
read trainable vectors while every existing row stays frozen. The vectors are saved in the
diffusers single-token files `rrnet.baselines.textual_inversion` applies.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from rrnet.atomic import atomic_write
from rrnet.baselines.checkpoint import write_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import prepare_exemplars, relation_prompts
from rrnet.baselines.loop import baseline_identity, encode_ids, fit, token_ids
from rrnet.baselines.pipeline_state import frozen_backbone
from rrnet.baselines.textual_inversion import KIND, WEIGHT_FILES, relation_tokens, with_token
from rrnet.data import RelationSpec
from rrnet.errors import RRNetError
from rrnet.resume import Checkpointing
from rrnet.tokens import word_token_ids


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
