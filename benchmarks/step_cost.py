"""What one pair step costs on the full SD 2.1-base shape, without a GPU: FLOPs and memory.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on the `meta` device (shapes only,
instant) for the reference loop and the fast path; dividing by a GPU's peak gives the fastest
those 500 pair steps could be. Memory (`--memory`) runs one real pair step per variant on the
CPU, each in its own process, and reports the frozen models' weight bytes and the rise of the
process's resident memory during the step (activations kept for the backward, plus transients):
their sum approximates `torch.cuda.max_memory_allocated` for the same step on a GPU (the CPU's
attention and convolution kernels keep about the same tensors; CUDA adds its own workspaces).

    python -m benchmarks.step_cost [--shape sd21-base] [--peak_tflops 989] [--memory]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import benchmark_pipeline, benchmark_relation, fast_stepper, reference_stepper
from rrnet.backbones.clip_vocab import clip_tokenizer
from rrnet.backbones.loading import DTYPES
from rrnet.backbones.shapes import SHAPES, build_pipeline_from_shape
from rrnet.train import TrainConfig

# variant -> (dtype of the frozen models, gradient checkpointing)
MEMORY_VARIANTS = {"fast-bf16": ("bf16", False), "fast-bf16-ckpt": ("bf16", True), "fast-fp32": ("no", False)}


def meta_pipeline(shape: str, precision: str):
    """The shape's pipeline with no storage at all: built and moved on the meta device."""
    with torch.device("meta"):
        pipe = build_pipeline_from_shape(SHAPES[shape], clip_tokenizer())
    return pipe.to("meta", DTYPES[precision])


def step_tflop(shape: str, method: str) -> float:
    """FLOPs (forward and backward, every op PyTorch counts) of one pair step, in TFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = benchmark_relation(SHAPES[shape].resolution, n_images=1)
    if method == "reference":
        step = reference_stepper(meta_pipeline(shape, "no"), spec, TrainConfig(seed=0))
    else:
        step = fast_stepper(meta_pipeline(shape, "bf16"), spec, TrainConfig(seed=0))
    step(0)  # the reference encodes its sentences here, once per five pair steps
    with FlopCounterMode(display=False) as counter:
        step(1)
    return counter.get_total_flops() / 1e12


def weight_gib(pipe) -> float:
    return sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.text_encoder, pipe.vae) for p in m.parameters()) / 2**30


def memory_worker(shape: str, variant: str, threads: int) -> dict:
    """Weights and the resident-memory rise during one real pair step, on the CPU."""
    import psutil

    torch.set_num_threads(threads)
    precision, checkpointing = MEMORY_VARIANTS[variant]
    pipe = benchmark_pipeline(shape, "cpu", DTYPES[precision])
    config = TrainConfig(seed=0, gradient_checkpointing=checkpointing)
    step = fast_stepper(pipe, benchmark_relation(SHAPES[shape].resolution, n_images=1), config)
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def watch() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    try:
        step(0)
    finally:
        done.set()
        watcher.join()
    rise = (peak[0] - before) / 2**30
    return {"variant": variant, "weights_gib": weight_gib(pipe), "step_rise_gib": rise,
            "approx_device_peak_gib": weight_gib(pipe) + rise, "cpu_step_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="sd21-base", choices=list(SHAPES))
    ap.add_argument("--peak_tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--memory", action="store_true", help="also run one real step per variant on the CPU (minutes)")
    ap.add_argument("--variants", nargs="+", default=["fast-bf16", "fast-bf16-ckpt"], choices=list(MEMORY_VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(memory_worker(args.shape, args.worker, args.threads)))
        return
    print(f"{args.shape} at {SHAPES[args.shape].resolution} px, torch {torch.__version__}")
    print("| method | TFLOP / pair step (forward + backward) |\n|---|---|")
    flops = {method: step_tflop(args.shape, method) for method in ("reference", "fast")}
    for method, tflop in flops.items():
        print(f"| {method} | {tflop:.2f} |")
    ideal = args.steps * flops["fast"] / args.peak_tflops
    print(f"fast path, {args.steps} pair steps at {args.peak_tflops:g} TFLOP/s (bf16 peak): {ideal:.1f} s at 100 % "
          f"of peak, {ideal / 0.4:.1f} s at 40 %")
    if not args.memory:
        return
    print("| variant | weights GiB | rise during one step GiB | approx. device peak GiB | CPU s / step |\n|---|---|---|---|---|")
    root = Path(__file__).resolve().parents[1]
    for variant in args.variants:
        cmd = [sys.executable, "-m", "benchmarks.step_cost", "--shape", args.shape, "--worker", variant, "--threads", str(args.threads)]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root).stdout.strip().splitlines()[-1])
        print(f"| {variant} | {out['weights_gib']:.2f} | {out['step_rise_gib']:.2f} | {out['approx_device_peak_gib']:.2f} | {out['cpu_step_s']:.1f} |")


if __name__ == "__main__":
    main()
