"""Device hygiene without a GPU: on the meta device any host tensor that meets a model tensor raises.

A CUDA run fails the same way when a tensor is left on the CPU, so these catch the bugs a GPU
would, on any machine. Meta tensors hold no values: nothing here checks numbers.
"""

import pytest
import torch

from benchmarks import gpu_train
from benchmarks.common import benchmark_pipeline, benchmark_relation
from rrnet.rectifier import RectifierConfig, RelationRectifier
from rrnet.train import TrainConfig


@pytest.mark.parametrize("config", [
    {},
    {"cache_latents": False, "cache_text": False, "batch_unet": False},
    {"gradient_checkpointing": True, "negative": False},
    {"adjuster": "free", "edit_positions": "after_eot"},
], ids=["fast", "uncached", "checkpointing", "ablations"])
def test_pair_steps_never_mix_devices(config):
    spec = benchmark_relation(32, n_images=2)
    pipe = benchmark_pipeline("tiny", "meta", torch.bfloat16)
    times, _ = gpu_train.run_fast(pipe, spec, TrainConfig(seed=0, **config), 2, "meta")
    assert len(times) == 2


def test_reference_steps_never_mix_devices():
    pipe = benchmark_pipeline("tiny", "meta")
    times, _ = gpu_train.run_reference(pipe, benchmark_relation(32, n_images=2), TrainConfig(seed=0), 6, "meta")
    assert len(times) == 6


def test_rectified_prompt_embeds_never_mix_devices():
    pipe = benchmark_pipeline("tiny", "meta", torch.bfloat16)
    config = RectifierConfig(text_width=32, hidden=16,
                             triplets=[{"object_a": "red block", "relation": "above", "object_b": "blue block"}])
    rect = RelationRectifier(config).to("meta")
    embeds = rect.prompt_embeds(pipe, ["a red block above a blue block", "a blue block above a red block"])
    assert embeds.device.type == "meta" and embeds.dtype == torch.bfloat16 and embeds.shape == (2, 77, 32)
