"""A corpus of bad inputs, each run through the command line: one `rrnet: error:` line, exit 2,
no traceback, and nothing left in the output folder (nor its lock beside it)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrnet.cli import main
from rrnet.rectifier import RectifierConfig, RelationRectifier

from conftest import write_relation

Setup = Callable[["Case"], list]


class Case:
    """Paths one bad input needs: the tiny model, a good relation folder, the output folder."""

    def __init__(self, tmp_path: Path, model: Path) -> None:
        self.tmp, self.model = tmp_path, model
        self.data = write_relation(tmp_path / "data")
        self.out = tmp_path / "out"

    def index(self, **changes):
        path = self.data / "index.json"
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))

    def image(self, folder: str = "arb") -> Path:
        return self.data / folder / "0.png"

    def train(self, *extra) -> list:
        return ["train", "--model", self.model, "--data", self.data, "--output_dir", self.out, "--epochs", 1,
                "--hidden_size", 8, "--heads", 1, "--no_progress", *extra]

    def generate(self, *extra, rectifier: Path | None = None) -> list:
        args = ["generate", "--model", self.model, "--output_dir", self.out, "--steps", 1, "--num_images", 1,
                "--no_progress", *extra]
        return args + (["--rectifier", rectifier] if rectifier else ["--prompt", "a red block above a blue block"])

    def evaluate(self, *extra) -> list:
        return ["evaluate", "--model", self.model, "--benchmark", self.data.parent, "--output_dir", self.out,
                "--num_images", 1, "--steps", 1, "--judge", "exact", "--no_progress", *extra]

    def baseline(self, *extra) -> list:
        return ["baseline", "lora", "--model", self.model, "--data", self.data, "--output_dir", self.out,
                "--epochs", 1, "--no_progress", *extra]

    def analyze(self, *extra) -> list:
        return ["analyze", "osp", "--model", self.model, "--output_dir", self.out, "--no_progress",
                "--pairs", "a red block above a blue block|a blue block above a red block", *extra]

    def rectifier(self, width: int = 32, **config) -> Path:
        folder = self.tmp / "rect"
        cfg = RectifierConfig(text_width=width, hidden=8, heads=1,
                              triplets=[{"object_a": "red block", "relation": "above", "object_b": "blue block"}],
                              prompts=[["a red block above a blue block", "a blue block above a red block"]])
        RelationRectifier(cfg).save_pretrained(folder)
        if config:
            path = folder / "config.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
        return folder

    def model_copy(self) -> Path:
        copy = self.tmp / "model"
        shutil.copytree(self.model, copy)
        return copy


def _png16_rgb(path: Path, value: int, size: int = 16) -> None:
    """A 48-bit RGB PNG written by hand (PIL cannot write one)."""
    raw = b"".join(b"\0" + struct.pack(">HHH", value, 0, 0) * size for _ in range(size))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _animated(path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _replace_image(c: Case, write) -> list:
    path = c.image()
    path.unlink()
    write(path)
    return c.train()


def _symlink_loop(c: Case) -> list:
    shutil.rmtree(c.data / "arb")
    os.symlink(c.data / "arb", c.data / "arb")
    return c.train()


def _pickled_unet(c: Case) -> list:
    model = c.model_copy()
    for f in (model / "unet").glob("*.safetensors"):
        f.unlink()
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"weights": 1}))
    return c.train()[:2] + [model] + c.train()[3:]


def _pickle_as_safetensors(c: Case) -> list:
    folder = c.rectifier()
    (folder / "rectifier.safetensors").write_bytes(pickle.dumps({"hgcn": torch.zeros(2)}))
    return c.generate(rectifier=folder)


def _nan_weights(c: Case) -> list:
    from safetensors.torch import load_file, save_file

    folder = c.rectifier()
    state = load_file(folder / "rectifier.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, folder / "rectifier.safetensors",
              metadata={"format": "rrnet-rectifier"})
    return c.generate(rectifier=folder)


def _output_file(c: Case) -> list:
    c.out.write_text("not a folder")
    return c.train()


def _output_under_file(c: Case) -> list:
    (c.tmp / "file").write_text("x")
    c.out = c.tmp / "file" / "out"
    return c.generate()


def _no_checkpoint(c: Case) -> list:
    return c.train("--resume_from_checkpoint", "latest")


def _not_a_checkpoint(c: Case) -> list:
    (c.tmp / "ckpt").mkdir()
    return c.train("--resume_from_checkpoint", c.tmp / "ckpt")


CORPUS: dict[str, Setup] = {
    # data: missing, empty, unreadable, malformed
    "data missing": lambda c: c.train()[:4] + [c.tmp / "nowhere"] + c.train()[5:],
    "data folder empty": lambda c: (shutil.rmtree(c.data), c.data.mkdir(), c.train())[-1],
    "index.json not utf-8": lambda c: ((c.data / "index.json").write_bytes(b"\xff\xfe{\x00"), c.train())[-1],
    "index.json invalid": lambda c: ((c.data / "index.json").write_text("{not json"), c.train())[-1],
    "index.json a list": lambda c: ((c.data / "index.json").write_text("[1, 2]"), c.train())[-1],
    "index.json missing key": lambda c: (c.index(BRA=None), c.train())[-1],
    "index.json wrong type": lambda c: (c.index(A=3), c.train())[-1],
    "index.json unknown key": lambda c: (c.index(catgory="position"), c.train())[-1],
    "index.json folder missing": lambda c: (c.index(ARB_dir="nowhere"), c.train())[-1],
    "image folder empty": lambda c: ([p.unlink() for p in (c.data / "arb").iterdir()], c.train())[-1],
    # images
    "zero-byte image": lambda c: _replace_image(c, lambda p: p.write_bytes(b"")),
    "truncated image": lambda c: (_truncate(c.image()), c.train())[-1],
    "text named .png": lambda c: _replace_image(c, lambda p: p.write_text("hello")),
    "animated image": lambda c: _replace_image(c, lambda p: _animated(p)),
    "decompression bomb": lambda c: _replace_image(c, lambda p: Image.new("1", (20000, 20000)).save(p, format="PNG")),
    "huge image": lambda c: _replace_image(c, lambda p: Image.new("1", (12000, 12000)).save(p, format="PNG")),
    "1x1 image": lambda c: _replace_image(c, lambda p: Image.new("RGB", (1, 1)).save(p, format="PNG")),
    "symlink loop": _symlink_loop,
    # words and prompts
    "relation not in prompt": lambda c: (c.index(R="under"), c.train())[-1],
    "object repeated in prompt": lambda c: (c.index(ARB="a red block above a blue block near a red block"), c.train())[-1],
    "relation equals object": lambda c: (c.index(R="red block", ARB="a red block red block a blue block"), c.train())[-1],
    "A equals B": lambda c: (c.index(B="red block"), c.train())[-1],
    "swapped equals prompt": lambda c: (c.index(BRA="a red block above a blue block"), c.train())[-1],
    "swapped keeps the order": lambda c: (c.index(BRA="the red block above the blue block"), c.train())[-1],
    "over-long prompt": lambda c: (c.index(ARB="a red block above a blue block" + " in a big room" * 30), c.train())[-1],
    "emoji object": lambda c: (c.index(A="\U0001f436", ARB="a \U0001f436 above a blue block",
                                       BRA="a blue block above a \U0001f436"), c.train())[-1],
    "control character": lambda c: (c.index(ARB="a red block\nabove a blue block"), c.train())[-1],
    # numbers
    "epochs zero": lambda c: c.train("--epochs", "0"),
    "epochs negative": lambda c: c.train("--epochs", "-3"),
    "epochs not a number": lambda c: c.train("--epochs", "ten"),
    "learning_rate nan": lambda c: c.train("--learning_rate", "nan"),
    "learning_rate inf": lambda c: c.train("--learning_rate", "inf"),
    "learning_rate zero": lambda c: c.train("--learning_rate", "0"),
    "weight_decay negative": lambda c: c.train("--weight_decay", "-1"),
    "disentangle_noise nan": lambda c: c.train("--disentangle_noise", "nan"),
    "positive_weight inf": lambda c: c.train("--positive_weight", "inf"),
    "hidden_size zero": lambda c: c.train("--hidden_size", "0"),
    "hidden_size huge": lambda c: c.train("--hidden_size", str(10**12)),
    "heads not an integer": lambda c: c.train("--heads", "1.5"),
    "seed negative": lambda c: c.train("--seed", "-1"),
    "seed 2**70": lambda c: c.train("--seed", str(2**70)),
    "resolution 7": lambda c: c.train("--resolution", "7"),
    "resolution 100000": lambda c: c.train("--resolution", "100000"),
    "checkpointing_steps zero": lambda c: c.train("--checkpointing_steps", "0"),
    "alpha nan": lambda c: c.generate("--alpha", "nan"),
    "alpha inf": lambda c: c.generate("--alpha", "0", "inf"),
    "guidance_scale nan": lambda c: c.generate("--guidance_scale", "nan"),
    "num_images zero": lambda c: c.generate("--num_images", "0"),
    "steps negative": lambda c: c.generate("--steps", "-2"),
    "evaluate guidance -inf": lambda c: c.evaluate("--guidance_scale=-inf"),
    "evaluate judge_batch_size zero": lambda c: c.evaluate("--judge_batch_size", "0"),
    "lora rank zero": lambda c: c.baseline("--rank", "0"),
    "lora alpha nan": lambda c: c.baseline("--lora_alpha", "nan"),
    "triplet A equals B": lambda c: c.generate("--triplet", "red block", "above", "red block"),
    "tiny-backbone seed 2**70": lambda c: ["tiny-backbone", c.out, "--seed", str(2**70)],
    "world exemplars seed negative": lambda c: ["world", "exemplars", "--relation", "red circle", "above",
                                                "blue square", "--output_dir", c.out, "--seed", "-1"],
    "world benchmark num_images nan": lambda c: ["world", "benchmark", "--output_dir", c.out, "--num_images", "nan"],
    "world build unet_steps zero": lambda c: ["world", "build", "--output_dir", c.out, "--unet_steps", "0"],
    "world build tune_steps negative": lambda c: ["world", "build", "--output_dir", c.out, "--tune_steps", "-1"],
    "world build sampler unknown": lambda c: ["world", "build", "--output_dir", c.out, "--sampler", "euler"],
    "world build from_model missing": lambda c: ["world", "build", "--output_dir", c.out, "--from_model", str(c.tmp / "none")],
    "world build from_model not a world": lambda c: ["world", "build", "--output_dir", c.out, "--from_model", str(c.tmp)],
    # output folder
    "output is a file": _output_file,
    "output under a file": _output_under_file,
    "analyze output is a file": lambda c: (c.out.write_text("not a folder"), c.analyze())[-1],
    "analyze device unknown": lambda c: c.analyze("--device", "quantum"),
    "analyze rectifier NaN weights": lambda c: c.analyze("--rectifier", _nan_weights(c)[-1]),
    # rectifier files
    "rectifier missing": lambda c: c.generate(rectifier=c.tmp / "none"),
    "rectifier garbage": lambda c: ((c.rectifier() / "rectifier.safetensors").write_bytes(b"garbage" * 10),
                                    c.generate(rectifier=c.tmp / "rect"))[-1],
    "pickle named .safetensors": _pickle_as_safetensors,
    "rectifier NaN weights": _nan_weights,
    "config wrong types": lambda c: c.generate(rectifier=c.rectifier(hidden="8")),
    "config unknown key": lambda c: c.generate(rectifier=c.rectifier(depth=3)),
    "config format_version 99": lambda c: c.generate(rectifier=c.rectifier(format_version=99)),
    "config foreign format": lambda c: c.generate(rectifier=c.rectifier(format="something-else")),
    "rectifier for another width": lambda c: c.generate(rectifier=c.rectifier(width=48)),
    # checkpoints
    "resume without checkpoints": _no_checkpoint,
    "resume from a non-checkpoint": _not_a_checkpoint,
    # model and device
    "model without model_index.json": lambda c: ((c.tmp / "m").mkdir(), c.train()[:2] + [c.tmp / "m"] + c.train()[3:])[-1],
    "model folder missing": lambda c: c.train()[:2] + [c.tmp / "no-model"] + c.train()[3:],
    "pickled UNet weights": _pickled_unet,
    "device unknown": lambda c: c.train("--device", "quantum"),
    "device tpu": lambda c: c.train("--device", "tpu"),
    "device cuda:99": lambda c: c.train("--device", "cuda:99"),
}
if not torch.cuda.is_available():
    CORPUS["device cuda without CUDA"] = lambda c: c.generate("--device", "cuda")


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_input_ends_in_one_line(name, tiny_model_dir, tmp_path, capfd):
    case = Case(tmp_path, tiny_model_dir)
    argv = [str(a) for a in CORPUS[name](case)]
    before = case.out.read_bytes() if case.out.is_file() else None
    capfd.readouterr()
    code = main(argv)
    captured = capfd.readouterr()  # the process's real stderr: library log lines would show here too
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("rrnet: error:"), captured.err
    assert "Traceback" not in captured.err
    if before is not None:
        assert case.out.read_bytes() == before  # the file named as the output folder is untouched
    else:
        assert not case.out.exists()
    assert not (case.out.parent / f".{case.out.name}.lock").exists()


# Unusual but valid images are read, with the right colours (these are not bad inputs)
@pytest.mark.parametrize("kind", ["16-bit grey", "16-bit rgb", "cmyk", "palette", "jpeg named .png"])
def test_unusual_images_load_with_their_colours(kind, tmp_path):
    from rrnet.data import load_image

    path = tmp_path / "x.png"
    if kind == "16-bit grey":
        Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(path)
        expected = (1.0, 1.0, 1.0)
    elif kind == "16-bit rgb":
        _png16_rgb(path, 65535)
        expected = (1.0, -1.0, -1.0)
    elif kind == "cmyk":
        Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, format="JPEG", quality=100)
        expected = (1.0, -1.0, -1.0)
    elif kind == "palette":
        image = Image.new("P", (16, 16), 1)
        image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
        image.save(path)
        expected = (-1.0, -1.0, 1.0)
    else:
        Image.new("RGB", (16, 16), (0, 255, 0)).save(path, format="JPEG", quality=100)
        expected = (-1.0, 1.0, -1.0)
    loaded = load_image(path, 8)
    assert torch.allclose(loaded.mean(dim=(1, 2)), torch.tensor(expected), atol=0.05), loaded.mean(dim=(1, 2))
