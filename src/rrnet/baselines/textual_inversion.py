"""Textual Inversion (paper, Appendix A): new token embeddings for the relation, nothing else.

Token design. The relation word in each prompt is replaced by a learned token, one per direction
by default: "a red block <above-arb> a blue block" and "a blue block <above-bra> a red block"
(tokens are `<{relation folder}-arb>` / `<{relation folder}-bra>`). Each token sees only its own
direction's images, so the baseline gets the same information RRNet gets (which prompt is which
direction); with `shared_token` one token `<{relation folder}-rel>` stands in both prompts, the
classic "one new word" reading, where only word order tells the directions apart.

This module names the tokens, rewrites prompts to them and applies a trained checkpoint. The
files are diffusers' single-token format, `{token: (1, D) tensor}` in safetensors, one file per
token: `learned_embeds.safetensors` (A R B token, or the shared one) and
`learned_embeds_swapped.safetensors` (B R A token), loaded with `pipe.load_textual_inversion`.
Training lives in `rrnet.baselines.textual_inversion_training`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rrnet.baselines.checkpoint import read_record
from rrnet.baselines.pipeline_state import preserved_rng, quiet_loaders
from rrnet.data import RelationSpec
from rrnet.errors import CheckpointError, PromptError

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
