"""`rrnet demo`: the whole train -> generate loop on a built-in example, on a CPU, in minutes.

The backbone here is the tiny random Stable-Diffusion-shaped model: it exercises every part of
rrnet end to end (data, tokens, graph, HGCN, training, generation, grid), but its images are
noise, so the demo shows the workflow, not a relation being fixed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rrnet.backbones.loading import load_pipeline
from rrnet.backbones.tiny import build_tiny_backbone
from rrnet.data import load_relation
from rrnet.generate import GenerationSettings, generate
from rrnet.train import TrainConfig, train_rectifier

DEMO_TRIPLET = ("red circle", "above", "blue square")


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="train and generate on the built-in example (CPU, minutes)")
    p.add_argument("--output_dir", default="outputs/demo")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")


def run_demo(args: argparse.Namespace) -> None:
    from rrnet.world.exemplars import write_relation_folder

    out = Path(args.output_dir)
    print("rrnet demo: tiny RANDOM backbone (untrained weights) -- this shows the workflow; its images are noise")
    model_dir = out / "backbone"
    if not (model_dir / "model_index.json").is_file():
        build_tiny_backbone(model_dir, seed=args.seed)
    data_dir = write_relation_folder(out / "data", *DEMO_TRIPLET, n_images=4, size=32, seed=args.seed)
    spec = load_relation(data_dir)
    pipe = load_pipeline(str(model_dir), device="cpu", progress=not args.no_progress)
    config = TrainConfig(epochs=2 if args.quick else 30, hidden=64, heads=2, seed=args.seed)
    _, history = train_rectifier(pipe, spec, config, out / "rectifier", model_id=str(model_dir), progress=not args.no_progress)
    settings = GenerationSettings(alphas=(0.0, 0.4, 0.8), num_images=2, steps=3 if args.quick else 20, seed=args.seed)
    result = generate(pipe, [spec.prompt, spec.swapped_prompt], out / "samples", load_rectifier(out / "rectifier"), settings,
                      progress=not args.no_progress, metadata={"model": str(model_dir)})
    last = history[-1]
    print(f"relation: {spec.prompt!r} vs {spec.swapped_prompt!r}")
    print(f"EOT cosine of the two prompts: {last['eot_cosine_base']:.4f} (base) -> {last['eot_cosine']:.4f} (rectified, alpha=1)")
    print(f"rectifier: {out / 'rectifier'}  grid: {result.grid}")


def load_rectifier(path: Path):
    from rrnet.rectifier import RelationRectifier

    return RelationRectifier.from_pretrained(path)
