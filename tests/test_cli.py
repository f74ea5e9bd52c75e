import json
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from rrnet.cli import main
from rrnet.rectifier import RectifierConfig, RelationRectifier


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_then_generate_end_to_end(tiny_model_dir, relation_dir, tmp_path, capsys):
    out = tmp_path / "rect"
    code, stdout, _ = _run(capsys, "train", "--pretrained_model_name_or_path", tiny_model_dir, "--data", relation_dir,
                           "--output_dir", out, "--epochs", 2, "--hidden_size", 16, "--seed", 1, "--no_progress")
    assert code == 0, stdout
    assert (out / "rectifier.safetensors").is_file() and len((out / "train_log.jsonl").read_text().splitlines()) == 2
    gen = tmp_path / "gen"
    args = ["generate", "--model", tiny_model_dir, "--rectifier", out, "--output_dir", gen, "--alpha", 0, 0.5,
            "--num_images", 1, "--steps", 2, "--seed", 3, "--no_progress"]
    assert _run(capsys, *args)[0] == 0
    record = json.loads((gen / "generation.json").read_text())
    assert record["prompts"] == ["a red block above a blue block", "a blue block above a red block"]
    first = np.asarray(Image.open(gen / "grid.png"))
    assert _run(capsys, *args)[0] == 0  # same seed, same images
    assert np.array_equal(first, np.asarray(Image.open(gen / "grid.png")))


def test_generate_reads_every_relation_of_a_prompt_without_flags(tiny_model_dir, tmp_path, capsys):
    torch.manual_seed(0)
    cfg = RectifierConfig(text_width=32, hidden=8, joint_relations=True,
                          triplets=[{"object_a": "red circle", "relation": "above", "object_b": "blue square"},
                                    {"object_a": "green triangle", "relation": "left of", "object_b": "blue square"}])
    RelationRectifier(cfg).save_pretrained(tmp_path / "r")
    caption = "a yellow diamond above a white bar and a pink wedge left of the white bar"
    gen = tmp_path / "g"
    code, out, _ = _run(capsys, "generate", "--model", tiny_model_dir, "--rectifier", tmp_path / "r", "--prompt",
                        caption, "a cat and a dog", "--alpha", 0, 1, "--num_images", 1, "--steps", 2,
                        "--output_dir", gen, "--no_progress")
    assert code == 0, out
    record = json.loads((gen / "generation.json").read_text())
    assert record["rectified"] == {caption: [["yellow diamond", "above", "white bar"], ["pink wedge", "left of", "white bar"]],
                                   "a cat and a dog": []}
    images = {k: np.asarray(Image.open(gen / paths[0])) for k, paths in record["images"][caption].items()}
    assert not np.array_equal(*images.values())  # alpha 1 edits the caption; alpha 0 is the base model
    # a gate above any cosine: no relation counts as collapsed, nothing is edited
    code, out, _ = _run(capsys, "generate", "--model", tiny_model_dir, "--rectifier", tmp_path / "r", "--prompt",
                        caption, "--alpha", 0, 1, "--num_images", 1, "--steps", 2, "--collapse_gate", 1.5,
                        "--output_dir", gen, "--no_progress")
    record = json.loads((gen / "generation.json").read_text())
    assert code == 0 and record["rectified"] == {caption: []} and record["settings"]["collapse_gate"] == 1.5
    images = [np.asarray(Image.open(gen / paths[0])) for paths in record["images"][caption].values()]
    assert np.array_equal(*images)


def _one_line_error(code, err, fragment):
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]  # --no_progress: nothing else on stderr
    assert len(lines) == 1 and lines[0].startswith("rrnet: error:") and fragment in lines[0], err
    assert "Traceback" not in err


def _train(capsys, model, data, tmp_path, *extra):
    return _run(capsys, "train", "--model", model, "--data", data, "--output_dir", tmp_path / "o", "--epochs", 1,
                "--hidden_size", 8, "--no_progress", *extra)


def test_missing_data_folder(tiny_model_dir, tmp_path, capsys):
    code, _, err = _train(capsys, tiny_model_dir, tmp_path / "nowhere", tmp_path)
    _one_line_error(code, err, "nowhere")


def test_bad_manifest(tiny_model_dir, relation_dir, tmp_path, capsys):
    (relation_dir / "index.json").write_text("{not json")
    code, _, err = _train(capsys, tiny_model_dir, relation_dir, tmp_path)
    _one_line_error(code, err, "index.json")


def test_word_not_in_prompt(tiny_model_dir, relation_dir, tmp_path, capsys):
    index = json.loads((relation_dir / "index.json").read_text())
    index["R"] = "under"
    (relation_dir / "index.json").write_text(json.dumps(index))
    code, _, err = _train(capsys, tiny_model_dir, relation_dir, tmp_path)
    _one_line_error(code, err, "'under' is not in the prompt")


def test_overlong_prompt(tiny_model_dir, relation_dir, tmp_path, capsys):
    index = json.loads((relation_dir / "index.json").read_text())
    index["ARB"] = index["ARB"] + " in a room" * 40
    (relation_dir / "index.json").write_text(json.dumps(index))
    code, _, err = _train(capsys, tiny_model_dir, relation_dir, tmp_path)
    _one_line_error(code, err, "at most 77")


def test_missing_model(relation_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _train(capsys, tmp_path / "empty", relation_dir, tmp_path)
    _one_line_error(code, err, "not a diffusers model folder")


def test_bad_numbers(tiny_model_dir, relation_dir, tmp_path, capsys):
    code, _, err = _train(capsys, tiny_model_dir, relation_dir, tmp_path, "--epochs", 0)
    _one_line_error(code, err, "--epochs: must be a positive integer")


def test_mismatched_rectifier_width(tiny_model_dir, tmp_path, capsys):
    cfg = RectifierConfig(text_width=48, hidden=8, triplets=[{"object_a": "cat", "relation": "on", "object_b": "mat"}],
                          prompts=[["a cat on a mat", "a mat on a cat"]])
    RelationRectifier(cfg).save_pretrained(tmp_path / "wide")
    code, _, err = _run(capsys, "generate", "--model", tiny_model_dir, "--rectifier", tmp_path / "wide",
                        "--output_dir", tmp_path / "g", "--steps", 1, "--no_progress")
    _one_line_error(code, err, "width 48")


def test_missing_rectifier_and_foreign_prompt(tiny_model_dir, tmp_path, capsys):
    code, _, err = _run(capsys, "generate", "--model", tiny_model_dir, "--rectifier", tmp_path / "none",
                        "--output_dir", tmp_path / "g", "--no_progress")
    _one_line_error(code, err, "not found")
    torch.manual_seed(0)
    cfg = RectifierConfig(text_width=32, hidden=8, triplets=[{"object_a": "cat", "relation": "on", "object_b": "mat"}])
    RelationRectifier(cfg).save_pretrained(tmp_path / "r")
    code, _, err = _run(capsys, "generate", "--model", tiny_model_dir, "--rectifier", tmp_path / "r", "--prompt",
                        "a dog under a table", "--output_dir", tmp_path / "g", "--steps", 1, "--no_progress", "--strict")
    _one_line_error(code, err, "no relation this rectifier knows")
    assert not (tmp_path / "g").exists()


def test_console_command_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rrnet.cli", "train", "--model", str(tmp_path / "m"),
                           "--data", str(tmp_path / "d"), "--output_dir", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "rrnet: error:" in proc.stderr
