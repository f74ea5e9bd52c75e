"""Token positions in a prompt: where its end-of-text (EOT) token is and which tokens spell a word.

Positions come from the model's own tokenizer, never from constants: SD 2.x pads with "!" (id 0),
SD 1.x pads with the EOT token itself, and a word may be split into several BPE tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rrnet.errors import PromptError


@dataclass(frozen=True)
class PromptTokens:
    """A prompt as the text encoder sees it: padded ids and the index of its (first) EOT token."""

    prompt: str
    input_ids: tuple[int, ...]
    eot_index: int


def tokenize_prompt(tokenizer, prompt: str) -> PromptTokens:
    """Tokenize like diffusers' `encode_prompt` (pad to max length) but refuse silent truncation."""
    if not isinstance(prompt, str):
        raise PromptError(f"prompt must be text, got {type(prompt).__name__}")
    limit = tokenizer.model_max_length
    n = len(tokenizer(prompt, truncation=False).input_ids)
    if n > limit:
        raise PromptError(
            f"prompt is {n} tokens long, the text encoder takes at most {limit} (with start/end tokens): {_short(prompt)}"
        )
    ids = tokenizer(prompt, padding="max_length", max_length=limit, truncation=True).input_ids
    eot = tokenizer.eos_token_id
    # SD 1.x pads with EOT too, so the first occurrence is the real end of text
    return PromptTokens(prompt=prompt, input_ids=tuple(ids), eot_index=ids.index(eot))


def word_token_ids(tokenizer, word: str) -> list[int]:
    """The BPE ids that spell `word` (no start/end tokens); a word may be several tokens."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not word.strip() or not ids:
        raise PromptError(f"empty word: {word!r}")
    return list(ids)


def word_positions(tokenizer, tokens: PromptTokens, word: str) -> list[int]:
    """Positions of `word`'s tokens inside the prompt (first occurrence); a clear error if absent."""
    target = word_token_ids(tokenizer, word)
    ids = tokens.input_ids[: tokens.eot_index]
    for start in range(len(ids) - len(target) + 1):
        if list(ids[start : start + len(target)]) == target:
            return list(range(start, start + len(target)))
    raise PromptError(f"word {word!r} is not in the prompt {tokens.prompt!r}")


def word_embedding(text_encoder, tokenizer, tokens: PromptTokens, word: str) -> torch.Tensor:
    """Mean of the token-embedding-table rows of the word's tokens in this prompt (width D)."""
    positions = word_positions(tokenizer, tokens, word)
    ids = torch.tensor([tokens.input_ids[p] for p in positions])
    table = text_encoder.get_input_embeddings().weight
    return table[ids.to(table.device)].detach().float().mean(0)


def order_in_prompt(tokenizer, tokens: PromptTokens, first: str, second: str) -> bool:
    """True when `first` appears before `second` in the prompt: tells A-R-B from B-R-A."""
    return word_positions(tokenizer, tokens, first)[0] < word_positions(tokenizer, tokens, second)[0]


def _short(text: str, limit: int = 60) -> str:
    """A prompt quoted for an error line, cut so the line stays readable."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
