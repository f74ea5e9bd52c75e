"""An open-vocabulary detector judge for positional relations (OWL-ViT / OWLv2).

Why a detector: "left of", "above" and their synonyms are geometry, so they can be judged the way
the position benchmarks do it (GenEval, VISOR): find each object's box, then apply a published
rule to the two boxes. A detector's verdict is reproducible and auditable (the boxes are kept),
which a VLM's free-text answer is not. OWL-ViT and OWLv2 take free-text queries, so any object
name of a prompt can be looked for, not only a closed label set such as COCO's.

The rules themselves live in `rrnet.eval.geometry` (pure functions over boxes); this module only
turns images into boxes. Action relations ("contains", "hanging on") have no box rule: the
detector judge refuses them, and the VLM judge handles them.

Coordinates: the processor's post-processing maps the model's normalised boxes to pixels of each
original image (`target_sizes` = (height, width)). OWL-ViT squashes an image to a square, so
x scales with the width and y with the height. OWLv2 first pads the image at the bottom and
right to a square of side max(height, width), so its boxes are relative to that padded square
and transformers scales both axes by max(height, width); since the padding is only added at the
bottom and right, the origin is unchanged and the result is already in original-image pixels.
Boxes are then clipped to the image, so a box reaching into OWLv2's padding (or past an edge)
is measured by its visible part; a box wholly outside the image (inside the padding) is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rrnet.backbones.loading import default_device
from rrnet.errors import RRNetError
from rrnet.eval.geometry import Box, canonical_relation, check_rule, verdict_from_boxes
from rrnet.eval.judges.base import JudgeQuery, JudgeResult

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("owlvit", "owlv2")
DEFAULT_MODEL = "google/owlv2-base-patch16-ensemble"
# Sigmoid scores of OWL-ViT/OWLv2 for a free-text query: true objects often score 0.1-0.3, so
# GenEval's 0.3 (meant for Mask2Former's closed-set class confidence) would miss many of them.
# 0.1 is the default of transformers' OWL post-processing and of the OWL model cards' examples.
DEFAULT_THRESHOLD = 0.1
DEFAULT_TEMPLATE = "a photo of a {object}"
DETAIL_BOXES = 10  # boxes kept per object in `detail` (best first)
# Bump when a rule's reading of the same boxes changes (2: VISOR searches every box pair), so
# cached verdicts are judged again.
RULE_VERSION = 2


def _short_name(model_id: str) -> str:
    """The last path component of a model id or folder ("google/owlv2-x" -> "owlv2-x")."""
    return model_id.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or model_id


def _model_type(model: Any) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def _check_model_type(model_type: str | None, source: str) -> str:
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise RRNetError(
            f"{source}: model type {model_type!r} is not supported by the detector judge; "
            f"expected one of: {', '.join(SUPPORTED_MODEL_TYPES)} (OWL-ViT, OWLv2)"
        )
    return model_type


def check_positional(relation: str) -> str:
    """The canonical positional relation, or RRNetError pointing action relations to the VLM judge."""
    try:
        return canonical_relation(relation)
    except RRNetError:
        raise RRNetError(
            f"the detector judge only handles positional relations (left of, right of, above, below "
            f"and synonyms such as 'on top of' or 'under'), got {relation!r}; use the VLM judge for "
            "action relations"
        ) from None


def _box_record(box: Box) -> list[float]:
    return [round(box.x0, 2), round(box.y0, 2), round(box.x1, 2), round(box.y1, 2), round(box.score, 4)]


class DetectorJudge:
    """Judge "A R B" for positional R from OWL-ViT/OWLv2 boxes of A and of B (GenEval: the best
    box of each; VISOR: any pair of boxes above the threshold).

    `rule` is "geneval" or "visor" (see `rrnet.eval.geometry`); `threshold` is the detector score
    a box must exceed to count; `template` turns an object name into a text query.
    """

    name = "detector"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_id: str | None = None,
        rule: str = "geneval",
        threshold: float = DEFAULT_THRESHOLD,
        template: str = DEFAULT_TEMPLATE,
        batch_size: int = 8,
    ) -> None:
        self.model_type = _check_model_type(_model_type(model), model_id or type(model).__name__)
        self.rule = check_rule(rule)
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise RRNetError(f"detector score threshold must be a finite number >= 0, got {threshold!r}")
        if "{object}" not in template:
            raise RRNetError(f"query template must contain '{{object}}', got {template!r}")
        if batch_size < 1:
            raise RRNetError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.processor = processor
        config = getattr(model, "config", None)
        self.model_id = model_id or getattr(config, "_name_or_path", "") or self.model_type
        self.threshold = float(threshold)
        self.template = template
        self.batch_size = batch_size
        self.label = f"{_short_name(self.model_id)}/{self.rule}"

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | None = DEFAULT_MODEL,
        rule: str = "geneval",
        threshold: float = DEFAULT_THRESHOLD,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        template: str = DEFAULT_TEMPLATE,
    ) -> DetectorJudge:
        """Load an OWL-ViT/OWLv2 checkpoint (hub id or local folder; None = DEFAULT_MODEL) and its processor."""
        from transformers import (
            AutoConfig,
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
        )

        check_rule(rule)
        model_id_or_path = model_id_or_path or DEFAULT_MODEL
        path = Path(model_id_or_path).expanduser()
        looks_local = path.is_absolute() or model_id_or_path.startswith((".", "~")) or path.exists()
        if looks_local and not path.is_dir():
            raise RRNetError(f"detector model folder not found: {model_id_or_path}")
        source = str(path) if looks_local else model_id_or_path
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RRNetError(f"cannot load detector model {model_id_or_path!r}: {first}") from exc
        _check_model_type(getattr(config, "model_type", None), model_id_or_path)
        try:
            processor = AutoProcessor.from_pretrained(source)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(source)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RRNetError(f"cannot load detector model {model_id_or_path!r}: {first}") from exc
        device = device or default_device()
        model = model.to(device).eval()
        return cls(model, processor, model_id=model_id_or_path, rule=rule, threshold=threshold,
                   template=template, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "model": self.model_id,
            "model_type": self.model_type,
            "rule": self.rule,
            "rule_version": RULE_VERSION,
            "threshold": self.threshold,
            "template": self.template,
        }

    def query_text(self, obj: str) -> str:
        """The detector's text query for one object name."""
        return self.template.format(object=" ".join(obj.split()))

    def _device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (AttributeError, StopIteration):
            return torch.device("cpu")

    def _check_query_length(self, texts: Sequence[str]) -> None:
        tokenizer = getattr(self.processor, "tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        if tokenizer is None or not isinstance(limit, int) or limit > 10_000:
            return
        for text in texts:
            n = len(tokenizer(text)["input_ids"])
            if n > limit:
                raise RRNetError(f"detector query {text!r} is {n} tokens, over the text encoder's limit of {limit}")

    def _post_process(self, outputs: Any, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
        post = getattr(self.processor, "post_process_grounded_object_detection", None)
        if post is None:  # a bare image processor (no tokenizer) post-processes boxes just as well
            image_processor = getattr(self.processor, "image_processor", self.processor)
            post = image_processor.post_process_object_detection
        return post(outputs=outputs, threshold=self.threshold, target_sizes=sizes)

    def boxes_from_outputs(
        self, outputs: Any, sizes: Sequence[tuple[int, int]], n_queries: int
    ) -> list[list[list[Box]]]:
        """Per image, per query: boxes scoring above the threshold, in the image's pixels, best first.

        `outputs` needs `logits` (images, boxes, queries) and `pred_boxes` (images, boxes, 4, normalised
        centre/size); `sizes` are (height, width). Each box counts for its best-scoring query only
        (the post-processing's label); boxes are clipped to the image, and dropped if wholly outside.
        """
        sizes = [(int(h), int(w)) for h, w in sizes]
        results = self._post_process(outputs, sizes)
        per_image = []
        for (height, width), found in zip(sizes, results):
            per_query: list[list[Box]] = [[] for _ in range(n_queries)]
            scores = found["scores"].detach().float().cpu().tolist()
            labels = found["labels"].detach().cpu().tolist()
            coords = found["boxes"].detach().float().cpu().tolist()
            for score, label, (x0, y0, x1, y1) in zip(scores, labels, coords):
                outside = x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0
                if 0 <= label < n_queries and not outside:
                    per_query[label].append(Box(
                        min(max(x0, 0.0), width), min(max(y0, 0.0), height),
                        min(max(x1, 0.0), width), min(max(y1, 0.0), height), score,
                    ))
            # stable sort: equal scores keep the model's order, so results never depend on sorting
            per_image.append([sorted(boxes, key=lambda b: -b.score) for boxes in per_query])
        return per_image

    @torch.no_grad()
    def detect(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[list[list[Box]]]:
        """Run the detector over `images` in batches; per image, per text query, its boxes (best first)."""
        texts = list(texts)
        self._check_query_length(texts)
        device = self._device()
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        out: list[list[list[Box]]] = []
        for start in range(0, len(images), self.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            inputs = self.processor(text=[texts] * len(batch), images=batch, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            outputs = self.model(**inputs)
            sizes = [(image.height, image.width) for image in batch]
            out.extend(self.boxes_from_outputs(outputs, sizes, len(texts)))
        return out

    def judge(self, images: Sequence[Image.Image], query: JudgeQuery) -> list[JudgeResult]:
        relation = check_positional(query.relation)
        if not images:
            return []
        text_a, text_b = self.query_text(query.object_a), self.query_text(query.object_b)
        # the same object twice gets one query, so its boxes are not split between A and B
        texts = [text_a] if text_a == text_b else [text_a, text_b]
        index_b = texts.index(text_b)
        results = []
        for per_query in self.detect(images, texts):
            boxes_a, boxes_b = per_query[0], per_query[index_b]
            has_a, has_b, verdict = verdict_from_boxes(boxes_a, boxes_b, relation, self.rule)
            detail = {
                "queries": [text_a, text_b],
                "boxes_a": [_box_record(b) for b in boxes_a[:DETAIL_BOXES]],
                "boxes_b": [_box_record(b) for b in boxes_b[:DETAIL_BOXES]],
                "n_boxes": [len(boxes_a), len(boxes_b)],
            }
            results.append(JudgeResult(has_a=has_a, has_b=has_b, both=has_a and has_b,
                                       verdict=verdict, detail=detail))
        return results
