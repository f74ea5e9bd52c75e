"""Masking prompt tokens out of a diffusers UNet's cross-attention, without a custom pipeline.

Why this way: the paper's Fig. 2 masks the EOT token *in cross-attention*, i.e. image queries
may not attend to that key. `StableDiffusionPipeline` never passes the UNet's
`encoder_attention_mask`, so instead every cross-attention layer's processor is wrapped, for the
duration of a `with` block, by `KeyMaskProcessor`, which adds `-inf` to the attention logits of
the masked key positions and then calls the layer's original processor (SDPA, xformers, classic:
whichever was installed). The originals are put back on exit, even after an error.

Only conditional rows are masked: a row is masked when its encoder states equal the prompt
embedding being masked, so the unconditional (negative-prompt) branch of classifier-free
guidance keeps all its tokens, whatever order or batching the pipeline uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rrnet.errors import RRNetError


@dataclass
class MaskRecord:
    """How often the mask took effect: lets a caller prove it was not silently skipped."""

    calls: int = 0
    masked_rows: int = 0


class KeyMaskProcessor:
    """Wraps one cross-attention processor: rows equal to `target` cannot attend to `positions`."""

    def __init__(self, inner, target: torch.Tensor, positions: Sequence[int], record: MaskRecord) -> None:
        self.inner = inner
        self.target = target
        self.positions = list(positions)
        self.record = record

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        self.record.calls += 1
        if encoder_hidden_states is not None and self.positions:
            bias = self._bias(encoder_hidden_states, hidden_states.dtype)
            if bias is not None:
                attention_mask = bias if attention_mask is None else attention_mask + bias
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs)

    def _bias(self, states: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive (B, 1, L) logits bias, -inf at the masked keys of matching rows, else None."""
        target = self.target.to(states.device, states.dtype)
        if states.shape[1:] != target.shape:
            return None
        rows = (states == target).flatten(1).all(1)
        if not rows.any():
            return None
        self.record.masked_rows += int(rows.sum())
        keys = torch.zeros(states.shape[1], dtype=torch.bool, device=states.device)
        keys[self.positions] = True
        masked = rows[:, None, None] & keys[None, None, :]
        zero = torch.zeros((), dtype=dtype, device=states.device)
        return torch.where(masked, torch.tensor(float("-inf"), dtype=dtype, device=states.device), zero)


def cross_attention_layers(unet) -> dict[str, torch.nn.Module]:
    """The UNet's cross-attention modules by name (diffusers `Attention` with a context input)."""
    return {
        name: m
        for name, m in unet.named_modules()
        if hasattr(m, "set_processor") and getattr(m, "is_cross_attention", False)
    }


@contextmanager
def masked_cross_attention(unet, prompt_embeds: torch.Tensor, positions: Sequence[int]) -> Iterator[MaskRecord]:
    """Inside the block, `unet` ignores key `positions` for rows whose states equal `prompt_embeds`.

    `prompt_embeds` is the (L, D) or (1, L, D) conditioning that will be passed to the pipeline.
    Yields a `MaskRecord`; the original processors are restored on exit.
    """
    target = prompt_embeds.detach()
    if target.dim() == 3:
        if target.shape[0] != 1:
            raise ValueError("mask one prompt embedding at a time")
        target = target[0]
    length = target.shape[0]
    bad = [p for p in positions if not 0 <= p < length]
    if bad:
        raise RRNetError(f"cannot mask token positions {bad}: the prompt has {length} positions")
    layers = cross_attention_layers(unet)
    if not layers:
        raise RRNetError("this UNet has no cross-attention layers to mask")
    record = MaskRecord()
    originals = {name: m.processor for name, m in layers.items()}
    try:
        for name, m in layers.items():
            m.set_processor(KeyMaskProcessor(originals[name], target, positions, record))
        yield record
    finally:
        for name, m in layers.items():
            m.set_processor(originals[name])
