"""Where the time of one pair step goes, and the fastest any equal-result training could be.

Times, on one backbone and machine, the parts of the official-style reference step (VAE encode of
two exemplars, the per-epoch sentence encoding and graph building spread over its five steps, two
UNet forward+backward calls of batch 2) and the fast path's single UNet forward+backward call of
batch 4, in fp32 and bf16. A pair step that learns the same thing must still run that UNet call,
so `reference step / UNet call` bounds the speed-up any fast path can reach at that precision.

    python -m benchmarks.step_breakdown [--backbones tiny mid] [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import benchmark_pipeline, benchmark_relation, fast_stepper, reference_stepper
from benchmarks.reference_loop import ReferenceTrainer
from rrnet.backbones.shapes import SHAPES
from rrnet.train import TrainConfig, new_rectifier


def median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median wall time of `fn` in milliseconds, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def counted(step: Callable[[int], None]) -> Callable[[], None]:
    """A stepper called as step(0), step(1), ...: consecutive pair steps, epochs included."""
    calls = iter(range(10**9))
    return lambda: step(next(calls))


def unet_call(unet, batch: int, calls: int, shape: tuple[int, ...], text: tuple[int, int]) -> Callable[[], None]:
    """`calls` UNet forwards of `batch` rows whose conditioning needs a gradient, then one backward."""
    dtype = unet.dtype

    def run() -> None:
        cond = torch.randn(batch, *text, requires_grad=True)
        t = torch.full((batch,), 500)
        loss = sum(unet(torch.randn(batch, *shape, dtype=dtype), t, encoder_hidden_states=cond.to(dtype)).sample.float().square().mean()
                   for _ in range(calls))
        loss.backward()

    return run


def breakdown(backbone: str, reps: int) -> list[tuple[str, float]]:
    pipe = benchmark_pipeline(backbone)
    spec = benchmark_relation(SHAPES[backbone].resolution)
    config = TrainConfig(seed=0)
    trainer = ReferenceTrainer(pipe, new_rectifier(pipe, config), spec, config)
    reference_step = counted(reference_stepper(pipe, spec, config))
    image = trainer.images["prompt"][:1]
    unet = pipe.unet
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    text = (pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
    rows = [
        ("reference: whole pair step", median_ms(reference_step, reps)),
        ("reference: VAE encode of 2 exemplars", median_ms(lambda: [pipe.vae.encode(image).latent_dist.sample() for _ in range(2)], reps)),
        ("reference: sentences + graphs (per epoch) / 5", median_ms(trainer.sample_epoch, reps) / 5),
        ("reference: 2 UNet calls of batch 2, fwd+bwd, fp32", median_ms(unet_call(unet, 2, 2, shape, text), reps)),
        ("fast: 1 UNet call of batch 4, fwd+bwd, fp32", median_ms(unet_call(unet, 4, 1, shape, text), reps)),
    ]
    rows.append(("fast: whole pair step, fp32", median_ms(counted(fast_stepper(pipe, spec, config)), reps)))
    bf16 = copy.deepcopy(unet).to(torch.bfloat16)
    rows.append(("fast: 1 UNet call of batch 4, fwd+bwd, bf16", median_ms(unet_call(bf16, 4, 1, shape, text), reps)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["tiny", "mid"], choices=list(SHAPES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.reps}")
    print("| backbone | part | ms | share of the reference step |\n|---|---|---|---|")
    for backbone in args.backbones:
        rows = dict(breakdown(backbone, args.reps))
        ref = rows["reference: whole pair step"]
        for part, ms in rows.items():
            print(f"| {backbone} | {part} | {ms:.1f} | {100 * ms / ref:.0f} % |")
        for precision in ("fp32", "bf16"):
            unet = rows[f"fast: 1 UNet call of batch 4, fwd+bwd, {precision}"]
            print(f"{backbone}: no {precision} pair step can beat its UNet call: speed-up bound {ref / unet:.2f}x")


if __name__ == "__main__":
    main()
