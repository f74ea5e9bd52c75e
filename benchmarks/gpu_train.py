"""Seconds per pair step and peak GPU memory: reference loop vs fast path, full SD 2.1-base shape.

Builds the SD 2.1-base architecture from its known configuration with random weights (timing and
memory do not depend on weight values) at 512 px, and measures the official-style reference loop
(fp32, VAE encode every step, two UNet calls) and rrnet's fast path (cached latents and text, one
UNet call, frozen models in bf16, optional gradient checkpointing / torch.compile).

    python -m benchmarks.gpu_train                       # on a CUDA GPU
    python -m benchmarks.gpu_train --device cpu --tiny   # the same code path, small, on a CPU
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import benchmark_pipeline, benchmark_relation
from benchmarks.reference_loop import ReferenceTrainer
from rrnet.backbones.shapes import SHAPES
from rrnet.train import PAIR_STEPS, TrainConfig, new_rectifier, pair_step_loss, setup_training

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def run_reference(pipe, spec, config, steps: int, device: str) -> float:
    rect = new_rectifier(pipe, config)
    trainer = ReferenceTrainer(pipe, rect, spec, config)
    encoded, graphs, chosen = trainer.sample_epoch()
    times = []
    for i in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        if i % 5 == 0:
            encoded, graphs, chosen = trainer.sample_epoch()
        result = trainer.pair_loss(PAIR_STEPS[i % 5], encoded, graphs, chosen)
        trainer.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        trainer.optimizer.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def run_fast(pipe, spec, config, steps: int, device: str) -> float:
    rect, prepared, sched, opt, gen = setup_training(pipe, spec, config)
    chosen = {k: 0 for k in prepared.sides}
    times = []
    for i in range(steps + 2):  # two warm-up steps (compile, autotuning)
        sync(device)
        start = time.perf_counter()
        result = pair_step_loss(pipe, rect, prepared, PAIR_STEPS[i % 5], chosen, config, sched, gen)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    rest = sorted(times[2:])
    return rest[len(rest) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny shape instead of SD 2.1-base")
    ap.add_argument("--steps", type=int, default=10, help="timed pair steps per method")
    ap.add_argument("--mixed_precision", choices=list(DTYPES), default="bf16")
    ap.add_argument("--gradient_checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--skip_reference", action="store_true")
    args = ap.parse_args()
    shape_name = "tiny" if args.tiny else "sd21-base"
    spec = benchmark_relation(SHAPES[shape_name].resolution)
    rows = []
    if not args.skip_reference:
        pipe = benchmark_pipeline(shape_name, args.device)
        reset_peak(args.device)
        sec = run_reference(pipe, spec, TrainConfig(seed=0), args.steps, args.device)
        rows.append({"method": "reference (fp32, official per-step work)", "s_per_pair_step": sec, "peak_gib": peak_gib(args.device)})
        del pipe
    pipe = benchmark_pipeline(shape_name, args.device, DTYPES[args.mixed_precision])
    reset_peak(args.device)
    config = TrainConfig(seed=0, gradient_checkpointing=args.gradient_checkpointing, compile_unet=args.compile)
    sec = run_fast(pipe, spec, config, args.steps, args.device)
    rows.append({"method": f"fast ({args.mixed_precision}, checkpointing={args.gradient_checkpointing}, compile={args.compile})",
                 "s_per_pair_step": sec, "peak_gib": peak_gib(args.device)})
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{shape_name} at {SHAPES[shape_name].resolution} px on {name}")
    print("| method | s / pair step | projected 500 pair steps (s) | peak GPU memory GiB |\n|---|---|---|---|")
    for r in rows:
        mem = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {r['method']} | {r['s_per_pair_step']:.3f} | {500 * r['s_per_pair_step']:.0f} | {mem} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
