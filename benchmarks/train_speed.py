"""Training speed and peak memory: the official-style reference loop vs rrnet's fast path, on CPU.

Each (backbone, method) runs in its own process so peak RSS is its own. Both start from the same
seed and run the same pair steps, so their final rectifier weights must agree (printed as the
largest difference), i.e. the speed-up is at equal results.

    python -m benchmarks.train_speed [--backbones tiny mid] [--epochs 2] [--reps 3] [--threads 2]
        [--methods fast fast-bf16 fast-compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


def worker(args) -> None:
    from benchmarks.common import benchmark_pipeline, benchmark_relation, peak_rss_mib
    from benchmarks.reference_loop import ReferenceTrainer
    from rrnet.backbones.shapes import SHAPES
    from rrnet.train import TrainConfig, new_rectifier, train_rectifier

    torch.set_num_threads(args.threads)
    shape = SHAPES[args.backbone]
    pipe = benchmark_pipeline(args.backbone, dtype=torch.bfloat16 if args.method == "fast-bf16" else None)
    spec = benchmark_relation(shape.resolution)
    config = TrainConfig(epochs=args.epochs, seed=0, compile_unet=args.method == "fast-compile")
    times = []
    for _ in range(args.reps + 1):  # the first repetition warms up and is not counted
        start = time.perf_counter()
        if args.method == "reference":
            rect = new_rectifier(pipe, config)
            trainer = ReferenceTrainer(pipe, rect, spec, config)
            for _ in range(config.epochs):
                trainer.epoch()
        else:
            rect, _ = train_rectifier(pipe, spec, config, progress=False)
        times.append(time.perf_counter() - start)
    steps = 5 * config.epochs
    weights = torch.cat([p.detach().flatten() for p in rect.parameters()])
    print(json.dumps({"steps_per_s": [steps / t for t in times[1:]], "peak_rss_mib": peak_rss_mib(),
                      "weights": weights[:: max(1, len(weights) // 4096)].tolist()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["tiny", "mid"])
    ap.add_argument("--epochs", type=int, default=2, help="epochs (x5 pair steps) per timed repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["reference", "fast", "fast-bf16"],
                    choices=["reference", "fast", "fast-bf16", "fast-compile"], help="the reference always runs")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backbone", default="tiny", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="fast", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.epochs * 5} pair steps x {args.reps} repetitions")
    print("| backbone | method | steps/s min | steps/s median | peak RSS MiB |\n|---|---|---|---|---|")
    ratios = {}
    for backbone in args.backbones:
        runs = {}
        methods = ["reference", *[m for m in args.methods if m != "reference"]]
        for method in methods:
            cmd = [sys.executable, "-m", "benchmarks.train_speed", "--worker", "--backbone", backbone, "--method", method,
                   "--epochs", str(args.epochs), "--reps", str(args.reps), "--threads", str(args.threads)]
            root = Path(__file__).resolve().parents[1]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root).stdout.strip().splitlines()[-1]
            runs[method] = json.loads(out)
            sps = runs[method]["steps_per_s"]
            print(f"| {backbone} | {method} | {min(sps):.2f} | {statistics.median(sps):.2f} | {runs[method]['peak_rss_mib']:.0f} |")
        ref = statistics.median(runs["reference"]["steps_per_s"])
        for method in methods[1:]:
            diff = max(abs(a - b) for a, b in zip(runs["reference"]["weights"], runs[method]["weights"]))
            ratios[(backbone, method)] = (statistics.median(runs[method]["steps_per_s"]) / ref, diff)
    for (backbone, method), (_, diff) in ratios.items():
        print(f"{backbone} {method}: max |rectifier weight difference| from the reference after training {diff:.2e}")
    for (backbone, method), (ratio, _) in ratios.items():
        print(f"{backbone} {method}: steps per second / reference = {ratio:.2f}x")


if __name__ == "__main__":
    main()
