"""`rrnet experiment`: the paper's comparisons in one resumable command.

For every relation of a benchmark it trains RRNet, each ablation (Table 2) and each baseline
(Table 1 and Appendix A), measures the OSP EOT cosine before and after rectification (Sec. 3.1),
evaluates everything with the benchmark runner, optionally transfers one rectifier to unseen
object pairs (Sec. 4.4), and writes one report shaped like the paper's tables.

Layout::

    checkpoints/<variant>/<relation>/   one folder per trained model; complete ones are skipped
    evaluation/                         the runner's images, judgements, results.json, plot
    unseen/                             the transfer evaluation (with --unseen)
    osp.json, experiment.json, report.md
"""

from __future__ import annotations

import logging

import copy
import dataclasses
import gc
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrnet.atomic import atomic_write_text
from rrnet.data import RelationSpec, find_relations
from rrnet.errors import DataError, RRNetError
from rrnet.eval.judges.base import Judge
from rrnet.eval.report import table_markdown
from rrnet.eval.runner import DATASET, PAPER_ALPHAS, EvalSettings, FIDOptions, check_inputs, dataset_row, evaluate
from rrnet.interruption import TrainingInterrupted
from rrnet.processes import Processes, current_processes
from rrnet.train import TrainConfig

# RRNet and its ablations: TrainConfig overrides (paper Table 2, plus one the paper did not run)
ABLATIONS: dict[str, dict[str, Any]] = {
    "rrnet": {},
    "no_hgcn": {"adjuster": "free"},
    "no_negative": {"negative": False},
    "no_disentangle": {"disentangle": False},
    "after_eot": {"edit_positions": "after_eot"},
}
BASELINES: tuple[str, ...] = ("personalized", "textual_inversion", "lora")
VARIANTS: tuple[str, ...] = (*ABLATIONS, *BASELINES)

DISPLAY: dict[str, str] = {
    DATASET: "RR Dataset (exemplar images)",
    "base": "Stable Diffusion (base model)",
    "personalized": "Personalized Diffusion",
    "textual_inversion": "Textual Inversion",
    "lora": "UNet update (LoRA)",
    "rrnet": "RRNet",
    "no_hgcn": "w/o HGCN",
    "no_negative": "w/o negative loss",
    "no_disentangle": "w/o node disentanglement",
    "after_eot": "edit EOT and all later positions",
    "rrnet_transfer": "RRNet, rectifier of another pair",
}

logger = logging.getLogger(__name__)


@dataclass
class ExperimentConfig:
    """What to train and how to evaluate it; `variants` picks among RRNet, ablations and baselines."""

    train: TrainConfig = field(default_factory=TrainConfig)
    baseline_epochs: int | None = None  # None: the same epochs as RRNet
    variants: tuple[str, ...] = VARIANTS
    alphas: tuple[float, ...] = PAPER_ALPHAS
    ablation_alpha: float = 0.6
    evaluation: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise RRNetError(f"unknown experiment variant(s) {unknown}; choose from {list(VARIANTS)}")
        if any(v in ABLATIONS and v != "rrnet" for v in self.variants) and "rrnet" not in self.variants:
            raise RRNetError("ablations are compared with RRNet: keep 'rrnet' among the variants")


def checkpoint_done(folder: Path, variant: str) -> bool:
    """A checkpoint counts as finished only when the file its trainer writes last exists."""
    if variant in ABLATIONS:
        return (folder / "config.json").is_file() and (folder / "rectifier.safetensors").is_file()
    from rrnet.baselines.checkpoint import RECORD_NAME

    return (folder / RECORD_NAME).is_file()


def train_all(pipe_getter: Callable[[], Any], model_id: str, specs: Sequence[RelationSpec], config: ExperimentConfig,
              root: Path, progress: bool = True, processes: Processes | None = None) -> dict[str, list[str]]:
    """Train every missing (variant, relation) checkpoint; returns what was trained and skipped.

    With several `processes` the main process lists the missing checkpoints, each process trains
    its share (`split_between_processes`; each model has its own folder, under the experiment's
    lock held by the main process) and every process waits for all of them before returning, so
    evaluation never reads a half-trained folder."""
    processes = processes or Processes()
    tasks = [(variant, spec) for variant in config.variants for spec in specs]
    missing = processes.from_main(lambda: [i for i, (variant, spec) in enumerate(tasks)
                                           if not checkpoint_done(root / variant / spec.name, variant)])
    mine = processes.split(missing)
    if processes.several:
        logger.info("process %d of %d: training %d of %d models", processes.index, processes.num_processes, len(mine),
                    len(missing))
    with processes.together():
        trained = _train_tasks([tasks[i] for i in mine], pipe_getter, model_id, config, root, progress)
    trained = processes.gather(trained)  # also the barrier before evaluation
    return {"trained": trained,
            "skipped": [f"{variant}/{spec.name}" for i, (variant, spec) in enumerate(tasks) if i not in missing]}


def _train_tasks(tasks: Sequence[tuple[str, RelationSpec]], pipe_getter: Callable[[], Any], model_id: str,
                 config: ExperimentConfig, root: Path, progress: bool) -> list[str]:
    from rrnet.baselines import BaselineConfig, train_baseline
    from rrnet.resume import Checkpointing, latest_checkpoint
    from rrnet.train import train_rectifier

    trained = []
    for variant, spec in tasks:
        folder = root / variant / spec.name
        tag = f"{variant}/{spec.name}"
        if progress:
            logger.info("training %s", tag)
        pipe = pipe_getter()
        # a run stopped with Ctrl-C left a checkpoint: continue it
        resume = Checkpointing(resume_from="latest" if latest_checkpoint(folder) else None)
        try:
            if variant in ABLATIONS:
                train_rectifier(pipe, spec, dataclasses.replace(config.train, **ABLATIONS[variant]), folder,
                                model_id=model_id, progress=progress, checkpointing=resume)
            else:
                t = config.train
                baseline = BaselineConfig(epochs=config.baseline_epochs or t.epochs, seed=t.seed,
                                          resolution=t.resolution)
                train_baseline(variant, pipe, spec, baseline, folder, progress=progress, model_id=model_id,
                               checkpointing=resume)
        except TrainingInterrupted as stopped:
            raise TrainingInterrupted(stopped.checkpoint, stopped.step, "run the same command again to continue") from None
        trained.append(tag)
    return trained


def osp_table(pipe, specs: Sequence[RelationSpec], root: Path, alphas: Sequence[float]) -> list[dict[str, Any]]:
    """OSP EOT cosine per relation: base model and full RRNet at each alpha (paper Sec. 3.1)."""
    from rrnet.analysis.osp import osp_similarity
    from rrnet.rectifier_files import load_rectifier

    rows = []
    for spec in specs:
        folder = root / "rrnet" / spec.name
        rectifier = load_rectifier(folder) if checkpoint_done(folder, "rrnet") else None
        report = osp_similarity(pipe, [(spec.prompt, spec.swapped_prompt)], rectifier, alphas,
                                (spec.object_a, spec.relation, spec.object_b))
        pair = report.pairs[0]
        rows.append({"relation": spec.name, "prompt": spec.prompt, "swapped_prompt": spec.swapped_prompt,
                     "eot_cosine_base": pair.eot_cosine, "eot_cosine_rectified": pair.rectified_eot_cosine})
    return rows


def build_methods(config: ExperimentConfig, root: Path) -> list:
    from rrnet.baselines import load_method
    from rrnet.eval.methods import BaseMethod, RectifierMethod

    methods: list = [BaseMethod()]
    with_ablations = any(v in ABLATIONS and v != "rrnet" for v in config.variants)
    rrnet_alphas = tuple(sorted(set(config.alphas) | ({config.ablation_alpha} if with_ablations else set())))
    for variant in config.variants:
        if variant == "rrnet":
            methods.append(RectifierMethod(root / variant, rrnet_alphas, name=variant))
        elif variant in ABLATIONS:
            methods.append(RectifierMethod(root / variant, (config.ablation_alpha,), name=variant))
        else:
            methods.append(load_method(variant, root / variant, name=variant))
    return methods


def _subset(results: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The results with only some rows, relabelled with the paper's method names."""
    out = copy.deepcopy(results)
    out["rows"] = [row for row in out["rows"] if keep(row)]
    for row in out["rows"]:
        name = DISPLAY.get(row["method"], row["method"])
        row["label"] = name if row["setting"] is None else f"{name} (alpha={row['setting']:g})"
    return out


def report_markdown(results: dict[str, Any], osp: list[dict[str, Any]], unseen: dict[str, Any] | None,
                    config: ExperimentConfig, trained: dict[str, list[str]]) -> str:
    variants = set(config.variants)
    gen = results["generation"]
    a0 = config.ablation_alpha
    lines = [
        "# rrnet experiment", "",
        (f"Model `{results['model']}`, benchmark `{results['benchmark']}` ({len(results['relations'])} relations), "
        f"{gen['num_images']} images per prompt and setting (seeds {gen['seed']}..{gen['seed'] + gen['num_images'] - 1}), "
        f"{gen['steps']} steps, guidance {gen['guidance_scale']:g}; RRNet trained {config.train.epochs} epochs, "
        f"baselines {config.baseline_epochs or config.train.epochs}. Rates in %, {results['interval']} intervals."),
        "",
        "## Table 1: comparison", "",
        table_markdown(_subset(results, lambda r: r["method"] in (DATASET, "base", "personalized", "rrnet"))),
        f"## Table 2: ablations (alpha = {a0:g})", "",
        table_markdown(_subset(results, lambda r: r["method"] in ABLATIONS and (r["setting"] == a0 or r["method"] != "rrnet"))),
        "## Table 5: more baselines", "",
        table_markdown(_subset(results, lambda r: r["method"] in ("textual_inversion", "lora", "rrnet"))),
        "## OSP EOT cosine (Sec. 3.1)", "",
        "| Relation | base | " + " | ".join(f"RRNet alpha={a:g}" for a in config.alphas) + " |",
        "|---|---|" + "---|" * len(config.alphas),
    ]
    for row in osp:
        rect = row["eot_cosine_rectified"]
        cells = [f"{rect[k]:.4f}" if k in rect else "–" for k in (f"{a:g}" for a in config.alphas)]
        lines.append(f"| {row['relation']} | {row['eot_cosine_base']:.4f} | " + " | ".join(cells) + " |")
    lines.append("")
    if unseen is not None:
        lines += ["## Unseen objects (Sec. 4.4)", "",
                  f"Rectifier of `{unseen['methods'][-1].get('trained_on')}` applied to: "
                  + ", ".join(r["name"] for r in unseen["relations"]) + ".", "",
                  table_markdown(_subset(unseen, lambda r: True))]
    missing = sorted({"rrnet", *ABLATIONS, *BASELINES} - variants)
    if missing:
        lines.append(f"Not run: {', '.join(missing)}.")
    lines.append(f"Checkpoints trained in this run: {len(trained['trained'])}; reused: {len(trained['skipped'])}.")
    lines.append("\n![trade-off](evaluation/tradeoff.png)\n")
    return "\n".join(lines)


def released_before(judges: Sequence[Judge | Callable[[], Judge]], release: Callable[[], None]) -> list[Callable[[], Judge]]:
    """Judge factories that first release the diffusion pipeline: a judge model (a 7B VLM) never
    shares the accelerator with it. The pipeline is loaded again if a later step needs it. A
    source's `check` (what it can judge) is kept, so checks still run before any generation."""
    from rrnet.eval.judges.factory import JudgeFactory
    from rrnet.eval.runner import as_judge

    def factory(source) -> JudgeFactory:
        def build() -> Judge:
            release()
            return as_judge(source)
        return JudgeFactory(build, getattr(source, "check", None))

    return [factory(source) for source in judges]


def run_experiment(
    load_pipe: Callable[[], Any],
    model_id: str,
    benchmark: str | Path,
    output_dir: str | Path,
    judges: Sequence[Judge | Callable[[], Judge]],
    config: ExperimentConfig | None = None,
    unseen: str | Path | None = None,
    transfer_from: str | None = None,
    fid: FIDOptions | None = None,
    progress: bool = True,
    processes: Processes | None = None,
) -> dict[str, Any]:
    """Train what is missing, evaluate everything, write `report.md` and `experiment.json`.

    Launched on several processes (`processes` defaults to what the environment says), the
    training jobs and the evaluations are split between them and the main process writes the
    records and returns the results; the others return {}."""
    config = config or ExperimentConfig()
    out = Path(output_dir)
    processes = processes or current_processes()
    progress = progress and processes.is_main
    specs = find_relations(benchmark)
    with processes.main_lock(out):  # one experiment per folder; its parts lock their own sub-folders
        return _run_experiment_locked(load_pipe, model_id, benchmark, out, specs, judges, config, unseen, transfer_from,
                                      fid, progress, processes)


def _run_experiment_locked(load_pipe, model_id, benchmark, out: Path, specs, judges, config: ExperimentConfig, unseen,
                           transfer_from, fid, progress, processes: Processes) -> dict[str, Any]:
    cache: dict[str, Any] = {}

    def pipe_getter():
        if "pipe" not in cache:
            cache["pipe"] = load_pipe()
        return cache["pipe"]

    def release_pipe() -> None:
        if cache.pop("pipe", None) is not None:
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    judges = released_before(judges, release_pipe)
    check_inputs(model_id, specs, [], judges, [dataset_row(specs, out)])  # before hours of training

    root = out / "checkpoints"
    trained = train_all(pipe_getter, model_id, specs, config, root, progress, processes)

    def osp() -> list[dict[str, Any]]:
        rows = osp_table(pipe_getter(), specs, root, config.alphas)
        atomic_write_text(out / "osp.json", json.dumps(rows, indent=2) + "\n")
        return rows

    osp = processes.from_main(osp)
    results = evaluate(pipe_getter, model_id, specs, build_methods(config, root), judges, out / "evaluation",
                       config.evaluation, fid=fid, benchmark=str(benchmark), progress=progress, include_dataset=True,
                       processes=processes)
    unseen_results = None
    if unseen is not None:
        unseen_results = evaluate_unseen(pipe_getter, model_id, specs, unseen, transfer_from, config, root, judges,
                                         out / "unseen", fid, progress, processes)
    if not processes.is_main:
        return {}
    record = {"config": dataclasses.asdict(config), "trained": trained, "osp": osp,
              "evaluation": str(out / "evaluation" / "results.json"),
              "unseen": None if unseen_results is None else str(out / "unseen" / "results.json")}
    atomic_write_text(out / "experiment.json", json.dumps(record, indent=2, default=str) + "\n")
    atomic_write_text(out / "report.md", report_markdown(results, osp, unseen_results, config, trained))
    return {"results": results, "unseen": unseen_results, "osp": osp, "trained": trained}


def evaluate_unseen(pipe_getter, model_id: str, specs: Sequence[RelationSpec], unseen: str | Path, transfer_from: str | None,
                    config: ExperimentConfig, root: Path, judges, output_dir: Path, fid, progress: bool,
                    processes: Processes | None = None) -> dict[str, Any]:
    """Apply the RRNet rectifier of one trained relation to unseen pairs with the same relation word."""
    from rrnet.eval.methods import BaseMethod, TransferMethod

    if "rrnet" not in config.variants:
        raise RRNetError("--unseen needs the 'rrnet' variant")
    source = next((s for s in specs if s.name == transfer_from), None) if transfer_from else specs[0]
    if source is None:
        raise DataError(f"--transfer_from {transfer_from!r} is not a relation of the benchmark {[s.name for s in specs]}")
    targets = [s for s in find_relations(unseen) if s.relation == source.relation]
    if not targets:
        raise DataError(f"{unseen}: no relation uses the word {source.relation!r} of {source.name!r}")
    methods = [BaseMethod(), TransferMethod(root / "rrnet" / source.name, config.alphas)]
    return evaluate(pipe_getter, model_id, targets, methods, judges, output_dir, config.evaluation, fid=fid,
                    benchmark=str(unseen), progress=progress, processes=processes)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_experiment_parser(sub) -> None:
    """`rrnet experiment`; defaults are `ExperimentConfig`'s, its `TrainConfig`'s and `EvalSettings`'."""
    from rrnet import validation as check
    from rrnet.cli_flags import default_of
    from rrnet.eval.cli import add_judge_flags, add_sampling_flags

    p = sub.add_parser("experiment", help="train RRNet, ablations and baselines per relation, evaluate all, report")
    p.add_argument("--pretrained_model_name_or_path", "--model", dest="model", required=True)
    p.add_argument("--benchmark", required=True, help="folder of relation folders")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--variants", nargs="+", default=list(default_of(ExperimentConfig, "variants")),
                   choices=list(VARIANTS))
    p.add_argument("--epochs", type=check.positive_int, default=default_of(TrainConfig, "epochs"),
                   help="RRNet and ablation epochs")
    p.add_argument("--baseline_epochs", type=check.positive_int, default=default_of(ExperimentConfig, "baseline_epochs"),
                   help="baseline epochs (default: --epochs)")
    p.add_argument("--hidden_size", type=check.int_in(1, 65536), default=default_of(TrainConfig, "hidden"))
    p.add_argument("--alpha", type=check.finite_float, nargs="+", default=list(default_of(ExperimentConfig, "alphas")),
                   help="RRNet weights to evaluate")
    p.add_argument("--ablation_alpha", type=check.finite_float, default=default_of(ExperimentConfig, "ablation_alpha"),
                   help="the weight at which ablations are compared")
    p.add_argument("--unseen", default=None, help="benchmark folder of unseen object pairs (Sec. 4.4)")
    p.add_argument("--transfer_from", default=None, help="trained relation whose rectifier is transferred (default: the first)")
    add_judge_flags(p)
    add_sampling_flags(p)
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--device", default=None)
    p.add_argument("--no_progress", action="store_true")


def experiment_config_from_args(args) -> ExperimentConfig:
    """The `ExperimentConfig` the flags describe (sampling defaults the model leaves open filled in)."""
    from rrnet.eval.cli import settings_from_args

    return ExperimentConfig(
        train=TrainConfig(epochs=args.epochs, seed=args.seed, hidden=args.hidden_size, resolution=args.resolution),
        baseline_epochs=args.baseline_epochs, variants=tuple(args.variants), alphas=tuple(args.alpha),
        ablation_alpha=args.ablation_alpha, evaluation=settings_from_args(args),
    )


def run_experiment_cli(args) -> None:
    from rrnet import validation as check
    from rrnet.backbones.loading import default_device
    from rrnet.eval.cli import fid_options, judges_from_args, launch_processes, pipe_loader

    check.check_run(args)
    processes = launch_processes(args)
    config = experiment_config_from_args(args)
    fid = fid_options(args, args.device or default_device())
    run_experiment(pipe_loader(args), args.model, args.benchmark, args.output_dir, judges_from_args(args), config,
                   unseen=args.unseen, transfer_from=args.transfer_from, fid=fid, progress=not args.no_progress,
                   processes=processes)
    if not processes.is_main:
        return
    print((Path(args.output_dir) / "report.md").read_text(encoding="utf-8"))
