"""The paper's VLM judge: a chat vision-language model answers the five protocol questions.

RRNet (CVPR 2024, Appendix D.2) scores relation direction by asking a chatbot five questions
about each image in one conversation, so question 5 ("A R B, B R A or neither?") is answered
with the model's own earlier answers in view. This module runs that conversation with a Hugging
Face image-text-to-text model (Qwen2-VL, Qwen2.5-VL, LLaVA 1.5, LLaVA-NeXT), batched across
images turn by turn with greedy decoding, and reads the answers with `rrnet.eval.vlm_protocol`,
which reports unclear answers as unparseable instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rrnet.backbones.loading import default_device
from rrnet.errors import RRNetError
from rrnet.eval.judges.base import JudgeQuery, JudgeResult
from rrnet.eval.vlm_protocol import ProtocolAnswers, judge_from_answers, questions

# model_type -> family name used in describe(); all load with AutoModelForImageTextToText.
FAMILIES: dict[str, str] = {
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2.5-vl",
    "llava": "llava",
    "llava_next": "llava-next",
}
DTYPES: dict[str, Any] = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Bump when the conversation layout changes (turn structure, where the image goes, answer cleanup).
CONVERSATION_VERSION = 1
# Bump when answer parsing changes what a cached answer is read as (2: a sentence-style yes must
# name the asked object), so cached verdicts are judged again.
PARSER_VERSION = 2

Message = dict[str, Any]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _questions_version() -> str:
    """A hash of the question wording, so rewording the protocol invalidates cached judgements."""
    return _short_hash(json.dumps(questions("{a}", "{b}", "{arb}", "{bra}")))


def _looks_local(model_id: str) -> bool:
    """Whether `model_id` is meant as a path rather than a hub id ("org/name")."""
    return (
        Path(model_id).is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1
        or Path(model_id).expanduser().exists()
    )


def _family_of(config: Any, model_id: str) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise RRNetError(
            f"unsupported VLM {model_id!r}: model_type {model_type!r} is not one of {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def _user_turn(text: str, image: bool) -> Message:
    content: list[dict[str, Any]] = [{"type": "image"}] if image else []
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def _assistant_turn(text: str) -> Message:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


class VLMJudge:
    """Five-question relation judge backed by a chat VLM (`judge.name == "vlm"`).

    Build it with `VLMJudge.from_pretrained(model_id)`, or pass an already loaded `model`
    (an image-text-to-text model) and its `processor` (with a chat template). The processor's
    tokenizer is switched to left padding, which batched generation needs.
    """

    name = "vlm"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        model_id: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 64,
    ) -> None:
        model_id = model_id or getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        self.family = _family_of(getattr(model, "config", None), model_id or type(model).__name__)
        if batch_size < 1 or max_new_tokens < 1:
            raise RRNetError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
        if getattr(processor, "chat_template", None) is None:
            raise RRNetError(f"the processor of VLM {model_id or self.family!r} has no chat template")
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        self.processor = processor
        self.model_id = model_id
        self.label = Path(model_id.rstrip("/")).name if model_id else self.family
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str,
        device: str | torch.device | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 64,
    ) -> VLMJudge:
        """Load a supported VLM and its processor from the hub (or its cache) or a local folder.

        `dtype` is "auto" (the checkpoint's), "bf16", "fp16" or "fp32"; `device` defaults to
        CUDA when available. Missing paths, unsupported models and load failures raise
        `RRNetError` with one line.
        """
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        if dtype not in DTYPES:
            raise RRNetError(f"unknown VLM dtype {dtype!r}; use one of {sorted(DTYPES)}")
        model_id = str(model_id_or_path)
        if _looks_local(model_id) and not Path(model_id).expanduser().is_dir():
            raise RRNetError(f"VLM folder not found: {model_id}")
        source = str(Path(model_id).expanduser()) if _looks_local(model_id) else model_id

        def load(what: str, loader: Any, **kwargs: Any) -> Any:
            try:
                return loader.from_pretrained(source, **kwargs)
            except (OSError, ValueError, ImportError, KeyError) as exc:
                raise RRNetError(f"cannot load the {what} of VLM {model_id!r}: {_first_line(exc)}") from exc

        config = load("config", AutoConfig)
        _family_of(config, model_id)  # refuse unsupported models before loading weights
        processor = load("processor", AutoProcessor)
        model = load(
            "weights", AutoModelForImageTextToText,
            dtype=DTYPES[dtype], device_map=str(device or default_device()),
        )
        return cls(model, processor, model_id=model_id, batch_size=batch_size, max_new_tokens=max_new_tokens)

    def describe(self) -> dict[str, Any]:
        """Everything that changes the answers: model, weights revision, precision, decoding, wording."""
        template = self.processor.chat_template
        return {
            "judge": self.name,
            "model": self.model_id,
            "revision": getattr(self.model.config, "_commit_hash", None),
            "family": self.family,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens,
            "conversation": CONVERSATION_VERSION,
            "parser": PARSER_VERSION,
            "questions": _questions_version(),
            "chat_template": _short_hash(json.dumps(template, sort_keys=True)),
        }

    def judge(self, images: Sequence[Image.Image], query: JudgeQuery) -> list[JudgeResult]:
        """Ask the five questions about each image and parse the answers (never guessing)."""
        asked = questions(query.object_a, query.object_b, query.prompt, query.swapped_prompt)
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = [image.convert("RGB") for image in images[start:start + self.batch_size]]
            for answers in self.converse(chunk, asked):
                parsed = judge_from_answers(answers, query.prompt, query.swapped_prompt, (query.object_a, query.object_b))
                results.append(self._result(parsed))
        return results

    def converse(self, images: list[Image.Image], asked: Sequence[str]) -> list[list[str]]:
        """Run one conversation per image, all images a turn at a time; return each one's answers."""
        conversations: list[list[Message]] = [[] for _ in images]
        answers: list[list[str]] = [[] for _ in images]
        for turn, question in enumerate(asked):
            for conversation in conversations:
                conversation.append(_user_turn(question, image=turn == 0))
            replies = self._generate(conversations, images)
            if len(replies) != len(images):
                raise RRNetError(f"the VLM returned {len(replies)} answers for {len(images)} images")
            for conversation, own, reply in zip(conversations, answers, replies):
                reply = reply.strip()
                conversation.append(_assistant_turn(reply))
                own.append(reply)
        return answers

    @torch.inference_mode()
    def _generate(self, conversations: list[list[Message]], images: list[Image.Image]) -> list[str]:
        """One greedy reply per conversation; each conversation's first turn shows its image."""
        from transformers import GenerationConfig

        prompts = self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=prompts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(device=self.model.device, dtype=self.model.dtype)
        tokenizer = self.processor.tokenizer
        pad = self.model.generation_config.pad_token_id
        # Unset fields are filled from the checkpoint's generation config, so every field that
        # could change a greedy reply is pinned here (sampling knobs are unused when greedy).
        config = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
            temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
            pad_token_id=pad if pad is not None else tokenizer.pad_token_id,
        )
        output = self.model.generate(**inputs, generation_config=config)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    @staticmethod
    def _result(parsed: ProtocolAnswers) -> JudgeResult:
        return JudgeResult(
            has_a=parsed.has_a,
            has_b=parsed.has_b,
            both=parsed.objects_ok,
            verdict=parsed.verdict,
            unparseable=[f"q{number}" for number in parsed.unparseable],
            detail={"answers": list(parsed.raw)},
        )

