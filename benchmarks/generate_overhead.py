"""Cost of rectification at generation time, as a fraction of one full generation.

The rectifier adds: encoding the object sentence, building the graph, the HGCN forward and the
EOT edit. Measured as (time of rectified prompt_embeds) - (time of base prompt encoding), against
one full pipeline call (30 steps, guidance 7.5, one image).

    python -m benchmarks.generate_overhead [--backbones tiny mid] [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import benchmark_pipeline
from rrnet.backbones.shapes import SHAPES
from rrnet.rectifier import RectifierConfig, RelationRectifier, encode_prompt

PROMPT = "a red circle above a blue square"


def timed(fn, reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["tiny", "mid"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| backbone | base encode ms | rectified embeds ms | overhead ms | generation ms | overhead / generation |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones:
        pipe = benchmark_pipeline(name)
        width = SHAPES[name].text_width
        rect = RelationRectifier(RectifierConfig(text_width=width, triplets=[
            {"object_a": "red circle", "relation": "above", "object_b": "blue square"}])).eval()
        with torch.no_grad():
            base = statistics.median(timed(lambda: encode_prompt(pipe, PROMPT), args.reps))
            rectified = statistics.median(timed(lambda: rect.prompt_embeds(pipe, PROMPT, alpha=0.6), args.reps))
            embeds = rect.prompt_embeds(pipe, PROMPT, alpha=0.6)
            gen = statistics.median(timed(lambda: pipe(prompt_embeds=embeds, num_inference_steps=args.steps,
                                                        generator=torch.Generator().manual_seed(0)), max(1, args.reps // 2)))
        overhead = rectified - base
        print(f"| {name} | {base * 1e3:.1f} | {rectified * 1e3:.1f} | {overhead * 1e3:.1f} | {gen * 1e3:.0f} | {overhead / gen:.2%} |")


if __name__ == "__main__":
    main()
