"""The VLM judge: tiny random Qwen2-VL / LLaVA / LLaVA-NeXT end to end, scripted answers, errors.

Everything is built offline: a character-level tokenizer with each family's special tokens and
a chat template of our own, small image processors, and random models of a few thousand weights.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from rrnet.errors import RRNetError
from rrnet.eval.judges.base import Judge, JudgeQuery
from rrnet.eval.judges.vlm import VLMJudge
from rrnet.eval.vlm_protocol import judge_from_answers, questions

QUERY = JudgeQuery("book", "on", "bowl", "a book on a bowl", "a bowl on a book")
MAX_NEW_TOKENS = 12

# ---------------------------------------------------------------------------------------------
# Offline tokenizers, chat templates, tiny models
# ---------------------------------------------------------------------------------------------

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIALS = ["<pad>", "<s>", "</s>", "<image>"]

# ChatML as Qwen2-VL writes it: a default system turn, the image as vision-start/pad/end tokens.
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Vicuna style as LLaVA 1.5 uses it: "USER: <image>\n... ASSISTANT: ...</s>".
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% if message['role'] == 'assistant' %}</s>{% else %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def char_tokenizer(specials: list[str], **special_roles: str):
    """One token per printable character plus whole special tokens; decodes by concatenation."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, extra_special_tokens=specials, **special_roles)


def tiny_llama_text(vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def tiny_qwen2_vl(v2_5: bool = False):
    """Qwen2-VL or Qwen2.5-VL: 56x56-pixel images (4 merged image tokens), one text and one vision layer."""
    import transformers.processing_utils
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )
    from transformers.video_processing_utils import VideoProcessorMixin

    tokenizer = char_tokenizer(QWEN_SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = tokenizer.convert_tokens_to_ids
    torch.manual_seed(0)
    vision = {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    if v2_5:
        vision = {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "out_hidden_size": 32, "num_heads": 2,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                  "fullatt_block_indexes": [0]}
    config = (Qwen2_5_VLConfig if v2_5 else Qwen2VLConfig)(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids("<|endoftext|>"), "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    model = (Qwen2_5_VLForConditionalGeneration if v2_5 else Qwen2VLForConditionalGeneration)(config)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    # transformers 5.24 without torchvision cannot resolve the video processor's base class by name
    # (its lookup table is a torchvision placeholder); the judge never sends videos, so a bare
    # video processor and a pointer to its class are enough to build the processor here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.processing_utils.transformers_module, "VideoProcessorMixin",
                      VideoProcessorMixin, raising=False)
        processor = (Qwen2_5_VLProcessor if v2_5 else Qwen2VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                     video_processor=VideoProcessorMixin(), chat_template=QWEN_TEMPLATE)
    return model, processor


def tiny_llava(next_: bool = False):
    """LLaVA 1.5 (28x28 crops, 4 image tokens) or LLaVA-NeXT (any-res tiles up to 56 pixels)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    tokenizer = char_tokenizer(LLAVA_SPECIALS, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14, projection_dim=16)
    common = {"vision_config": vision, "text_config": LlamaConfig(**tiny_llama_text(len(tokenizer))),
              "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
              "vision_feature_layer": -2, "vision_feature_select_strategy": "default"}
    processor_args = {"tokenizer": tokenizer, "patch_size": 14, "vision_feature_select_strategy": "default",
                      "num_additional_image_tokens": 1, "chat_template": LLAVA_TEMPLATE}
    torch.manual_seed(0)
    if next_:
        pinpoints = [[28, 28], [28, 56], [56, 28]]
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=pinpoints, **common))
        image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                     image_grid_pinpoints=pinpoints)
        return model, LlavaNextProcessor(image_processor=image_processor, **processor_args)
    model = LlavaForConditionalGeneration(LlavaConfig(**common))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return model, LlavaProcessor(image_processor=image_processor, **processor_args)


BUILDERS = {"qwen2-vl": tiny_qwen2_vl, "qwen2.5-vl": lambda: tiny_qwen2_vl(v2_5=True), "llava": tiny_llava, "llava-next": lambda: tiny_llava(next_=True)}


def scenes() -> list[Image.Image]:
    """Three small images of different sizes and modes (one RGBA, converted by the judge)."""
    return [Image.new("RGB", (48, 40), (200, 30, 30)), Image.new("RGBA", (30, 60), (30, 30, 200, 255)),
            Image.new("RGB", (64, 64), (30, 160, 30))]


# ---------------------------------------------------------------------------------------------
# 1-2. Tiny random models end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_tiny_random_vlm_end_to_end(family):
    model, processor = BUILDERS[family]()
    judge = VLMJudge(model, processor, model_id=f"/models/tiny-{family}", batch_size=2,
                     max_new_tokens=MAX_NEW_TOKENS)
    assert isinstance(judge, Judge) and judge.name == "vlm"
    assert judge.label == f"tiny-{family}" and processor.tokenizer.padding_side == "left"
    described = judge.describe()
    assert described["family"] == family and described["model"] == f"/models/tiny-{family}"
    assert described["dtype"] == "float32" and described["max_new_tokens"] == MAX_NEW_TOKENS

    results = judge.judge(scenes(), QUERY)
    assert len(results) == 3
    for result in results:
        answers = result.detail["answers"]
        assert len(answers) == 5 and all(isinstance(answer, str) for answer in answers)
        # a random model writes gibberish: question 5 is unreadable and nothing is guessed
        assert result.verdict is None and "q5" in result.unparseable
        parsed = judge_from_answers(answers, QUERY.prompt, QUERY.swapped_prompt)
        assert result.unparseable == [f"q{number}" for number in parsed.unparseable]
        assert (result.has_a, result.has_b, result.both) == (parsed.has_a, parsed.has_b, parsed.objects_ok)

    again = judge.judge(scenes(), QUERY)
    assert [r.detail["answers"] for r in again] == [r.detail["answers"] for r in results]  # greedy


def test_from_pretrained_loads_a_saved_llava_folder(tmp_path):
    model, processor = tiny_llava()
    model.save_pretrained(tmp_path / "tiny-llava")
    processor.save_pretrained(tmp_path / "tiny-llava")
    direct = VLMJudge(model, processor, max_new_tokens=MAX_NEW_TOKENS).judge(scenes()[:1], QUERY)

    judge = VLMJudge.from_pretrained(str(tmp_path / "tiny-llava"), device="cpu", dtype="fp32",
                                     max_new_tokens=MAX_NEW_TOKENS)
    assert judge.label == "tiny-llava" and judge.family == "llava" and judge.describe()["dtype"] == "float32"
    loaded = judge.judge(scenes()[:1], QUERY)
    assert loaded[0].detail == direct[0].detail


def test_qwen_processor_without_torchvision_is_one_clear_line(tmp_path):
    from transformers.utils import is_torchvision_available

    model, processor = tiny_qwen2_vl()
    model.save_pretrained(tmp_path / "tiny-qwen")
    processor.save_pretrained(tmp_path / "tiny-qwen")
    if is_torchvision_available():
        assert VLMJudge.from_pretrained(str(tmp_path / "tiny-qwen"), device="cpu").family == "qwen2-vl"
        return
    with pytest.raises(RRNetError, match="processor.*torchvision") as caught:
        VLMJudge.from_pretrained(str(tmp_path / "tiny-qwen"), device="cpu")
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# 3. Scripted answers
# ---------------------------------------------------------------------------------------------


def fake_model(model_type: str = "qwen2_vl"):
    model = SimpleNamespace(config=SimpleNamespace(model_type=model_type, _name_or_path="org/Fake-VL-7B"),
                            dtype=torch.bfloat16)
    model.eval = lambda: model
    return model


def fake_processor():
    tokenizer = SimpleNamespace(padding_side="right", pad_token=None, eos_token="</s>")
    return SimpleNamespace(tokenizer=tokenizer, chat_template="{{ messages }}")


class ScriptedJudge(VLMJudge):
    """Answers from a script (one list of five answers per image colour); records every call."""

    def __init__(self, script: dict[tuple, list[str]], **kwargs):
        super().__init__(fake_model(), fake_processor(), **kwargs)
        self.script = script
        self.calls: list[tuple[list, list]] = []

    def _generate(self, conversations, images):
        self.calls.append(([[dict(m) for m in c] for c in conversations], list(images)))
        turn = (len(conversations[0]) - 1) // 2
        return [self.script[image.getpixel((0, 0))][turn] for image in images]


RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 160, 30)
CLEAR = ["Yes, there is a book.", "Yes, there is a bowl.", "Yes, both are present.",
         "The book rests on the bowl.", "A book on a bowl."]
NO_BOWL = ["Yes.", "No.", "No, only a book.", "There is no bowl.", "Neither."]
UNCLEAR = ["Maybe.", "", "Yes, both are present.", "Hard to say.",
           "Either a book on a bowl or a bowl on a book."]


def image(color) -> Image.Image:
    return Image.new("RGB", (8, 8), color)


def test_scripted_answers_map_to_results():
    judge = ScriptedJudge({RED: CLEAR, BLUE: NO_BOWL, GREEN: UNCLEAR})
    assert judge.label == "Fake-VL-7B" and judge.processor.tokenizer.pad_token == "</s>"
    clear, no_bowl, unclear = judge.judge([image(RED), image(BLUE), image(GREEN)], QUERY)

    assert (clear.has_a, clear.has_b, clear.both, clear.verdict) == (True, True, True, "ARB")
    assert clear.correct and clear.unparseable == [] and clear.detail == {"answers": CLEAR}
    assert (no_bowl.has_a, no_bowl.has_b, no_bowl.both, no_bowl.verdict) == (True, False, False, "neither")
    assert no_bowl.unparseable == []
    # unclear answers are reported, never guessed; question 4 is not scored
    assert (unclear.has_a, unclear.has_b, unclear.both, unclear.verdict) == (False, False, False, None)
    assert unclear.unparseable == ["q1", "q2", "q5"] and unclear.detail["answers"] == UNCLEAR


def test_swapped_query_flips_the_verdict():
    judge = ScriptedJudge({RED: CLEAR})
    [swapped] = judge.judge([image(RED)], QUERY.swapped())
    assert swapped.verdict == "BRA" and not swapped.correct and swapped.both
    assert judge.calls[-1][0][0][-1]["content"][0]["text"] == questions(
        "bowl", "book", "a bowl on a book", "a book on a bowl")[4]


def test_conversation_is_multi_turn_with_the_image_only_in_the_first_turn():
    judge = ScriptedJudge({RED: CLEAR, BLUE: NO_BOWL})
    judge.judge([image(RED), image(BLUE)], QUERY)
    asked = questions(QUERY.object_a, QUERY.object_b, QUERY.prompt, QUERY.swapped_prompt)
    assert len(judge.calls) == 5
    for turn, (conversations, images) in enumerate(judge.calls):
        assert [im.getpixel((0, 0)) for im in images] == [RED, BLUE]
        for conversation, script in zip(conversations, (CLEAR, NO_BOWL)):
            assert [m["role"] for m in conversation] == ["user", "assistant"] * turn + ["user"]
            users = [m for m in conversation if m["role"] == "user"]
            assert [m["content"][-1]["text"] for m in users] == asked[: turn + 1]
            assert users[0]["content"][0] == {"type": "image"}
            assert all(part["type"] == "text" for m in conversation[1:] for part in m["content"])
            assert [m["content"][0]["text"] for m in conversation if m["role"] == "assistant"] == script[:turn]


def test_images_are_batched_and_results_keep_their_order():
    judge = ScriptedJudge({RED: CLEAR, BLUE: NO_BOWL, GREEN: UNCLEAR}, batch_size=2)
    colors = [RED, BLUE, GREEN, RED, GREEN]
    results = judge.judge([image(c) for c in colors], QUERY)
    assert [r.verdict for r in results] == ["ARB", "neither", None, "ARB", None]
    assert [len(images) for _, images in judge.calls] == [2] * 5 + [2] * 5 + [1] * 5
    assert judge.judge([], QUERY) == []


def test_describe_keys_everything_that_changes_answers():
    base = ScriptedJudge({}).describe()
    assert base["judge"] == "vlm" and base["model"] == "org/Fake-VL-7B" and base["family"] == "qwen2-vl"
    assert base["dtype"] == "bfloat16" and base["decoding"] == "greedy" and base["max_new_tokens"] == 64
    assert len(base["questions"]) == 12
    assert ScriptedJudge({}, max_new_tokens=32).describe() != base


# ---------------------------------------------------------------------------------------------
# 4. Errors
# ---------------------------------------------------------------------------------------------


def test_unsupported_model_type_is_refused():
    with pytest.raises(RRNetError, match="model_type 'bert'"):
        VLMJudge(fake_model("bert"), fake_processor())


def test_unsupported_saved_model_is_refused_before_loading_weights(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(**tiny_llama_text(16)).save_pretrained(tmp_path / "llama")
    with pytest.raises(RRNetError, match="model_type 'llama'") as caught:
        VLMJudge.from_pretrained(str(tmp_path / "llama"), device="cpu")
    assert "\n" not in str(caught.value)


def test_missing_folder_and_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(RRNetError, match="not found") as caught:
        VLMJudge.from_pretrained(str(tmp_path / "missing"))
    assert "\n" not in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RRNetError, match="cannot load the config") as caught:
        VLMJudge.from_pretrained(str(tmp_path / "empty"))
    assert "\n" not in str(caught.value)
    with pytest.raises(RRNetError, match="dtype"):
        VLMJudge.from_pretrained(str(tmp_path / "missing"), dtype="int3")
    with pytest.raises(RRNetError, match="batch_size"):
        VLMJudge(fake_model(), fake_processor(), batch_size=0)
    processor = fake_processor()
    processor.chat_template = None
    with pytest.raises(RRNetError, match="chat template"):
        VLMJudge(fake_model(), processor)
