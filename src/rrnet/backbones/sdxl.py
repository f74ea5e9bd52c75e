"""Stable Diffusion XL: two text encoders, a pooled text embedding and size conditioning.

SDXL's `prompt_embeds` concatenate both CLIP encoders' penultimate hidden states (768 + 1280
wide in SDXL 1.0); its `pooled_prompt_embeds` is text_encoder_2's projected EOT state (after its
last layer and final layer norm), which the UNet receives as a global condition
(`added_cond_kwargs["text_embeds"]`) beside the size/crop "time ids".

A rectifier edits the EOT row of `prompt_embeds`. The pooled embedding is read from the same
EOT, one layer later, so it must follow that edit or the UNet would see two texts: one in
cross-attention and another in its global condition. `edited_pooled` recomputes it the way the
encoder itself does (its own last layer, final layer norm and text projection) from the edited
penultimate states. Both places then carry one edit, with no parameter of their own to drift
apart, and in training the gradient reaches the rectifier through both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rrnet.errors import RRNetError

SDXL_CLASS = "StableDiffusionXLPipeline"


class SDXLConditioning(NamedTuple):
    """What an SDXL pipeline is conditioned on: `pipe(prompt_embeds=..., pooled_prompt_embeds=...)`."""

    prompt_embeds: torch.Tensor  # (B, L, D1 + D2)
    pooled_prompt_embeds: torch.Tensor  # (B, P)


def is_sdxl(pipe) -> bool:
    """Whether `pipe` is a `StableDiffusionXLPipeline` (or a subclass): two encoders and a pooled embedding."""
    from diffusers import StableDiffusionXLPipeline

    return isinstance(pipe, StableDiffusionXLPipeline)


def refuse_sdxl(pipe, what: str) -> None:
    """One error line where a part of rrnet supports SD 1.x / 2.x models only."""
    if is_sdxl(pipe):
        raise RRNetError(f"{what} supports Stable Diffusion 1.x / 2.x models only, not SDXL")


def text_encoders(pipe) -> list:
    """The encoders whose hidden states `prompt_embeds` concatenates, in that order."""
    return [pipe.text_encoder, pipe.text_encoder_2] if is_sdxl(pipe) else [pipe.text_encoder]


def text_widths(pipe) -> list[int]:
    """Each text encoder's width, in `prompt_embeds` order (their sum is its last dimension)."""
    return [int(encoder.config.hidden_size) for encoder in text_encoders(pipe)]


def pooled_width(pipe) -> int | None:
    """Width of SDXL's pooled text embedding (text_encoder_2's projection); None for SD 1.x / 2.x."""
    return int(pipe.text_encoder_2.config.projection_dim) if is_sdxl(pipe) else None


@torch.no_grad()
def encode(pipe, prompt: str) -> SDXLConditioning:
    """One prompt as the pipeline encodes it (its own `encode_prompt`, no guidance, one image)."""
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompt, device=pipe.text_encoder.device,
                                              num_images_per_prompt=1, do_classifier_free_guidance=False)
    return SDXLConditioning(embeds, pooled)


def pooled_from_penultimate(text_encoder_2, hidden: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
    """text_encoder_2's projected EOT state (B, P) from its penultimate hidden states (B, L, D2):
    the encoder's own last layer (causal), final layer norm and text projection, in its dtype."""
    from transformers.masking_utils import create_causal_mask

    text_model = text_encoder_2.text_model
    parameter = text_encoder_2.text_projection.weight
    states = hidden.to(parameter.device, parameter.dtype)
    mask = create_causal_mask(config=text_model.config, inputs_embeds=states, attention_mask=None, cache=None)
    states = text_model.encoder.layers[-1](states, mask, is_causal=True)
    states = text_model.final_layer_norm(states)
    rows = torch.arange(states.shape[0], device=states.device)
    return text_encoder_2.text_projection(states[rows, eot_index.to(states.device)])


def edited_pooled(pipe, pooled: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
                  eot_index: torch.Tensor) -> torch.Tensor:
    """The pooled embeddings (B, P) that follow an edit of `prompt_embeds` from `before` to `after`
    (both (B, L, D1 + D2)): the pipeline's own `pooled` plus the change the edit makes to what
    text_encoder_2 computes from its part of the states. Added as a change, so an edit of zero
    (alpha 0) leaves the pipeline's pooled embedding exactly as it was."""
    start = pipe.text_encoder.config.hidden_size
    encoder = pipe.text_encoder_2
    with torch.no_grad():  # a constant, even in training
        base = pooled_from_penultimate(encoder, before[..., start:], eot_index).float()
    change = pooled_from_penultimate(encoder, after[..., start:], eot_index).float() - base
    return pooled + change.to(pooled.device)


def time_ids(resolution: int, batch: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """SDXL's size conditioning (B, 6) for square images sampled as the pipeline does by default:
    original size = target size = `resolution`, crop at (0, 0)."""
    ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=dtype, device=device)
    return ids.expand(batch, -1)


def added_conditions(pipe, pooled: torch.Tensor, resolution: int) -> dict[str, torch.Tensor]:
    """`added_cond_kwargs` of an SDXL UNet call: pooled text embeddings and time ids, in the UNet's dtype."""
    unet = pipe.unet
    return {"text_embeds": pooled.to(unet.device, unet.dtype),
            "time_ids": time_ids(resolution, pooled.shape[0], unet.dtype, unet.device)}


@torch.no_grad()
def negative_conditioning(pipe, conditioning: SDXLConditioning) -> SDXLConditioning:
    """The unconditional side exactly as the pipeline makes it when given only `prompt_embeds`:
    zeros with `force_zeros_for_empty_prompt`, otherwise the encoded empty prompt."""
    _, negative, _, negative_pooled = pipe.encode_prompt(
        prompt=None, device=pipe.text_encoder.device, num_images_per_prompt=1, do_classifier_free_guidance=True,
        prompt_embeds=conditioning.prompt_embeds, pooled_prompt_embeds=conditioning.pooled_prompt_embeds)
    return SDXLConditioning(negative, negative_pooled)
