"""Backbone variants (SD 1.x padding, v-prediction, mixed precision) and the real example data."""

import pytest
import torch

from conftest import SHARED_EXAMPLES
from rrnet.backbones.loading import load_pipeline
from rrnet.backbones.tiny import build_tiny_backbone
from rrnet.data import find_relations, load_relation
from rrnet.rectifier import encode_prompt
from rrnet.train import TrainConfig, new_rectifier, prepare_relation, train_rectifier


def test_sd1_vprediction_backbone_trains(relation_dir, tmp_path):
    model = build_tiny_backbone(tmp_path / "sd1v", sd_version=1, prediction_type="v_prediction")
    pipe = load_pipeline(str(model), device="cpu", progress=False)
    assert pipe.tokenizer.pad_token_id == pipe.tokenizer.eos_token_id
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    spec = load_relation(relation_dir)
    rect, hist = train_rectifier(pipe, spec, TrainConfig(epochs=1, hidden=8), progress=False)
    assert torch.isfinite(torch.tensor(hist[0]["loss"]))
    embeds = rect.prompt_embeds(pipe, spec.prompt, alpha=0.6)
    assert embeds.shape == (1, 77, 32)


def test_mixed_precision_keeps_rectifier_in_fp32(tiny_model_dir, relation_dir):
    pipe = load_pipeline(str(tiny_model_dir), device="cpu", mixed_precision="bf16", progress=False)
    assert pipe.unet.dtype == torch.bfloat16
    rect, hist = train_rectifier(pipe, load_relation(relation_dir), TrainConfig(epochs=1, hidden=8), progress=False)
    assert all(p.dtype == torch.float32 for p in rect.parameters())
    assert rect.prompt_embeds(pipe, "a red block above a blue block").dtype == torch.bfloat16


@pytest.mark.skipif(not SHARED_EXAMPLES.is_dir(), reason="shared rr-examples not present")
def test_official_examples_prepare_for_training(tiny_pipe):
    """All four real relations: messy images load, every word is found in its prompts, latents cached."""
    specs = find_relations(SHARED_EXAMPLES)
    assert sorted(s.name for s in specs) == ["below", "beneath", "contain", "place"]
    cfg = TrainConfig(hidden=8)
    rect = new_rectifier(tiny_pipe, cfg)
    for spec in specs:
        prepared = prepare_relation(tiny_pipe, rect, spec, cfg)
        assert prepared.sides["prompt"].latent_mean.shape[1:] == (4, 16, 16)
        assert len(prepared.sides["swapped"].latent_mean) == len(spec.images_swapped)
        eot = encode_prompt(tiny_pipe, spec.prompt).tokens.eot_index
        assert eot == len(tiny_pipe.tokenizer(spec.prompt).input_ids) - 1
