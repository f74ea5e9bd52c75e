"""Freezing a pipeline for training and handing it back exactly as it was.

Training freezes the text encoder, UNet and VAE and may switch on the UNet's gradient
checkpointing or `torch.compile`; a library function must not leave those changes behind in a
pipeline its caller goes on using (for generation, say).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def backbone_modules(pipe) -> dict[str, torch.nn.Module]:
    modules = {"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae": pipe.vae}
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: its last layer carries the pooled edit in training
        modules["text_encoder_2"] = pipe.text_encoder_2
    return modules


def freeze(pipe) -> None:
    """Freeze every backbone model: only the trained part receives gradients."""
    for module in backbone_modules(pipe).values():
        module.requires_grad_(False)
        module.eval()


@contextmanager
def preserved_flags(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Put back each module's train/eval mode and each parameter's `requires_grad` on exit.

    (diffusers' `load_lora_weights` freezes the UNet's own weights, for example.)
    """
    saved = [(module, module.training, [(p, p.requires_grad) for p in module.parameters()]) for module in modules]
    try:
        yield
    finally:
        for module, training, flags in saved:
            module.train(training)
            for param, requires_grad in flags:
                param.requires_grad_(requires_grad)


def is_checkpointing(unet) -> bool:
    """Whether the UNet recomputes activations in backward (diffusers keeps the flag on its blocks)."""
    return bool(getattr(unet, "is_gradient_checkpointing", False))


@contextmanager
def preserved_unet_switches(unet) -> Iterator[None]:
    """Put back the UNet's gradient checkpointing and `torch.compile` state on exit."""
    checkpointing = is_checkpointing(unet)
    compiled = getattr(unet, "_compiled_call_impl", None)
    try:
        yield
    finally:
        if is_checkpointing(unet) != checkpointing and hasattr(unet, "enable_gradient_checkpointing"):
            (unet.enable_gradient_checkpointing if checkpointing else unet.disable_gradient_checkpointing)()
        if hasattr(unet, "_compiled_call_impl"):
            unet._compiled_call_impl = compiled


@contextmanager
def frozen_backbone(pipe) -> Iterator[None]:
    """Freeze text encoder, UNet and VAE inside the block; restore their flags afterwards."""
    with preserved_flags(backbone_modules(pipe).values()):
        freeze(pipe)
        yield
