"""UNet update (paper, Appendix A): training LoRA on the UNet's attention projections, text encoder frozen.

Rank 4 (alpha 4) adapters on `to_q`, `to_k`, `to_v` and `to_out.0` of every attention layer,
trained with peft at lr 1e-4 for 100 epochs by default, as the appendix states. The adapters
are injected into the pipeline's own UNet for the run (trainable matrices kept in fp32) and
removed afterwards, which leaves the original `Linear` modules in place; the text conditioning
is frozen, so both prompts are encoded once. Saved with diffusers' `save_lora_weights` in the
format `rrnet.baselines.lora` applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rrnet.atomic import atomic_write
from rrnet.baselines.checkpoint import write_record
from rrnet.baselines.config import BaselineConfig
from rrnet.baselines.exemplars import prepare_exemplars
from rrnet.baselines.lora import ADAPTER_NAME, KIND, WEIGHT_NAME, has_adapters, peft_flag, restore_peft_flag
from rrnet.baselines.loop import baseline_identity, fit
from rrnet.baselines.pipeline_state import frozen_backbone
from rrnet.data import RelationSpec
from rrnet.errors import RRNetError
from rrnet.rectifier import encode_prompt
from rrnet.resume import Checkpointing


@contextmanager
def lora_adapter(unet, config: BaselineConfig) -> Iterator[list[torch.nn.Parameter]]:
    """Fresh LoRA adapters in `unet` (seeded), yielding their fp32 parameters; removed on exit."""
    from peft import LoraConfig

    if has_adapters(unet):
        raise RRNetError("the UNet already carries LoRA adapters; unload them before training a LoRA baseline")
    loaded_flag = peft_flag(unet)
    lora_config = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, init_lora_weights=True,
                             target_modules=list(config.lora_targets))
    with torch.random.fork_rng(devices=[unet.device] if unet.device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # seeded LoRA initialisation; the caller's global RNG is untouched
        unet.add_adapter(lora_config, adapter_name=ADAPTER_NAME)
    try:
        params = [p for n, p in unet.named_parameters() if ".lora_" in n]
        if not params:
            raise RRNetError(f"no UNet module matches the LoRA targets {list(config.lora_targets)}")
        for param in params:
            param.data = param.data.float()
            param.requires_grad_(True)
        yield params
    finally:
        unet.unload_lora()
        restore_peft_flag(unet, loaded_flag)


def train_lora(
    pipe,
    spec: RelationSpec,
    config: BaselineConfig | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    model_id: str | None = None,
    checkpointing: Checkpointing | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Train UNet LoRA adapters; returns their state dict (diffusers key names, CPU) and the history."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    config = config or BaselineConfig()
    config.check()
    unet = pipe.unet
    with frozen_backbone(pipe):
        exemplars = prepare_exemplars(pipe, spec, config)
        cached = {text: encode_prompt(pipe, text).hidden for text in {e.text for e in exemplars}}

        def encode(texts: list[str]) -> torch.Tensor:
            return torch.stack([cached[text] for text in texts])

        with lora_adapter(unet, config) as params:
            history = fit(pipe, exemplars, encode, params, config, config.rate(KIND), output_dir, progress, desc=KIND,
                          checkpointing=checkpointing, identity=baseline_identity(KIND, pipe, spec, config, model_id))
            adapter_config = unet.peft_config[ADAPTER_NAME].to_dict()
            if isinstance(adapter_config.get("target_modules"), (set, list, tuple)):  # peft keeps a set: fix the order
                adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
            state = get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)
            state = {k: v.detach().cpu().clone() for k, v in convert_state_dict_to_diffusers(state).items()}
    if output_dir is not None:
        save_lora(output_dir, state, adapter_config)
        write_record(output_dir, KIND, pipe, spec, config, history, model_id, weight_name=WEIGHT_NAME)
    return state, history


def save_lora(output_dir: str | Path, state: dict[str, torch.Tensor], adapter_config: dict) -> Path:
    """`StableDiffusionPipeline.save_lora_weights`, written to a temporary file and renamed."""
    from diffusers import StableDiffusionPipeline

    def write(tmp: str) -> None:
        StableDiffusionPipeline.save_lora_weights(
            save_directory=Path(tmp).parent, unet_lora_layers=state, weight_name=Path(tmp).name,
            safe_serialization=True, unet_lora_adapter_metadata=dict(adapter_config),
        )

    return atomic_write(Path(output_dir) / WEIGHT_NAME, write)
