"""Flags and checks shared by the `rrnet` sub-commands, in a module of their own so that
sub-command modules never import `rrnet.cli` (which imports them)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rrnet import validation as check
from rrnet.errors import RRNetError


def default_of(config: type, name: str) -> Any:
    """The default of field `name` of the dataclass `config`.

    A flag that sets a config field takes its default from here, so each default is written once,
    in the dataclass, and the command line and the library never disagree.
    """
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise TypeError(f"{config.__name__}.{name} has no default")
    raise TypeError(f"{config.__name__} has no field {name!r}")


class OneLineParser(argparse.ArgumentParser):
    """A flag mistake is one `rrnet: error:` line and exit 2, like every other user error (no usage dump)."""

    def error(self, message: str):
        command = self.prog.removeprefix("rrnet").strip()
        self.exit(2, f"rrnet: error: {command + ': ' if command else ''}{message}\n")


def model_flags(p: argparse.ArgumentParser, config: type | None = None) -> None:
    """Model, device, seed, resolution and output flags; `config` is the dataclass whose `seed`
    and `resolution` defaults they take (0 and the model's own resolution without one)."""
    p.add_argument("--pretrained_model_name_or_path", "--model", dest="model", required=True,
                   help="diffusers Stable Diffusion model: hub id or local folder")
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no",
                   help="dtype of the frozen models (the rectifier always trains in fp32)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=check.seed, default=default_of(config, "seed") if config else 0)
    p.add_argument("--resolution", type=check.resolution, default=default_of(config, "resolution") if config else None,
                   help=f"image size, a multiple of 8 up to {check.MAX_RESOLUTION} (default: the model's)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--no_progress", action="store_true", help="hide progress bars")


def checkpoint_flags(p: argparse.ArgumentParser) -> None:
    """diffusers' resumable-training flags, shared by `train` and `baseline`."""
    p.add_argument("--checkpointing_steps", type=check.positive_int, default=None,
                   help="write the full training state to OUTPUT/checkpoint-N every N optimiser steps")
    p.add_argument("--resume_from_checkpoint", default=None, metavar="latest|PATH",
                   help="continue from OUTPUT's latest checkpoint or a checkpoint folder (same weights as an uninterrupted run)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output folder that holds a finished result or another run's checkpoints")


def checkpointing_of(args):
    from rrnet.resume import Checkpointing

    return Checkpointing(every=args.checkpointing_steps, resume_from=args.resume_from_checkpoint,
                         overwrite=args.overwrite)


def check_positive(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise RRNetError(f"--{name} must be positive, got {value}")
