"""The fast training path computes the same gradients as the official-style reference loop."""

import pytest
import torch

from benchmarks.reference_loop import ReferenceTrainer
from rrnet.data import load_relation
from rrnet.train import PAIR_STEPS, TrainConfig, configure_unet, latent_distribution, new_rectifier, pair_step_loss, setup_training

BASE = dict(hidden=16, heads=2, seed=3)


def _library_grads(pipe, spec, config, pair, chosen):
    rect, prepared, sched, _, gen = setup_training(pipe, spec, config)
    result = pair_step_loss(pipe, rect, prepared, pair, chosen, config, sched, gen)
    result.loss.backward()
    return result.loss.detach(), {n: p.grad.clone() for n, p in rect.named_parameters() if p.grad is not None}


def _reference_grads(pipe, spec, config, pair, chosen):
    configure_unet(pipe, TrainConfig())
    rect = new_rectifier(pipe, config)
    trainer = ReferenceTrainer(pipe, rect, spec, config)
    encoded, graphs, _ = trainer.sample_epoch()
    loss = trainer.pair_loss(pair, encoded, graphs, chosen)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in rect.named_parameters() if p.grad is not None}


def _same(a, b) -> bool:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    return bool(torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6) and grads_a.keys() == grads_b.keys() and grads_a
                and all(torch.allclose(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-7) for n in grads_a))


def _assert_same(a, b):
    loss_a, grads_a = a
    loss_b, grads_b = b
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("pair", PAIR_STEPS)
def test_fast_path_gradients_match_the_reference(tiny_pipe, relation_dir, pair):
    spec = load_relation(relation_dir)
    chosen = {"prompt": 1, "swapped": 0, "object_a": 1, "object_b": 0}
    _assert_same(_library_grads(tiny_pipe, spec, TrainConfig(**BASE), pair, chosen),
                 _reference_grads(tiny_pipe, spec, TrainConfig(**BASE), pair, chosen))


@pytest.mark.parametrize("switch", [dict(cache_latents=False), dict(cache_text=False), dict(batch_unet=False),
                                    dict(gradient_checkpointing=True)])
def test_each_switch_gives_the_same_gradients(tiny_pipe, relation_dir, switch):
    spec = load_relation(relation_dir)
    chosen = {"prompt": 0, "swapped": 1, "object_a": 0, "object_b": 1}
    pair = ("swapped", "object_a")
    _assert_same(_library_grads(tiny_pipe, spec, TrainConfig(**BASE, **switch), pair, chosen),
                 _library_grads(tiny_pipe, spec, TrainConfig(**BASE), pair, chosen))


def test_cached_latents_equal_fresh_encodes(tiny_pipe, relation_dir):
    from rrnet.data import load_images

    spec = load_relation(relation_dir)
    images = load_images(spec.images_prompt, 32)
    mean, std = latent_distribution(tiny_pipe, images)
    for i in range(len(images)):
        dist = tiny_pipe.vae.encode(images[i : i + 1]).latent_dist
        scale = tiny_pipe.vae.config.scaling_factor
        assert torch.allclose(mean[i], dist.mean[0] * scale, atol=1e-6)
        assert torch.allclose(std[i], dist.std[0] * scale, atol=1e-6)


def test_switches_are_recorded_and_training_runs_without_cache(tiny_pipe, relation_dir):
    from rrnet.train import train_rectifier

    cfg = TrainConfig(epochs=1, cache_latents=False, cache_text=False, batch_unet=False, **BASE)
    rect, hist = train_rectifier(tiny_pipe, load_relation(relation_dir), cfg, progress=False)
    assert rect.config.training["cache_latents"] is False and len(hist) == 1


def _wrong_sign(original):
    def loss(pred_own, target_own, pred_other, target_other, positive_weight, negative_weight):
        return original(pred_own, target_own, pred_other, target_other, positive_weight, -negative_weight)
    return loss


def _own_as_negative(original):
    return lambda own: own


def _next_position(original):
    def edit(embeds, eot_index, delta, alpha=1.0, positions="eot"):
        return original(embeds, eot_index + 1, delta, alpha, positions)
    return edit


@pytest.mark.parametrize("mistake", ["loss sign", "negative pairing", "EOT position"])
def test_the_reference_catches_a_mistake_in_the_library(tiny_pipe, relation_dir, monkeypatch, mistake):
    """The reference is written apart from the library: a wrong sign, negative or edit position shows."""
    from rrnet import train

    spec = load_relation(relation_dir)
    chosen = {"prompt": 1, "swapped": 0, "object_a": 1, "object_b": 0}
    pair = ("prompt", "swapped")
    reference = _reference_grads(tiny_pipe, spec, TrainConfig(**BASE), pair, chosen)
    assert _same(_library_grads(tiny_pipe, spec, TrainConfig(**BASE), pair, chosen), reference)
    name, wrong = {"loss sign": ("relation_compelling_loss", _wrong_sign),
                   "negative pairing": ("negative_latents", _own_as_negative),
                   "EOT position": ("add_at_eot", _next_position)}[mistake]
    monkeypatch.setattr(train, name, wrong(getattr(train, name)))
    assert not _same(_library_grads(tiny_pipe, spec, TrainConfig(**BASE), pair, chosen), reference)
