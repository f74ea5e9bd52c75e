"""A small CLIP-style BPE tokenizer for the mini world, built locally in milliseconds.

The vocabulary is CLIP's byte alphabet (so any text still tokenizes) plus merges that make every
word the mini world uses a single token. It is a real `CLIPTokenizer`, so diffusers pipelines,
the rectifier's token positions and SD-2-style "!" padding behave exactly as with SD.
"""

from __future__ import annotations

from rrnet.backbones.clip_vocab import bytes_to_unicode, tokenizer_from_vocab
from rrnet.world.vocab import object_names, relation_phrases

TEMPLATE_WORDS = ("a", "photo", "of", "this", "is", "there", "the", "an", "and")


def world_words() -> list[str]:
    """Every word of the mini world's prompts, in a fixed order."""
    words: list[str] = []
    for phrase in (*TEMPLATE_WORDS, *object_names(), *relation_phrases()):
        for word in phrase.split():
            if word not in words:
                words.append(word)
    return words


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges by rank, as CLIP does within one word."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, float("inf")), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == float("inf"):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """Base byte alphabet plus just enough merges that each word is one token."""
    ranks: dict[tuple[str, str], int] = {}
    merges: list[str] = []
    for word in words:
        symbols = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(symbols) > 1:  # merge left to right until the word is whole
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(" ".join(pair))
            symbols = _bpe(symbols, ranks)
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}, merges


def world_tokenizer(model_max_length: int = 77):
    """A `CLIPTokenizer` (SD-2 style: pads with "!") whose vocabulary knows the mini world's words."""
    vocab, merges = vocab_and_merges(world_words())
    return tokenizer_from_vocab(vocab, merges, pad_token="!", model_max_length=model_max_length)
