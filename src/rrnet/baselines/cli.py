"""`rrnet baseline {personalized,textual-inversion,lora}`: train one baseline on one relation.

`rrnet.cli` adds the parser with `add_baseline_parser(sub)` and dispatches
`args.command == "baseline"` to `run_baseline(args)`. Flags follow `rrnet train`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrnet.baselines.config import DEFAULT_LEARNING_RATES, LORA_TARGETS

CLI_KINDS = {"personalized": "personalized", "textual-inversion": "textual_inversion", "lora": "lora"}
_HELP = {
    "personalized": "fine-tune the text encoder (paper, Table 1)",
    "textual-inversion": "learn new token embeddings for the relation (Appendix A)",
    "lora": "LoRA on the UNet attention projections (Appendix A)",
}


def add_baseline_parser(sub) -> argparse.ArgumentParser:
    """`rrnet baseline KIND --model M --data RELATION --output_dir D [...]`."""
    # imported here, not at the top: rrnet.cli may import this module
    from rrnet import validation as check
    from rrnet.cli_flags import checkpoint_flags as _checkpoint_flags, model_flags as _model_flags

    p = sub.add_parser("baseline", help="train a baseline (personalized, textual inversion, LoRA) on one relation")
    kinds = p.add_subparsers(dest="baseline_kind", required=True, metavar="{" + ",".join(CLI_KINDS) + "}")
    for cli_kind, kind in CLI_KINDS.items():
        k = kinds.add_parser(cli_kind, help=_HELP[cli_kind])
        _model_flags(k)
        _checkpoint_flags(k)
        k.add_argument("--data", required=True, help="relation folder (official index.json layout) or manifest (.json/.toml)")
        k.add_argument("--epochs", type=check.positive_int, default=100, help="passes over both prompts' exemplar images")
        k.add_argument("--learning_rate", type=check.positive_float, default=None,
                       help=f"default {DEFAULT_LEARNING_RATES[kind]:g}")
        k.add_argument("--batch_size", type=check.int_in(1, 4096), default=1)
        k.add_argument("--weight_decay", type=check.non_negative_float, default=0.01)
        k.add_argument("--importance_sampling", action="store_true",
                       help="timesteps p(t) ~ 1 - 0.5 cos(pi t/T) as in RRNet (default: uniform)")
        if kind == "textual_inversion":
            k.add_argument("--shared_token", action="store_true",
                           help="one learned token in both prompts (default: one per direction)")
        if kind == "lora":
            k.add_argument("--rank", type=check.int_in(1, 4096), default=4)
            k.add_argument("--lora_alpha", type=check.positive_float, default=4.0)
            k.add_argument("--target_modules", nargs="+", default=list(LORA_TARGETS))
    return p


def config_from_args(args):
    """The `BaselineConfig` the flags describe."""
    from rrnet.baselines.config import BaselineConfig

    return BaselineConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        weight_decay=args.weight_decay, importance_sampling=args.importance_sampling,
        resolution=args.resolution, seed=args.seed, shared_token=getattr(args, "shared_token", False),
        lora_rank=getattr(args, "rank", 4), lora_alpha=getattr(args, "lora_alpha", 4.0),
        lora_targets=tuple(getattr(args, "target_modules", LORA_TARGETS)),
    )


def run_baseline(args) -> None:
    from rrnet.backbones.loading import load_pipeline
    from rrnet.baselines.training import train_baseline
    from rrnet.baselines.checkpoint import RECORD_NAME
    from rrnet.cli_flags import checkpointing_of as _checkpointing
    from rrnet.data import load_relation
    from rrnet.locking import folder_lock
    from rrnet import validation as check
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
