"""UNet update (paper, Appendix A): how a trained LoRA checkpoint is applied to a pipeline.

The checkpoint is diffusers' `save_lora_weights` format (`pytorch_lora_weights.safetensors`,
adapter config in the file's metadata), so `pipe.load_lora_weights(folder)` loads it; inside
`lora_applied` the adapters act in the pipeline's own UNet and are unloaded on exit. Training
lives in `rrnet.baselines.lora_training`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rrnet.baselines.checkpoint import read_record
from rrnet.baselines.pipeline_state import backbone_modules, preserved_flags, preserved_rng, quiet_loaders
from rrnet.errors import CheckpointError

KIND = "lora"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ADAPTER_NAME = "rrnet_baseline"


_ABSENT = object()


def has_adapters(unet) -> bool:
    """Whether peft adapters are already in `unet` (training and loading both refuse to stack)."""
    return bool(getattr(unet, "peft_config", None))


def peft_flag(unet) -> object:
    """diffusers' "adapters loaded" flag as it is now, for `restore_peft_flag`."""
    return getattr(unet, "_hf_peft_config_loaded", _ABSENT)


def restore_peft_flag(unet, flag: object) -> None:
    """`unload_lora` sets diffusers' "adapters loaded" flag to None; put back what was there."""
    if flag is _ABSENT:
        unet.__dict__.pop("_hf_peft_config_loaded", None)
    else:
        unet._hf_peft_config_loaded = flag


@contextmanager
def lora_applied(pipe, folder: str | Path) -> Iterator[None]:
    """`pipe.load_lora_weights(folder)` inside the block, `unload_lora_weights` after."""
    folder = Path(folder)
    read_record(folder, KIND)
    if not (folder / WEIGHT_NAME).is_file():
        raise CheckpointError(f"{folder / WEIGHT_NAME}: LoRA weights not found")
    if has_adapters(pipe.unet):
        raise CheckpointError(f"{folder}: the pipeline's UNet already carries LoRA adapters; unload them first")
    loaded_flag = peft_flag(pipe.unet)
    with preserved_flags(backbone_modules(pipe).values()):
        try:
            with preserved_rng(pipe.unet.device), quiet_loaders():
                pipe.load_lora_weights(folder, weight_name=WEIGHT_NAME, adapter_name=ADAPTER_NAME)
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            _unload(pipe, loaded_flag)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{folder}: cannot load the LoRA weights ({first[:200]})") from None
        try:
            yield
        finally:
            _unload(pipe, loaded_flag)


def _unload(pipe, loaded_flag: object) -> None:
    pipe.unload_lora_weights()
    restore_peft_flag(pipe.unet, loaded_flag)
