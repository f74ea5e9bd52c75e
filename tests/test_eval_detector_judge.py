"""The OWL-ViT/OWLv2 detector judge: tiny random detectors end to end, box plumbing, refusals."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from rrnet.errors import RRNetError
from rrnet.eval.geometry import Box
from rrnet.eval.judges.base import VERDICTS, Judge, JudgeQuery
from rrnet.eval.judges.detector import DEFAULT_THRESHOLD, DetectorJudge

QUERY = JudgeQuery("red block", "above", "blue block",
                   "a red block above a blue block", "a blue block above a red block")

_LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TEXT_CONFIG = {**_LAYERS, "vocab_size": 49408, "max_position_embeddings": 16}
VISION_CONFIG = {**_LAYERS, "image_size": 32, "patch_size": 8}
N_PATCH_BOXES = (32 // 8) ** 2


def _tokenizer():
    from rrnet.backbones.clip_vocab import clip_tokenizer, find_bpe_file

    try:
        find_bpe_file()
    except RRNetError as exc:
        pytest.skip(f"CLIP BPE vocabulary unavailable: {exc}")
    return clip_tokenizer(model_max_length=16)  # OWL-ViT's text encoder has 16 positions


def _tiny_detector(kind: str):
    """A random tiny OWL-ViT or OWLv2 with a real CLIP tokenizer and a 32x32 image processor."""
    import transformers as tf

    classes = {
        "owlvit": (tf.OwlViTConfig, tf.OwlViTForObjectDetection, tf.OwlViTProcessor, tf.OwlViTImageProcessorPil),
        "owlv2": (tf.Owlv2Config, tf.Owlv2ForObjectDetection, tf.Owlv2Processor, tf.Owlv2ImageProcessorPil),
    }
    config_cls, model_cls, processor_cls, image_processor_cls = classes[kind]
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    # a small init keeps random boxes near their patches and scores off 0/1, as a trained model's
    config = config_cls(text_config=TEXT_CONFIG, vision_config=VISION_CONFIG, projection_dim=32, initializer_factor=0.1)
    model = model_cls(config).eval()
    size = {"height": 32, "width": 32}
    extra = {"crop_size": size} if kind == "owlvit" else {}
    processor = processor_cls(image_processor=image_processor_cls(size=size, **extra), tokenizer=tokenizer)
    return model, processor


def _images() -> list[Image.Image]:
    wide = Image.new("RGB", (64, 40), (40, 40, 40))
    wide.paste((220, 30, 30), (20, 2, 40, 16))
    tall = Image.new("RGB", (36, 52), (40, 40, 40))
    tall.paste((30, 60, 220), (8, 30, 28, 48))
    return [wide, tall, Image.new("RGB", (48, 48), (200, 200, 200))]


def _check_results(results, images) -> None:
    assert len(results) == len(images)
    for result, image in zip(results, images):
        assert result.verdict in VERDICTS
        assert result.both == (result.has_a and result.has_b)
        assert result.has_a == bool(result.detail["boxes_a"])
        assert result.has_b == bool(result.detail["boxes_b"])
        assert result.detail["queries"] == ["a photo of a red block", "a photo of a blue block"]
        for x0, y0, x1, y1, score in result.detail["boxes_a"] + result.detail["boxes_b"]:
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
            assert 0.0 <= score <= 1.0


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_tiny_detector_end_to_end(kind, tmp_path):
    model, processor = _tiny_detector(kind)
    images = _images()
    judge = DetectorJudge(model, processor, model_id=f"tiny/{kind}-random", threshold=0.0, batch_size=2)
    assert isinstance(judge, Judge)
    assert judge.label == f"{kind}-random/geneval"
    assert judge.describe() == {"judge": "detector", "model": f"tiny/{kind}-random", "model_type": kind,
                                "rule": "geneval", "rule_version": 2, "threshold": 0.0,
                                "template": "a photo of a {object}"}

    first = judge.judge(images, QUERY)
    _check_results(first, images)
    assert all(r.has_a or r.has_b for r in first)  # threshold 0 keeps (nearly) every patch's box
    assert all(0 < sum(r.detail["n_boxes"]) <= N_PATCH_BOXES for r in first)
    assert [r.to_dict() for r in judge.judge(images, QUERY)] == [r.to_dict() for r in first]

    # batching does not change the answer
    one_by_one = DetectorJudge(model, processor, threshold=0.0, batch_size=1).judge(images, QUERY)
    for a, b in zip(one_by_one, first):
        assert (a.has_a, a.has_b, a.verdict, a.detail["n_boxes"]) == (b.has_a, b.has_b, b.verdict, b.detail["n_boxes"])
        assert _flat(a.detail["boxes_a"]) == pytest.approx(_flat(b.detail["boxes_a"]), abs=0.05)

    # sigmoid scores never exceed 1: nothing is found, and nothing is guessed
    for result in DetectorJudge(model, processor, threshold=1.5).judge(images, QUERY):
        assert (result.has_a, result.has_b, result.both, result.verdict) == (False, False, False, "neither")
        assert result.detail["n_boxes"] == [0, 0]

    # a saved checkpoint loads through the Auto classes and judges the same
    folder = tmp_path / f"tiny-{kind}"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = DetectorJudge.from_pretrained(str(folder), rule="visor", threshold=0.0, device="cpu", batch_size=2)
    assert loaded.label == f"tiny-{kind}/visor" and loaded.describe()["model_type"] == kind
    again = loaded.judge(images, QUERY)
    for a, b in zip(again, first):
        assert (a.has_a, a.has_b, a.detail["n_boxes"]) == (b.has_a, b.has_b, b.detail["n_boxes"])
        assert _flat(a.detail["boxes_a"]) == pytest.approx(_flat(b.detail["boxes_a"]), abs=0.05)


def _flat(rows) -> list[float]:
    return [float(v) for row in rows for v in (row if isinstance(row, (list, tuple)) else (row.x0, row.y0, row.x1, row.y1))]


def _fake_outputs(cxcywh: list[list[float]], logits: list[list[float]]) -> SimpleNamespace:
    return SimpleNamespace(pred_boxes=torch.tensor([cxcywh]), logits=torch.tensor([logits]))


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_box_coordinates_follow_each_model_preprocessing(kind):
    """OWLv2 pads to a square at the bottom/right, OWL-ViT squashes: same output, other pixels."""
    import transformers as tf

    image_processor = (tf.Owlv2ImageProcessorPil() if kind == "owlv2" else tf.OwlViTImageProcessorPil())
    judge = DetectorJudge(_StubModel(kind), image_processor, threshold=0.3)
    boxes = [
        [0.5, 0.25, 0.2, 0.1],  # query 0, score ~0.88
        [0.5, 0.45, 0.2, 0.2],  # query 1, score ~0.95; reaches into OWLv2's padding
        [0.5, 0.85, 0.1, 0.1],  # query 0, score ~0.73; wholly inside OWLv2's padding
        [0.1, 0.1, 0.1, 0.1],   # query 1, score ~0.12: under the threshold
    ]
    logits = [[2.0, -1.0], [-1.0, 3.0], [1.0, -5.0], [-4.0, -2.0]]
    (per_query,) = judge.boxes_from_outputs(_fake_outputs(boxes, logits), [(100, 200)], n_queries=2)
    a, b = per_query
    if kind == "owlv2":  # normalised to the 200x200 padded square
        assert _flat(a) == pytest.approx([80, 40, 120, 60])
        assert _flat(b) == pytest.approx([80, 70, 120, 100])  # clipped to the image
    else:  # normalised to the 200x100 image itself
        assert _flat(a) == pytest.approx([80, 20, 120, 30, 90, 80, 110, 90])
        assert a[0].score > a[1].score  # best first
        assert _flat(b) == pytest.approx([80, 35, 120, 55])
    assert a[0].score == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


class _StubModel(torch.nn.Module):
    """Stands in for a detector in tests that never reach the model."""

    def __init__(self, model_type: str = "owlvit") -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type=model_type, _name_or_path="stub/owl-stub")

    def forward(self, **kwargs):
        raise AssertionError("the model must not be called")


def _stubbed_judge(monkeypatch, boxes: dict[str, list[Box]], rule: str = "geneval") -> DetectorJudge:
    """A judge whose detection step returns fixed boxes per object name."""
    judge = DetectorJudge(_StubModel(), processor=None, rule=rule)
    calls = []

    def detect(images, texts):
        calls.append(list(texts))
        names = [t.removeprefix("a photo of a ") for t in texts]
        return [[list(boxes.get(name, [])) for name in names] for _ in images]

    monkeypatch.setattr(judge, "detect", detect)
    judge.calls = calls
    return judge


TOP = Box(10, 0, 30, 20, 0.9)
BOTTOM = Box(10, 40, 30, 60, 0.8)
IMAGE = [Image.new("RGB", (64, 64))]


def test_stubbed_boxes_give_verdicts(monkeypatch):
    judge = _stubbed_judge(monkeypatch, {"red block": [TOP], "blue block": [BOTTOM]})
    (arb,) = judge.judge(IMAGE, QUERY)
    assert (arb.has_a, arb.has_b, arb.both, arb.verdict) == (True, True, True, "ARB")
    assert arb.detail["boxes_a"] == [[10, 0, 30, 20, 0.9]] and arb.detail["boxes_b"] == [[10, 40, 30, 60, 0.8]]
    assert judge.calls == [["a photo of a red block", "a photo of a blue block"]]

    (bra,) = judge.judge(IMAGE, QUERY.swapped())  # "a blue block above a red block"
    assert bra.verdict == "BRA" and bra.both
    below = JudgeQuery("red block", "below", "blue block", "a red block below a blue block", "")
    assert judge.judge(IMAGE, below)[0].verdict == "BRA"
    on_top = JudgeQuery("red block", "on top of", "blue block", "a red block on top of a blue block", "")
    assert judge.judge(IMAGE, on_top)[0].verdict == "ARB"
    left = JudgeQuery("red block", "left of", "blue block", "a red block left of a blue block", "")
    assert judge.judge(IMAGE, left)[0].verdict == "neither"  # same column
    assert judge.judge([], QUERY) == []


def test_best_box_decides_and_detail_is_rounded(monkeypatch):
    low_below = Box(10.123456, 70, 30, 90, 0.31234567)
    judge = _stubbed_judge(monkeypatch, {"red block": [TOP, low_below], "blue block": [BOTTOM]})
    (result,) = judge.judge(IMAGE, QUERY)
    assert result.verdict == "ARB"
    assert result.detail["boxes_a"][1] == [10.12, 70, 30, 90, 0.3123]
    assert result.detail["n_boxes"] == [2, 1]
    json.dumps(result.to_dict())  # auditable detail survives the judgement cache


def test_rules_differ_on_near_overlap(monkeypatch):
    """Centres 2 px apart on 20 px boxes: VISOR's centroid rule says above, GenEval's margin says no."""
    boxes = {"red block": [Box(0, 0, 20, 20, 0.9)], "blue block": [Box(0, 2, 20, 22, 0.9)]}
    assert _stubbed_judge(monkeypatch, boxes, rule="visor").judge(IMAGE, QUERY)[0].verdict == "ARB"
    assert _stubbed_judge(monkeypatch, boxes, rule="geneval").judge(IMAGE, QUERY)[0].verdict == "neither"


def test_missing_object_is_reported(monkeypatch):
    (result,) = _stubbed_judge(monkeypatch, {"blue block": [BOTTOM]}).judge(IMAGE, QUERY)
    assert (result.has_a, result.has_b, result.both, result.verdict) == (False, True, False, "neither")
    (result,) = _stubbed_judge(monkeypatch, {"red block": [TOP]}).judge(IMAGE, QUERY)
    assert (result.has_a, result.has_b, result.both, result.verdict) == (True, False, False, "neither")


def test_same_object_twice_uses_one_query(monkeypatch):
    judge = _stubbed_judge(monkeypatch, {"dog": [TOP, BOTTOM]})
    query = JudgeQuery("dog", "above", "dog", "a dog above a dog", "a dog above a dog")
    (result,) = judge.judge(IMAGE, query)
    assert judge.calls == [["a photo of a dog"]]
    assert result.both and result.verdict == "neither"  # one best box for both: no relation


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("relation", ["contains", "hanging on", "riding"])
def test_action_relation_is_refused_before_the_model(monkeypatch, relation):
    judge = DetectorJudge(_StubModel(), processor=None)  # its forward raises AssertionError
    query = JudgeQuery("bowl", relation, "apple", f"a bowl {relation} an apple", f"an apple {relation} a bowl")
    with pytest.raises(RRNetError) as exc:
        judge.judge(IMAGE, query)
    message = _one_line(exc)
    assert repr(relation) in message and "positional" in message and "VLM judge" in message


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(RRNetError, match="unknown position rule"):
        DetectorJudge(_StubModel(), None, rule="center")
    with pytest.raises(RRNetError, match="unknown position rule"):
        DetectorJudge.from_pretrained(str(tmp_path), rule="center")
    with pytest.raises(RRNetError, match="threshold"):
        DetectorJudge(_StubModel(), None, threshold=float("nan"))
    with pytest.raises(RRNetError, match="template"):
        DetectorJudge(_StubModel(), None, template="a photo of a thing")
    with pytest.raises(RRNetError, match="not supported") as exc:
        DetectorJudge(_StubModel("clip"), None)
    assert "'clip'" in _one_line(exc)
    assert DEFAULT_THRESHOLD == 0.1


def test_from_pretrained_refuses_missing_and_unsupported(tmp_path):
    with pytest.raises(RRNetError, match="not found") as exc:
        DetectorJudge.from_pretrained(str(tmp_path / "nowhere"))
    _one_line(exc)
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(RRNetError, match="not supported") as exc:
        DetectorJudge.from_pretrained(str(folder))
    assert "'bert'" in _one_line(exc)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RRNetError, match="cannot load") as exc:
        DetectorJudge.from_pretrained(str(empty))
    _one_line(exc)
