"""The `rrnet` command: parses flags (diffusers style) and calls the library. User errors exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rrnet import validation as check
from rrnet.errors import RRNetError
from rrnet.cli_flags import OneLineParser, check_positive as _check_positive, checkpoint_flags as _checkpoint_flags, checkpointing_of as _checkpointing, default_of as _default_of, model_flags as _model_flags
from rrnet.interruption import TrainingInterrupted

if TYPE_CHECKING:
    from rrnet.train import TrainConfig


def _train_parser(sub) -> None:
    from rrnet.recipes import DEFAULT_RECIPE, RECIPES
    from rrnet.train import LR_SCHEDULES, TrainConfig

    def default(name: str):
        return _default_of(TrainConfig, name)

    p = sub.add_parser("train", help="train one rectifier on one relation or many")
    _model_flags(p, TrainConfig)
    _checkpoint_flags(p)
    p.add_argument("--data", required=True, nargs="+",
                   help="relation folders (official index.json layout) or manifests (.json/.toml), or benchmark "
                        "folders of relation folders: one rectifier learns them all")
    p.add_argument("--relations_per_step", type=check.int_in(1, 4096), default=default("relations_per_step"),
                   help="with several relations: how many share one optimiser step (one UNet batch; lower it if memory runs out)")
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help=f"training preset (rrnet.recipes; default {DEFAULT_RECIPE}, `official` is the paper's); "
                        "flags given explicitly override its values")
    p.add_argument("--epochs", type=check.positive_int, default=None, help=_recipe_help("epochs"))
    p.add_argument("--learning_rate", type=check.positive_float, default=None, help=_recipe_help("learning_rate"))
    p.add_argument("--weight_decay", type=check.non_negative_float, default=default("weight_decay"))
    p.add_argument("--positive_weight", type=check.non_negative_float, default=default("positive_weight"))
    p.add_argument("--negative_weight", type=check.non_negative_float, default=default("negative_weight"))
    p.add_argument("--no_negative", action="store_true", help="drop the negative (swapped-image) loss")
    p.add_argument("--no_disentangle", action="store_true", help="drop object-node disentanglement (only the ARB/BRA step)")
    p.add_argument("--disentangle_noise", type=check.non_negative_float, default=default("disentangle_noise"), help="std of the noise on the object-sentence delta")
    adjuster = p.add_mutually_exclusive_group()
    adjuster.add_argument("--no_hgcn", action="store_true",
                          help="ablation: a learned free vector per prompt instead of the graph network")
    adjuster.add_argument("--role", action="store_true",
                          help="the prompt's adjustment is f(A, R) - f(B, R), one learned vector per object in "
                               "its role (an MLP of the word and relation features) instead of the graph network: "
                               "antisymmetric, and an object pair never trained on gets what its objects learned "
                               "with other partners")
    adjuster.add_argument("--triplet_mlp", action="store_true",
                          help="the prompt's adjustment is f(A, R, B), an MLP of the whole triplet's word features "
                               "instead of the graph network: no structure imposed, so each trained relation can "
                               "get its own edit")
    p.add_argument("--antisymmetric", action="store_true",
                   help="the prompt's adjustment is g(A R B) - g(B R A): swapping the objects negates it "
                        "(for one rectifier over many object pairs)")
    p.add_argument("--direction_pairs", default=None, metavar="FILE",
                   help="'prompt | swapped prompt' lines the text encoder already tells apart: their EOT difference "
                        "teaches the direction edit without images (see rrnet.direction_targets)")
    p.add_argument("--direction_weight", type=check.non_negative_float, default=default("direction_weight"))
    p.add_argument("--edit_after_eot", action="store_true",
                   help="ablation: add the adjustment at every position after the EOT (padding) as well")
    p.add_argument("--no_importance_sampling", action="store_true", help="uniform timesteps instead of p(t) ~ 1 - 0.5 cos(pi t/T)")
    recipe = p.add_argument_group("recipe options beyond the paper's (defaults: the --recipe's)")
    recipe.add_argument("--timesteps_per_step", type=check.int_in(1, 256), default=None,
                        help="noise draws and timesteps per side in one pair step, in one batched UNet call; "
                             + _recipe_help("timesteps_per_step"))
    recipe.add_argument("--lr_schedule", choices=list(LR_SCHEDULES), default=None,
                        help="learning rate over the run (diffusers' schedules), after --warmup_steps; "
                             + _recipe_help("lr_schedule"))
    recipe.add_argument("--warmup_steps", type=check.int_in(0, 10**9), default=None, help=_recipe_help("warmup_steps"))
    recipe.add_argument("--timestep_min", type=check.fraction, default=None,
                        help="draw training timesteps only from t >= this fraction of T, where layout is decided; "
                             + _recipe_help("timestep_min"))
    p.add_argument("--hidden_size", type=check.int_in(1, 65536), default=default("hidden"))
    p.add_argument("--heads", type=check.int_in(1, 64), default=default("heads"))
    p.add_argument("--num_layers", type=check.int_in(1, 64), default=default("num_layers"))
    speed = p.add_argument_group("speed and memory (results are the same either way)")
    speed.add_argument("--gradient_checkpointing", action="store_true", help="recompute UNet activations in backward")
    speed.add_argument("--compile_unet", action="store_true", help="torch.compile the frozen UNet")
    speed.add_argument("--no_cache_latents", action="store_true", help="VAE-encode exemplars at every step")
    speed.add_argument("--no_cache_text", action="store_true", help="re-run the text encoder at every step")
    speed.add_argument("--no_batch_unet", action="store_true", help="separate UNet calls for the two loss terms")


def _generate_parser(sub) -> None:
    from rrnet.generate import GenerationSettings

    p = sub.add_parser("generate", help="generate images with (or without) a rectifier")
    _model_flags(p, GenerationSettings)
    p.add_argument("--rectifier", default=None, help="rectifier folder from `rrnet train` (omit for the base model)")
    p.add_argument("--prompt", nargs="+", default=None, help="one prompt or a pair (default: the rectifier's pair)")
    p.add_argument("--triplet", nargs=3, metavar=("A", "R", "B"), default=None,
                   help="the words to rectify (default: read from each prompt by the rectifier's relation phrases)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a prompt with no relation the rectifier knows (default: keep its base embedding)")
    p.add_argument("--collapse_gate", type=check.finite_float, default=_default_of(GenerationSettings, "collapse_gate"),
                   help="edit only relations whose two object orders the text encoder gives EOT states at least "
                        "this similar (e.g. 0.99; default: edit every relation found)")
    p.add_argument("--alpha", type=check.finite_float, nargs="+", default=list(_default_of(GenerationSettings, "alphas")))
    p.add_argument("--num_images", type=check.int_in(1, 100_000), default=_default_of(GenerationSettings, "num_images"))
    p.add_argument("--steps", type=check.int_in(1, 10_000), default=None, help="sampling steps (default: the model's record for the mini world, else 30)")
    p.add_argument("--guidance_scale", type=check.non_negative_float, default=None, help="classifier-free guidance (default: the model's record for the mini world, else 7.5)")


def _teach_parser(sub) -> None:
    from rrnet.self_teach import OBJECT_TEMPLATE, PROMPT_TEMPLATE

    p = sub.add_parser("teach", help="write relation folders drawn and labelled by the model itself (no images "
                                     "needed), for `rrnet train --data`")
    _model_flags(p)
    p.add_argument("--triplet", nargs=3, action="append", metavar=("A", "R", "B"), default=None,
                   help="objects and a positional relation (above, below, on, under, left of, right of, ...); repeatable")
    p.add_argument("--prompt", nargs="+", default=None,
                   help="prompts to read the relations from instead (\"there is a panda below desk\")")
    p.add_argument("--collapse_gate", type=check.finite_float, default=None,
                   help="teach only relations whose two object orders the text encoder gives EOT states at least "
                        "this similar (e.g. 0.99): those it cannot draw the right way round by itself")
    p.add_argument("--num_images", type=check.int_in(1, 10_000), default=5, help="images of each layout and object")
    p.add_argument("--max_samples", type=check.int_in(2, 100_000), default=96,
                   help="stop drawing after this many samples of the prompt and its swap")
    p.add_argument("--margin", type=check.fraction, default=0.15,
                   help="the two objects' centroids must lie at least this share of the image apart along the axis")
    p.add_argument("--prompt_template", default=PROMPT_TEMPLATE, help="with {a}, {relation}, {b}")
    p.add_argument("--object_template", default=OBJECT_TEMPLATE, help="with {obj}: the single-object caption")
    p.add_argument("--steps", type=check.int_in(1, 10_000), default=None,
                   help="sampling steps (default: the model's record for the mini world, else 30)")
    p.add_argument("--guidance_scale", type=check.non_negative_float, default=None,
                   help="classifier-free guidance (default: the model's record for the mini world, else 7.5)")


def _taught_relations(args) -> list[tuple[str, str, str]]:
    """The relations `rrnet teach` is asked for, each once, checked before any model loads."""
    from rrnet.self_teach import positional_triplets, relation_layout

    if not args.triplet and not args.prompt:
        raise RRNetError("give --triplet A R B or --prompt with a positional relation")
    relations = [tuple(t) for t in args.triplet or []]
    for prompt in args.prompt or []:
        found = positional_triplets(prompt)
        if not found:
            raise RRNetError(f"prompt {prompt!r} states no positional relation with objects on both sides")
        relations += found
    for triplet in relations:
        check.check_triplet(triplet)
        relation_layout(triplet[1])
    return list(dict.fromkeys(relations))


def run_teach(args) -> None:
    import torch

    from rrnet.backbones.loading import load_pipeline
    from rrnet.generate import fill_sampling_defaults
    from rrnet.locking import folder_lock
    from rrnet.rectifier import swap_cosine
    from rrnet.self_teach import check_teach_settings, relation_folder_name, self_taught_folder

    check.check_run(args)
    relations = _taught_relations(args)
    check_teach_settings(args.num_images, args.max_samples, args.prompt_template, args.object_template, prefix="--")
    fill_sampling_defaults(args)
    with folder_lock(args.output_dir):
        pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
        pipe.set_progress_bar_config(disable=True)
        taught = 0
        for a, relation, b in relations:
            if args.collapse_gate is not None:
                with torch.no_grad():
                    cosine = swap_cosine(pipe, a, relation, b)
                if cosine < args.collapse_gate:
                    print(f"skipped {a} / {relation} / {b}: the text encoder orders it (EOT cosine {cosine:.3f})")
                    continue
            folder = self_taught_folder(pipe, a, relation, b, Path(args.output_dir) / relation_folder_name(a, relation, b),
                                        n_images=args.num_images, max_samples=args.max_samples, seed=args.seed,
                                        steps=args.steps, guidance_scale=args.guidance_scale, margin=args.margin,
                                        prompt_template=args.prompt_template, object_template=args.object_template)
            print(f"taught {folder}")
            taught += 1
    if taught:
        print(f"{taught} self-taught relation folder(s) in {args.output_dir} (train: rrnet train --data {args.output_dir})")


def _tiny_parser(sub) -> None:
    p = sub.add_parser("tiny-backbone", help="write a tiny random SD-shaped model folder (tests, examples)")
    p.add_argument("output_dir")
    p.add_argument("--seed", type=check.seed, default=0)
    p.add_argument("--sd_version", type=int, choices=[1, 2], default=2)
    p.add_argument("--prediction_type", choices=["epsilon", "v_prediction"], default="epsilon")
    p.add_argument("--sdxl", action="store_true", help="a tiny StableDiffusionXLPipeline instead (two text encoders)")


def _world_parser(sub) -> None:
    p = sub.add_parser("world", help="the mini world: build its backbone, write exemplars and benchmarks")
    world = p.add_subparsers(dest="world_command", required=True)
    b = world.add_parser("build", help="train the mini-world backbone from scratch (resumable)")
    b.add_argument("--output_dir", default=None, help="diffusers folder to write (required: the shipped model is never a default)")
    b.add_argument("--build_dir", default=None, help="where stage outputs and checkpoints go (default: OUTPUT.build)")
    b.add_argument("--threads", type=check.int_in(1, 1024), default=None, help="torch CPU threads")
    b.add_argument("--unet_steps", type=check.int_in(1, 10**9), default=None, help="override the recipe's denoiser steps")
    b.add_argument("--tune_steps", type=check.int_in(0, 10**9), default=None,
                   help="override the recipe's tuning steps (the denoiser's second phase, on more collapsed-pair scenes)")
    b.add_argument("--sampler", choices=["ddim", "ddpm"], default=None,
                   help="override the recipe's sampler: the scheduler the model folder carries (ddpm: ancestral steps)")
    b.add_argument("--from_model", default=None,
                   help="a world model built from the same recipe: take its text encoder, autoencoder and denoiser "
                        "as finished and train only the tuning phase")
    b.add_argument("--no_progress", action="store_true")
    e = world.add_parser("exemplars", help="write the exemplar folder of any world relation (or two sharing an object)")
    e.add_argument("--relation", nargs=3, action="append", required=True, metavar=("A", "R", "B"),
                   help='e.g. --relation "green triangle" below "yellow diamond"; give it twice for a two-relation scene')
    e.add_argument("--output_dir", required=True, help="the relation folder to write")
    e.add_argument("--num_images", "--n_images", dest="num_images", type=check.int_in(1, 100_000), default=5, help="images per sub-folder")
    e.add_argument("--seed", type=check.seed, default=0)
    m = world.add_parser("benchmark", help="write mini-world relation folders for evaluate/experiment")
    m.add_argument("--output_dir", required=True)
    m.add_argument("--splits", nargs="+", default=["train"], metavar="SPLIT",
                   help="recipe pair splits to include: train, heldout, control, collapsed (= train + heldout)")
    m.add_argument("--pair", nargs=3, action="append", default=None, metavar=("A", "B", "AXIS"),
                   help="an explicit pair on an axis (x or y) instead of --splits; repeatable")
    m.add_argument("--relations", nargs="+", default=None, metavar="PHRASE",
                   help="relation phrases per pair, each pair taking those of its axis (default: all four)")
    m.add_argument("--scenes", nargs="?", const="also", default=None, choices=["also", "only"],
                   help="also (or, with 'only', instead) write two-relation scene folders built from the chosen pairs: "
                        "a vertical and a horizontal pair sharing one object, in each phrase combination of --relations")
    m.add_argument("--unseen_dir", default=None, help="also write the --unseen_splits pairs here")
    m.add_argument("--unseen_splits", nargs="+", default=["heldout", "control"], metavar="SPLIT")
    m.add_argument("--num_images", "--n_images", dest="num_images", type=check.int_in(1, 100_000), default=5, help="exemplar images per folder")
    m.add_argument("--seed", type=check.seed, default=0)
    m.add_argument("--model", default=None, help="mini-world model whose recipe names the splits (default: the shipped one)")
    m.add_argument("--reference_dir", default=None, help="also write rendered scenes here (the FID reference)")
    m.add_argument("--reference_images", type=check.int_in(1, 10**7), default=1000)


def _world_benchmark(args) -> None:
    from rrnet.world.benchmark import (pair_relations, scene_relations, split_pairs, write_reference_scenes,
                                       write_world_benchmark)
    from rrnet.world.recipe import AXES, WorldRecipe
    from rrnet.world.record import load_recipe, shipped_backbone

    _check_positive(args, "num_images")
    model = Path(args.model) if args.model else shipped_backbone()
    recipe = load_recipe(model) if (model / "world.json").is_file() or args.model else WorldRecipe()
    if args.pair:
        bad = [axis for *_, axis in args.pair if axis not in AXES]
        if bad:
            raise RRNetError(f"--pair takes A B AXIS with AXIS x or y, got {bad[0]!r}")
        pairs = [tuple(p) for p in args.pair]
    else:
        pairs = split_pairs(recipe, args.splits)
    relations = [] if args.scenes == "only" else pair_relations(pairs, args.relations)
    scenes = scene_relations(pairs, args.relations) if args.scenes else []
    if args.scenes and not scenes:
        raise RRNetError("no two-relation scene in the chosen pairs: --scenes needs a vertical and a horizontal pair "
                         "sharing one object, and --relations phrases on both axes")
    write_world_benchmark(args.output_dir, [*relations, *scenes], n_images=args.num_images, seed=args.seed)
    print(f"{len(relations)} relation folders" + (f" and {len(scenes)} scene folders" if args.scenes else "")
          + f" written to {args.output_dir}")
    if args.unseen_dir:
        unseen = pair_relations(split_pairs(recipe, args.unseen_splits), args.relations)
        write_world_benchmark(args.unseen_dir, unseen, n_images=args.num_images, seed=args.seed)
        print(f"{len(unseen)} unseen relation folders written to {args.unseen_dir}")
    if args.reference_dir:
        _check_positive(args, "reference_images")
        write_reference_scenes(args.reference_dir, args.reference_images, seed=args.seed)
        print(f"{args.reference_images} reference scenes written to {args.reference_dir}")


def run_world(args) -> None:
    import dataclasses

    import torch

    if args.world_command == "benchmark":
        return _world_benchmark(args)
    if args.world_command == "exemplars":
        from rrnet.world.exemplars import write_scene_folder

        _check_positive(args, "num_images")
        out = Path(args.output_dir)
        folder = write_scene_folder(out.parent, [tuple(r) for r in args.relation], n_images=args.num_images,
                                    seed=args.seed, name=out.name)
        print(f"exemplars written to {folder}")
        return
    from rrnet.world.build import build_world_backbone
    from rrnet.world.recipe import WorldRecipe
    from rrnet.world.record import shipped_backbone

    if args.output_dir is None:
        raise RRNetError(f"--output_dir is required: a rebuild never writes into the shipped model ({shipped_backbone()}) "
                         "unless that folder is named explicitly")
    _check_positive(args, "threads", "unet_steps")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = WorldRecipe()
    if args.unet_steps:
        recipe = dataclasses.replace(recipe, unet_steps=args.unet_steps)
    if args.tune_steps is not None:
        recipe = dataclasses.replace(recipe, tune_steps=args.tune_steps)
    if args.sampler is not None:
        recipe = dataclasses.replace(recipe, sampler=args.sampler)
    if args.from_model is not None and not Path(args.from_model).is_dir():
        raise RRNetError(f"--from_model {args.from_model}: no such model folder")
    out = build_world_backbone(args.output_dir, recipe, args.build_dir, progress=not args.no_progress,
                               from_model=args.from_model)
    print(f"mini-world backbone written to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rrnet", description="Relation Rectification for diffusers text-to-image models")
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("--verbose", action="store_true", help="also show rrnet's notes (e.g. a prompt passed through unrectified)")
    talk.add_argument("--quiet", action="store_true", help="show errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _generate_parser(sub)
    _teach_parser(sub)
    _tiny_parser(sub)
    from rrnet.demo import add_demo_parser

    add_demo_parser(sub)
    from rrnet.serve import add_serve_parser

    add_serve_parser(sub)
    _world_parser(sub)
    from rrnet.eval.cli import add_evaluate_parser
    from rrnet.experiment import add_experiment_parser

    from rrnet.analysis.cli import add_analyze_parser
    from rrnet.baselines.cli import add_baseline_parser

    add_evaluate_parser(sub)
    add_experiment_parser(sub)
    add_baseline_parser(sub)
    add_analyze_parser(sub)
    return parser


# flags whose default is the chosen recipe's value (None on the command line: "not given")
RECIPE_FLAGS = ("epochs", "learning_rate", "timesteps_per_step", "lr_schedule", "warmup_steps", "timestep_min")


def _recipe_help(name: str) -> str:
    from rrnet.recipes import RECIPES, recipe_config

    return "default: the recipe's (" + ", ".join(f"{r} {getattr(recipe_config(r), name)}" for r in RECIPES) + ")"


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` the `train` flags describe: the `--recipe` preset, then every recipe flag
    given explicitly on top (a `--no_X` flag turns off a default that is on)."""
    from rrnet.recipes import recipe_config
    from rrnet.train import TrainConfig

    preset = recipe_config(args.recipe)
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else getattr(preset, name)
              for name in RECIPE_FLAGS}
    return TrainConfig(
        recipe=args.recipe, **chosen, weight_decay=args.weight_decay,
        positive_weight=args.positive_weight, negative_weight=args.negative_weight,
        negative=not args.no_negative, disentangle=not args.no_disentangle,
        disentangle_noise=args.disentangle_noise, importance_sampling=not args.no_importance_sampling,
        resolution=args.resolution, hidden=args.hidden_size, heads=args.heads, num_layers=args.num_layers,
        seed=args.seed, cache_latents=not args.no_cache_latents, cache_text=not args.no_cache_text,
        batch_unet=not args.no_batch_unet, gradient_checkpointing=args.gradient_checkpointing,
        compile_unet=args.compile_unet, adjuster=("free" if args.no_hgcn else "role" if args.role
                                                    else "triplet" if args.triplet_mlp else "hgcn"),
        edit_positions="after_eot" if args.edit_after_eot else "eot", relations_per_step=args.relations_per_step,
        antisymmetric=args.antisymmetric, direction_weight=args.direction_weight,
    )


def run_train(args) -> None:
    from rrnet.backbones.loading import load_pipeline
    from rrnet.data import load_relations
    from rrnet.train import check_relation_set, train_rectifier

    from rrnet.locking import folder_lock
    from rrnet.resume import check_output_folder
    from rrnet.train import rectifier_finished

    check.check_run(args)
    specs = load_relations(args.data)
    triplets = [t for spec in specs  # a scene folder (several relations in one prompt) lists its relations
                for t in getattr(spec, "relations", None) or [(spec.object_a, spec.relation, spec.object_b)]]
    objects = sorted({word for a, _, b in triplets for word in (a, b)})
    check.check_prompts(args.model, specs, tuple(f"this is a photo of {word}" for word in objects))
    checkpointing = _checkpointing(args)
    config = train_config_from_args(args)
    direction_pairs = None
    if args.direction_pairs:
        from rrnet.direction_targets import pair_triplet, read_prompt_pairs
        from rrnet.prompt_parser import relation_phrases

        direction_pairs = read_prompt_pairs(args.direction_pairs)
        phrases = relation_phrases([((s.object_a, s.relation, s.object_b), [s.prompt, s.swapped_prompt]) for s in specs])
        for pair in direction_pairs:  # before the model loads
            pair_triplet(pair, phrases)
    check_relation_set(specs, config)
    with folder_lock(args.output_dir):  # held from the checks to the last file written
        check_output_folder(args.output_dir, rectifier_finished(args.output_dir), checkpointing, "rectifier")
        pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
        _, history = train_rectifier(pipe, specs, config, args.output_dir, model_id=args.model,
                                     progress=not args.no_progress, checkpointing=checkpointing,
                                     direction_pairs=direction_pairs)
    last = history[-1]
    name = specs[0].name if len(specs) == 1 else f"{len(specs)} relations"
    print(f"trained {name}: loss {last['loss']:.4f}, EOT cosine {last['eot_cosine_base']:.4f} -> {last['eot_cosine']:.4f}")
    print(f"rectifier saved to {args.output_dir}")


def run_generate(args) -> None:
    from rrnet.backbones.loading import load_pipeline
    from rrnet.generate import GenerationSettings, fill_sampling_defaults, generate
    from rrnet.locking import folder_lock
    from rrnet.rectifier_files import load_rectifier

    check.check_run(args)
    check.check_triplet(args.triplet)
    fill_sampling_defaults(args)
    rectifier = load_rectifier(args.rectifier) if args.rectifier else None
    if rectifier is not None:
        check.check_rectifier_fits(rectifier, args.model)
    prompts = args.prompt
    if prompts is None:
        if rectifier is None or not rectifier.config.prompts:
            raise RRNetError("--prompt is required without a --rectifier that records its prompt pair")
        prompts = list(rectifier.config.prompts[0])
    if len(prompts) > 2:
        raise RRNetError(f"--prompt takes one prompt or a pair, got {len(prompts)}")
    tokenizer = check.local_tokenizer(args.model)
    if tokenizer is not None:
        from rrnet.tokens import tokenize_prompt

        with check.quiet_transformers():
            for prompt in prompts:  # length, before the model loads
                tokenize_prompt(tokenizer, prompt)
    if args.seed + args.num_images > check.MAX_SEED:
        raise RRNetError(f"--seed {args.seed} + --num_images {args.num_images} is past the largest seed")
    if args.strict and rectifier is not None and not args.triplet:
        for prompt in prompts:  # before any model loads or image is written
            if rectifier.find_triplet(prompt) is None:
                known = ", ".join(sorted(rectifier.relation_phrases()))
                raise RRNetError(f"prompt {prompt!r} states no relation this rectifier knows ({known}) with objects on both sides")
    with folder_lock(args.output_dir):
        pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
        if rectifier is not None:
            rectifier.check_backbone(pipe)
            rectifier.to(pipe.device)
        settings = GenerationSettings(
            alphas=tuple(args.alpha), num_images=args.num_images, seed=args.seed, steps=args.steps,
            guidance_scale=args.guidance_scale, resolution=args.resolution, collapse_gate=args.collapse_gate,
        )
        meta = {"model": args.model, "rectifier": args.rectifier}
        result = generate(pipe, prompts, args.output_dir, rectifier, settings,
                          tuple(args.triplet) if args.triplet else None, progress=not args.no_progress, metadata=meta)
    print(f"images in {result.output_dir}, grid: {result.grid}")


def run_tiny(args) -> None:
    from rrnet.backbones.tiny import build_tiny_backbone

    print(build_tiny_backbone(args.output_dir, seed=args.seed, sd_version=args.sd_version, prediction_type=args.prediction_type,
                              sdxl=args.sdxl))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not the stream of the first call:
    `main` may run several times in one process (tests, notebooks) with stderr replaced in between."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler assigns it; the property ignores it
        pass


def configure_logging(level: int) -> None:
    """rrnet's library modules log through `logging.getLogger(__name__)`; the command shows them on stderr."""
    logger = logging.getLogger("rrnet")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("rrnet: %(message)s"))
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a flag mistake (one line, exit 2) or --help (exit 0)
        return stop.code if isinstance(stop.code, int) else 2
    handlers = {"train": run_train, "generate": run_generate, "teach": run_teach, "tiny-backbone": run_tiny, "world": run_world}
    configure_logging(logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING)
    if args.quiet and hasattr(args, "no_progress"):  # errors only: no progress bars either
        args.no_progress = True
    try:
        if args.command == "demo":
            from rrnet.demo import run_demo

            run_demo(args)
        elif args.command == "serve":
            from rrnet.serve import run_serve

            run_serve(args)
        elif args.command == "analyze":
            from rrnet.analysis.cli import run_analyze

            run_analyze(args)
        elif args.command == "baseline":
            from rrnet.baselines.cli import run_baseline

            run_baseline(args)
        elif args.command == "experiment":
            from rrnet.experiment import run_experiment_cli

            run_experiment_cli(args)
        elif args.command == "evaluate":
            from rrnet.eval.cli import run_evaluate

            run_evaluate(args)
        else:
            handlers[args.command](args)
    except RRNetError as exc:
        from rrnet.processes import launched_rank

        if launched_rank() == 0:  # launched on several processes, the main one speaks for all (rrnet.processes)
            print(f"rrnet: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"rrnet: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("rrnet: interrupted", file=sys.stderr)
        return 130
    finally:
        from rrnet.processes import close_process_group

        close_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
