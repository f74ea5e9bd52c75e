"""Seconds per pair step and peak GPU memory: reference loop vs fast path, full SD 2.1-base shape.

Builds the SD 2.1-base architecture from its known configuration with random weights (timing and
memory do not depend on weight values) at 512 px, and measures, in one run, the official-style
reference loop (fp32, VAE encode every step, two UNet calls) and rrnet's fast path in several
variants (cached latents and text, one UNet call; frozen models in fp32 or bf16; with gradient
checkpointing; with torch.compile). Every variant shares one pipeline per dtype. Each row also
projects a whole training run for every named recipe (set-up plus the recipe's pair steps; a
recipe whose pair step does more work, e.g. several timesteps, is timed with its own config).

    python -m benchmarks.gpu_train                       # on a CUDA GPU
    python -m benchmarks.gpu_train --device cpu --tiny   # the same code path, small, on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import benchmark_pipeline, benchmark_relation, fast_stepper, reference_stepper
from rrnet.atomic import atomic_write_text
from rrnet.backbones.loading import DTYPES
from rrnet.backbones.shapes import SHAPES
from rrnet.recipes import RECIPES, recipe_config
from rrnet.train import PAIR_STEPS, TrainConfig

# variant -> (dtype of the frozen models, gradient checkpointing, torch.compile)
VARIANTS = {
    "fast-fp32": ("no", False, False),
    "fast-bf16": ("bf16", False, False),
    "fast-bf16-ckpt": ("bf16", True, False),
    "fast-bf16-compile": ("bf16", False, True),
    "fast-fp16": ("fp16", False, False),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def timed_steps(step, steps: int, warmup: int, device: str) -> tuple[list[float], float]:
    """Wall time of each of `steps` calls of `step(i)`, and the total of the `warmup` calls before them."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        step(i)
        sync(device)
        times.append(time.perf_counter() - start)
    return times[warmup:], sum(times[:warmup])


def run_reference(pipe, spec, config: TrainConfig, steps: int, device: str) -> tuple[list[float], float]:
    """Per-step times of the official-style loop (its per-epoch sentence encoding included), and
    the seconds spent before them (set-up and one warm-up step)."""
    start = time.perf_counter()
    step = reference_stepper(pipe, spec, config)
    setup = time.perf_counter() - start
    times, warm = timed_steps(step, steps, 1, device)
    return times, setup + warm


def run_fast(pipe, spec, config: TrainConfig, steps: int, device: str) -> tuple[list[float], float]:
    """Per-step times of `rrnet.train`'s pair step, and the seconds before them: set-up (latent and
    text caching) and warm-up steps (where torch.compile compiles)."""
    sync(device)
    start = time.perf_counter()
    step = fast_stepper(pipe, spec, config)
    sync(device)
    setup = time.perf_counter() - start
    warmup = 3 if config.compile_unet else 2  # compilation and autotuning happen here
    times, warm = timed_steps(step, steps, warmup, device)
    return times, setup + warm


def recipe_steps(name: str) -> int:
    """Pair steps of a one-relation run under recipe `name` (five per epoch)."""
    return recipe_config(name).epochs * len(PAIR_STEPS)


def row(method: str, times: list[float], setup: float, device: str, recipes: list[str]) -> dict:
    """Timing of one method; `recipes` are those whose whole run it projects (same work per pair step)."""
    sec = statistics.median(times)
    return {"method": method, "s_per_pair_step": sec, "s_per_pair_step_min": min(times), "setup_and_warmup_s": setup,
            "projected_s": {name: setup + recipe_steps(name) * sec for name in recipes}, "peak_gib": peak_gib(device)}


def markdown(rows: list[dict]) -> str:
    recipes = list(dict.fromkeys(name for r in rows for name in r["projected_s"]))
    lines = ["| method | s / pair step (median) | set-up + warm-up s | "
             + " | ".join(f"projected {name} run s ({recipe_steps(name)} steps)" for name in recipes)
             + " | vs reference | peak GPU memory GiB |",
             "|---|---|---|" + "---|" * len(recipes) + "---|---|"]
    ref = next((r["s_per_pair_step"] for r in rows if r["method"] == "reference"), None)
    for r in rows:
        mem = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        ratio = f"{ref / r['s_per_pair_step']:.1f}x" if ref else "-"
        projected = " | ".join(f"{r['projected_s'][n]:.1f}" if n in r["projected_s"] else "" for n in recipes)
        lines.append(f"| {r['method']} | {r['s_per_pair_step']:.4f} | {r['setup_and_warmup_s']:.1f} | "
                     f"{projected} | {ratio} | {mem} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny shape instead of SD 2.1-base")
    ap.add_argument("--steps", type=int, default=20, help="timed pair steps per method")
    ap.add_argument("--variants", nargs="+", default=["fast-fp32", "fast-bf16", "fast-bf16-ckpt", "fast-bf16-compile"],
                    choices=list(VARIANTS))
    ap.add_argument("--recipes", nargs="+", default=["official", "fast"], choices=list(RECIPES),
                    help="recipes whose whole training run each row projects")
    ap.add_argument("--skip_reference", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; use --device cpu --tiny to run the same code on a CPU")
    shape_name = "tiny" if args.tiny else "sd21-base"
    spec = benchmark_relation(SHAPES[shape_name].resolution)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{shape_name} at {SHAPES[shape_name].resolution} px on {name}, torch {torch.__version__}", flush=True)
    rows = []
    pipes: dict[str, object] = {}

    def pipeline(precision: str):
        if precision not in pipes:
            pipes.clear()  # one pipeline on the device at a time
            reset_peak(args.device)
            pipes[precision] = benchmark_pipeline(shape_name, args.device, DTYPES[precision])
        return pipes[precision]

    if not args.skip_reference:
        pipe = pipeline("no")
        reset_peak(args.device)
        rows.append(row("reference", *run_reference(pipe, spec, TrainConfig(seed=0), args.steps, args.device), args.device,
                        ["official"]))
        print(json.dumps(rows[-1]), flush=True)
    # recipes grouped by the work of one pair step (timesteps drawn per step); one timed row per group
    groups: dict[int, list[str]] = {}
    for name in args.recipes:
        groups.setdefault(recipe_config(name).timesteps_per_step, []).append(name)
    for variant in args.variants:
        precision, checkpointing, compiled = VARIANTS[variant]
        pipe = pipeline(precision)
        if compiled:  # compiling is in place: later variants would inherit it, so build a fresh pipeline
            pipes.clear()
            pipe = pipeline(precision)
        for per_step, names in sorted(groups.items()):
            reset_peak(args.device)
            config = TrainConfig(seed=0, gradient_checkpointing=checkpointing, compile_unet=compiled,
                                 timesteps_per_step=per_step)
            label = variant if per_step == 1 else f"{variant}, {per_step} timesteps per step"
            rows.append(row(label, *run_fast(pipe, spec, config, args.steps, args.device), args.device, names))
            print(json.dumps(rows[-1]), flush=True)
        if compiled:
            pipes.clear()
    print(markdown(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps({"device": name, "shape": shape_name, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
