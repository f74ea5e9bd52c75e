"""`rrnet analyze ...`: the paper's analyses from the command line (thin: parse, call the library).

Wire it into `rrnet.cli` with `add_analyze_parser(sub)` in `build_parser` and
`"analyze": run_analyze` in the handler table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrnet import validation as check
from rrnet.errors import DataError, RRNetError

MASK_MODE_HELP = ("eot: the first EOT position (the vector RRNet edits); eot_and_padding: EOT and every position "
                  "after it, which also summarise the sentence")


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    from rrnet.cli_flags import default_of
    from rrnet.generate import GenerationSettings

    p.add_argument("--num_images", type=check.positive_int, default=default_of(GenerationSettings, "num_images"), help="images per prompt and variant (image k uses seed + k)")
    p.add_argument("--steps", type=check.positive_int, default=None, help="sampling steps (default: the model's record for the mini world, else 30)")
    p.add_argument("--guidance_scale", type=check.non_negative_float, default=None, help="classifier-free guidance (default: the model's record for the mini world, else 7.5)")


def _triplet_flag(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--triplet", nargs=3, metavar=("A", "R", "B"), default=None, help=help)


def add_analyze_parser(sub) -> None:
    """Add `rrnet analyze {osp,mask-eot,swap-eot,alpha-sweep}` to the `rrnet` subparsers."""
    from rrnet.cli_flags import default_of, model_flags
    from rrnet.generate import GenerationSettings

    def _model_flags(parser: argparse.ArgumentParser) -> None:
        model_flags(parser, GenerationSettings)

    p = sub.add_parser("analyze", help="the paper's analyses: OSP EOT cosine, EOT masking / swapping, alpha sweeps")
    analyses = p.add_subparsers(dest="analyze_command", required=True)

    o = analyses.add_parser("osp", help="cosine of the EOT states of object-swapped prompts (Sec. 3.1)")
    _model_flags(o)
    o.add_argument("--pairs", nargs="+", default=[], metavar="'PROMPT|SWAPPED'", help="prompt pairs, each 'prompt|swapped prompt'")
    o.add_argument("--pairs_file", default=None, help="text file, one 'prompt|swapped prompt' per line (# comments)")
    o.add_argument("--rectifier", default=None, help="rectifier folder: also report the rectified EOT cosine")
    o.add_argument("--alpha", type=check.finite_float, nargs="+", default=None, help="alphas for the rectified cosine (default 0 .. 0.8)")
    _triplet_flag(o, "the words to rectify when the prompts are not the trained relation")

    m = analyses.add_parser("mask-eot", help="generate with the EOT token kept vs masked out of cross-attention (Fig. 2)")
    _model_flags(m)
    m.add_argument("--prompt", nargs="+", required=True)
    m.add_argument("--mask", choices=["eot", "eot_and_padding"], default="eot", help=MASK_MODE_HELP)
    _sampling_flags(m)
    _triplet_flag(m, "mini-world relation: judge the images exactly")

    s = analyses.add_parser("swap-eot", help="generate prompt X with the EOT state of prompt Y (Appendix C)")
    _model_flags(s)
    s.add_argument("--prompt", nargs="+", required=True, help="prompt(s) X")
    s.add_argument("--eot_from", nargs="+", required=True, help="prompt(s) Y giving the EOT state, one per --prompt")
    _sampling_flags(s)
    _triplet_flag(s, "mini-world relation: judge the images exactly")

    a = analyses.add_parser("alpha-sweep", help="a grid of the same seeds at increasing alpha (Fig. 4)")
    _model_flags(a)
    a.add_argument("--rectifier", required=True)
    a.add_argument("--alpha", type=check.finite_float, nargs="+", default=list(default_of(GenerationSettings, "alphas")))
    a.add_argument("--prompt", nargs="+", default=None, help="prompts (default: the rectifier's pair)")
    _sampling_flags(a)
    _triplet_flag(a, "the words to rectify when the prompts are not the trained relation (also: judge mini-world images)")


def read_pairs(pairs: list[str], pairs_file: str | None) -> list[tuple[str, str]]:
    """Pairs from `--pairs` and `--pairs_file` (one 'a|b' per line; blank lines and # comments skipped)."""
    from rrnet.analysis.osp import parse_pair

    parsed = [parse_pair(text) for text in pairs]
    if pairs_file:
        path = Path(pairs_file)
        if not path.is_file():
            raise DataError(f"{path}: pairs file not found")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                try:
                    parsed.append(parse_pair(line))
                except RRNetError as exc:
                    raise DataError(f"{path}:{number}: {exc}") from None
    return parsed


def _load(args, rectifier_path: str | None = None):
    """The pipeline and (optionally) a rectifier on its device, checked against each other."""
    from rrnet.backbones.loading import load_pipeline
    from rrnet.rectifier_files import load_rectifier

    rectifier = load_rectifier(rectifier_path) if rectifier_path else None
    pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
    from rrnet.backbones.sdxl import refuse_sdxl

    refuse_sdxl(pipe, "rrnet analyze")
    if rectifier is not None:
        rectifier.check_backbone(pipe)
        rectifier.to(pipe.device)
    return pipe, rectifier


def _settings(args):
    from rrnet.cli_flags import check_positive as _check_positive
    from rrnet.generate import GenerationSettings

    _check_positive(args, "num_images", "steps", "resolution")
    return GenerationSettings(num_images=args.num_images, seed=args.seed, steps=args.steps,
                              guidance_scale=args.guidance_scale, resolution=args.resolution)


def _triplet(args):
    return tuple(args.triplet) if args.triplet else None


def run_osp(args) -> None:
    from rrnet.analysis.osp import osp_similarity
    from rrnet.generate import DEFAULT_ALPHAS

    if args.alpha is not None and not args.rectifier:
        raise RRNetError("--alpha needs --rectifier")
    pairs = read_pairs(args.pairs, args.pairs_file)
    pipe, rectifier = _load(args, args.rectifier)
    if not pairs:
        if rectifier is None or not rectifier.config.prompts:
            raise RRNetError("give --pairs or --pairs_file (or a --rectifier that records its prompt pair)")
        pairs = [tuple(p) for p in rectifier.config.prompts]
    report = osp_similarity(pipe, pairs, rectifier, args.alpha or DEFAULT_ALPHAS, _triplet(args))
    path = report.save(args.output_dir, {"model": args.model, "rectifier": args.rectifier})
    for pair in report.pairs:
        rect = "".join(f", alpha {a}: {c:.4f}" for a, c in pair.rectified_eot_cosine.items())
        print(f"{pair.prompt!r} vs {pair.swapped!r}: EOT cosine {pair.eot_cosine:.4f}{rect}")
    print(f"written {path}")


def run_mask(args) -> None:
    from rrnet.analysis.eot import eot_masking

    settings = _settings(args)
    pipe, _ = _load(args)
    result = eot_masking(pipe, args.prompt, args.output_dir, settings, args.mask, _triplet(args),
                         progress=not args.no_progress, metadata={"model": args.model})
    print(f"images in {result.output_dir}, grid: {result.grid}, record: {result.record}")


def run_swap(args) -> None:
    from rrnet.analysis.eot import eot_swap

    if len(args.prompt) != len(args.eot_from):
        raise RRNetError(f"--eot_from needs one prompt per --prompt: got {len(args.eot_from)} for {len(args.prompt)}")
    settings = _settings(args)
    pipe, _ = _load(args)
    result = eot_swap(pipe, list(zip(args.prompt, args.eot_from)), args.output_dir, settings, _triplet(args),
                      progress=not args.no_progress, metadata={"model": args.model})
    print(f"images in {result.output_dir}, grid: {result.grid}, record: {result.record}")


def run_sweep(args) -> None:
    from rrnet.analysis.sweep import alpha_sweep

    settings = _settings(args)
    pipe, rectifier = _load(args, args.rectifier)
    prompts = args.prompt
    if prompts is None:
        if not rectifier.config.prompts:
            raise RRNetError("--prompt is required: the rectifier records no prompt pair")
        prompts = list(rectifier.config.prompts[0])
    result = alpha_sweep(pipe, rectifier, prompts, args.output_dir, args.alpha, settings, _triplet(args),
                         progress=not args.no_progress, metadata={"model": args.model, "rectifier": args.rectifier})
    cosines = result.summary["eot_cosine_between_prompts"]
    if cosines:
        print("EOT cosine between the prompts: " + ", ".join(f"{k} {v:.4f}" for k, v in cosines.items()))
    print(f"images in {result.generation.output_dir}, grid: {result.generation.grid}, record: {result.record}")


def run_analyze(args) -> None:
    """Run the `rrnet analyze` subcommand in `args`; user errors raise `RRNetError`."""
    from rrnet.generate import fill_sampling_defaults

    handlers = {"osp": run_osp, "mask-eot": run_mask, "swap-eot": run_swap, "alpha-sweep": run_sweep}
    check.check_run(args)  # device, model folder, output folder: before any model loads
    if hasattr(args, "steps"):
        fill_sampling_defaults(args)
    handlers[args.analyze_command](args)
