"""Training through fp16 models keeps its gradients; library calls leave the caller's state alone."""

from __future__ import annotations

import warnings

import pytest
import torch

from rrnet.backbones.loading import load_pipeline
from rrnet.baselines import BaselineConfig, train_baseline
from rrnet.data import load_relation
from rrnet.train import TrainConfig, train_rectifier

# Loss weights this small make the rectifier's gradients underflow in an fp16 backward pass
# unless the loss is scaled first (measured: every gradient is zero without scaling).
TINY_LOSS = dict(hidden=16, heads=2, positive_weight=1e-5, negative_weight=2e-6, epochs=1)


def _fp16_pipe(model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_pipeline(str(model_dir), device="cpu", mixed_precision="fp16", progress=False)


def _params(rect) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in rect.parameters()])


def test_fp16_training_keeps_small_gradients_and_follows_fp32(tiny_model_dir, tiny_pipe, relation_dir):
    spec = load_relation(relation_dir)
    config = TrainConfig(**TINY_LOSS)
    start = _params(train_rectifier(tiny_pipe, spec, TrainConfig(**{**TINY_LOSS, "epochs": 0}), progress=False)[0])
    fp32 = _params(train_rectifier(tiny_pipe, spec, config, progress=False)[0])
    fp16_rect, history = train_rectifier(_fp16_pipe(tiny_model_dir), spec, config, progress=False)
    fp16 = _params(fp16_rect)
    assert torch.isfinite(fp16).all() and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    moved32, moved16 = (fp32 - start).norm(), (fp16 - start).norm()
    # AdamW moves every weight by about the learning rate per step when its gradient is non-zero;
    # with underflowing gradients only weight decay would move them (a factor 1e-5 smaller)
    assert moved16 > 0.5 * moved32
    assert (fp16 - fp32).norm() < 0.1 * moved32


def test_fp16_training_with_default_weights_stays_finite(tiny_model_dir, relation_dir):
    rect, history = train_rectifier(_fp16_pipe(tiny_model_dir), load_relation(relation_dir),
                                    TrainConfig(hidden=16, heads=2, epochs=1), progress=False)
    assert torch.isfinite(_params(rect)).all() and history[-1]["loss"] == history[-1]["loss"]


def test_training_does_not_reseed_the_global_rng(tiny_pipe, relation_dir):
    import random

    import numpy as np

    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    before = torch.get_rng_state(), np.random.random(), random.random()
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    train_rectifier(tiny_pipe, load_relation(relation_dir), TrainConfig(hidden=8, heads=1, epochs=1, seed=7),
                    progress=False)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.random(), random.random()) == before[1:]  # numpy's and python's streams too


@pytest.mark.parametrize("kind", ["personalized", "lora"])
def test_baselines_do_not_reseed_the_global_rng(tiny_pipe, relation_dir, kind):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    train_baseline(kind, tiny_pipe, load_relation(relation_dir), BaselineConfig(epochs=1, seed=7), progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_training_hands_the_pipeline_back_as_it_was(tiny_pipe, relation_dir, monkeypatch):
    unet = tiny_pipe.unet
    unet.train()
    unet.requires_grad_(False)
    unet.conv_in.weight.requires_grad_(True)
    compiled = []

    def fake_compile(*args, **kwargs):  # stands in for torch.compile: records, compiles nothing
        compiled.append(True)
        unet._compiled_call_impl = unet._call_impl

    monkeypatch.setattr(unet, "compile", fake_compile)
    checkpointing = []
    enable = unet.enable_gradient_checkpointing
    monkeypatch.setattr(unet, "enable_gradient_checkpointing", lambda: (checkpointing.append(True), enable()))
    config = TrainConfig(hidden=8, heads=1, epochs=1, gradient_checkpointing=True, compile_unet=True)
    train_rectifier(tiny_pipe, load_relation(relation_dir), config, progress=False)
    assert compiled and checkpointing, "the switches were not exercised"
    assert unet._compiled_call_impl is None
    assert not unet.is_gradient_checkpointing
    assert unet.training and unet.conv_in.weight.requires_grad
    assert not any(p.requires_grad for n, p in unet.named_parameters() if n != "conv_in.weight")
