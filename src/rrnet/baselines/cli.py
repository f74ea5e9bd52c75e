"""`rrnet baseline {personalized,textual-inversion,lora}`: train one baseline on one relation.

`rrnet.cli` adds the parser with `add_baseline_parser(sub)` and dispatches
`args.command == "baseline"` to `run_baseline(args)`. Flags follow `rrnet train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrnet import validation as check
from rrnet.baselines.config import DEFAULT_LEARNING_RATES, BaselineConfig
from rrnet.cli_flags import checkpoint_flags as _checkpoint_flags, checkpointing_of as _checkpointing, default_of
from rrnet.cli_flags import model_flags as _model_flags

CLI_KINDS = {"personalized": "personalized", "textual-inversion": "textual_inversion", "lora": "lora"}
_HELP = {
    "personalized": "fine-tune the text encoder (paper, Table 1)",
    "textual-inversion": "learn new token embeddings for the relation (Appendix A)",
    "lora": "LoRA on the UNet attention projections (Appendix A)",
}


def add_baseline_parser(sub) -> argparse.ArgumentParser:
    """`rrnet baseline KIND --model M --data RELATION --output_dir D [...]`; defaults are `BaselineConfig`'s."""

    def default(name: str):
        return default_of(BaselineConfig, name)

    p = sub.add_parser("baseline", help="train a baseline (personalized, textual inversion, LoRA) on one relation")
    kinds = p.add_subparsers(dest="baseline_kind", required=True, metavar="{" + ",".join(CLI_KINDS) + "}")
    for cli_kind, kind in CLI_KINDS.items():
        k = kinds.add_parser(cli_kind, help=_HELP[cli_kind])
        _model_flags(k, BaselineConfig)
        _checkpoint_flags(k)
        k.add_argument("--data", required=True, help="relation folder (official index.json layout) or manifest (.json/.toml)")
        k.add_argument("--epochs", type=check.positive_int, default=default("epochs"),
                       help="passes over both prompts' exemplar images")
        k.add_argument("--learning_rate", type=check.positive_float, default=default("learning_rate"),
                       help=f"default {DEFAULT_LEARNING_RATES[kind]:g}")
        k.add_argument("--batch_size", type=check.int_in(1, 4096), default=default("batch_size"))
        k.add_argument("--weight_decay", type=check.non_negative_float, default=default("weight_decay"))
        k.add_argument("--importance_sampling", action="store_true",
                       help="timesteps p(t) ~ 1 - 0.5 cos(pi t/T) as in RRNet (default: uniform)")
        if kind == "textual_inversion":
            k.add_argument("--shared_token", action="store_true",
                           help="one learned token in both prompts (default: one per direction)")
        if kind == "lora":
            k.add_argument("--rank", type=check.int_in(1, 4096), default=default("lora_rank"))
            k.add_argument("--lora_alpha", type=check.positive_float, default=default("lora_alpha"))
            k.add_argument("--target_modules", nargs="+", default=list(default("lora_targets")))
    return p


def config_from_args(args) -> BaselineConfig:
    """The `BaselineConfig` the flags describe; a kind's own flags (LoRA rank, shared token) are
    only on its sub-command, and the other kinds keep the dataclass defaults."""
    kind_flags = {"shared_token": "shared_token", "rank": "lora_rank", "lora_alpha": "lora_alpha",
                  "target_modules": "lora_targets"}
    own = {field: getattr(args, flag) for flag, field in kind_flags.items() if hasattr(args, flag)}
    if "lora_targets" in own:
        own["lora_targets"] = tuple(own["lora_targets"])
    return BaselineConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        weight_decay=args.weight_decay, importance_sampling=args.importance_sampling,
        resolution=args.resolution, seed=args.seed, **own,
    )


def run_baseline(args) -> None:
    from rrnet.backbones.loading import load_pipeline
    from rrnet.baselines.training import train_baseline
    from rrnet.baselines.checkpoint import RECORD_NAME
    from rrnet.data import load_relation
    from rrnet.locking import folder_lock
    from rrnet.resume import check_output_folder

    check.check_run(args)
    kind = CLI_KINDS[args.baseline_kind]
    config = config_from_args(args)
    config.check()
    spec = load_relation(args.data)
    check.check_prompts(args.model, [spec])
    checkpointing = _checkpointing(args)
    with folder_lock(args.output_dir):  # held from the checks to baseline.json
        finished = (Path(args.output_dir) / RECORD_NAME).is_file()
        check_output_folder(args.output_dir, finished, checkpointing, f"{kind} baseline")
        pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
        _, history = train_baseline(kind, pipe, spec, config, args.output_dir, progress=not args.no_progress,
                                    model_id=args.model, checkpointing=checkpointing)
    print(f"trained {args.baseline_kind} baseline for {spec.name}: loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}")
    print(f"checkpoint saved to {args.output_dir}")
