"""Resumable training: a run killed (SIGKILL) or stopped (Ctrl-C) at any point and resumed ends
with the same weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from rrnet.cli import main
from rrnet.errors import CheckpointError
from rrnet.rectifier import RelationRectifier

from kill_switch import run_killed

EPOCHS = 2  # 10 pair steps, one checkpoint after each


def _train_args(model, data, out, *extra):
    return ["train", "--model", model, "--data", data, "--output_dir", out, "--epochs", EPOCHS, "--hidden_size", 16,
            "--heads", 2, "--seed", 3, "--no_progress", *extra]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture(scope="module")
def relation_folder(tmp_path_factory):
    from conftest import write_relation

    return write_relation(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, relation_folder, tmp_path_factory):
    """The reference: the same run, never stopped."""
    out = tmp_path_factory.mktemp("ref") / "rect"
    assert main([str(a) for a in _train_args(tiny_model_dir, relation_folder, out)]) == 0
    return out


def _assert_same_result(out, reference):
    assert (out / "rectifier.safetensors").read_bytes() == (reference / "rectifier.safetensors").read_bytes()
    assert json.loads((out / "config.json").read_text()) == json.loads((reference / "config.json").read_text())
    assert (out / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()  # all epochs, once


def _assert_not_loadable(out):
    with pytest.raises(CheckpointError):
        RelationRectifier.from_pretrained(out)


@pytest.mark.parametrize(("when", "pattern"), [
    ("after", r"^checkpoint-3$"),   # between two steps: the next step is lost
    ("before", r"^checkpoint-7$"),  # mid-swap: the checkpoint sits complete under its temporary name
    ("before", r"^config\.json$"),  # the last write: new weights on disk, config not yet
], ids=["after-checkpoint", "mid-swap", "final-write"])
def test_killed_run_resumes_bit_for_bit(tiny_model_dir, relation_folder, uninterrupted, tmp_path, capsys, when, pattern):
    out = tmp_path / "rect"
    args = _train_args(tiny_model_dir, relation_folder, out, "--checkpointing_steps", 1)
    killed = run_killed(when, pattern, *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if when == "before" and "checkpoint" in pattern:
        assert (out / ".checkpoint-7.complete").is_dir() and not (out / "checkpoint-7").exists()
    _assert_not_loadable(out)  # nothing a later run reads as a finished rectifier
    code, err = _run(capsys, *args)  # a plain re-run does not clobber the checkpoints
    assert code == 2 and "--resume_from_checkpoint latest" in err and len(err.strip().splitlines()) == 1
    code, err = _run(capsys, *args, "--resume_from_checkpoint", "latest")
    assert code == 0, err
    _assert_same_result(out, uninterrupted)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tiny_model_dir, relation_folder, uninterrupted, tmp_path,
                                                           capsys):
    out = tmp_path / "rect"
    args = _train_args(tiny_model_dir, relation_folder, out)  # no --checkpointing_steps: Ctrl-C still saves one
    # Ctrl-C right after the log is started: the first step is under way
    child = run_killed("interrupt", r"^train_log\.jsonl$", *args)
    stderr = child.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert child.returncode == 130 and len(lines) == 1, stderr
    assert lines[0].startswith("rrnet: interrupted at step") and "--resume_from_checkpoint latest" in lines[0]
    assert any(p.name.startswith("checkpoint-") for p in out.iterdir())
    _assert_not_loadable(out)
    code, err = _run(capsys, *args, "--resume_from_checkpoint", "latest")
    assert code == 0, err
    _assert_same_result(out, uninterrupted)


def test_finished_folder_is_refused_unless_overwrite(tiny_model_dir, relation_folder, uninterrupted, tmp_path, capsys):
    out = tmp_path / "rect"
    args = _train_args(tiny_model_dir, relation_folder, out)
    assert _run(capsys, *args)[0] == 0
    before = (out / "rectifier.safetensors").read_bytes()
    code, err = _run(capsys, *args)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "rectifier.safetensors").read_bytes() == before
    code, err = _run(capsys, *args, "--overwrite")
    assert code == 0, err
    _assert_same_result(out, uninterrupted)


def test_resume_refuses_other_settings(tiny_model_dir, relation_folder, tmp_path, capsys):
    out = tmp_path / "rect"
    assert _run(capsys, *_train_args(tiny_model_dir, relation_folder, out, "--checkpointing_steps", 5))[0] == 0
    (out / "config.json").unlink()
    code, err = _run(capsys, *_train_args(tiny_model_dir, relation_folder, out, "--learning_rate", 1e-3,
                                          "--resume_from_checkpoint", "latest"))
    assert code == 2 and "learning_rate" in err and len(err.strip().splitlines()) == 1


def test_longer_run_continues_from_a_checkpoint(tiny_model_dir, relation_folder, uninterrupted, tmp_path, capsys):
    """Resuming with more epochs continues the same streams: 1 epoch + 1 more == 2 epochs."""
    out = tmp_path / "rect"
    one = _train_args(tiny_model_dir, relation_folder, out, "--checkpointing_steps", 5)
    one[one.index("--epochs") + 1] = 1
    assert _run(capsys, *one)[0] == 0
    code, err = _run(capsys, *_train_args(tiny_model_dir, relation_folder, out, "--resume_from_checkpoint", "latest"))
    assert code == 0, err
    _assert_same_result(out, uninterrupted)


def _baseline_args(model, data, out, *extra):
    return ["baseline", "lora", "--model", model, "--data", data, "--output_dir", out, "--epochs", 2, "--seed", 1,
            "--no_progress", *extra]


@pytest.fixture(scope="module")
def baseline_reference(tiny_model_dir, relation_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "lora"
    assert main([str(a) for a in _baseline_args(tiny_model_dir, relation_folder, out)]) == 0
    return out


@pytest.mark.parametrize(("when", "pattern"), [
    ("after", r"^checkpoint-3$"),                              # between two steps
    ("before", r"^pytorch_lora_weights\.safetensors$"),        # training done, the weights not yet written
    ("before", r"^baseline\.json$"),                           # the last write: the record
], ids=["after-checkpoint", "before-weights", "before-record"])
def test_baseline_killed_and_resumed_matches(tiny_model_dir, relation_folder, baseline_reference, tmp_path, capsys,
                                             when, pattern):
    from rrnet.experiment import checkpoint_done

    reference = baseline_reference
    out = tmp_path / "lora"
    args = _baseline_args(tiny_model_dir, relation_folder, out, "--checkpointing_steps", 1)
    killed = run_killed(when, pattern, *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "baseline.json").exists() and not checkpoint_done(out, "lora")
    code, err = _run(capsys, *args, "--resume_from_checkpoint", "latest")
    assert code == 0, err
    a, b = load_file(reference / "pytorch_lora_weights.safetensors"), load_file(out / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_non_finite_loss_stops_with_one_line_and_no_rectifier(tiny_model_dir, relation_folder, tmp_path, capsys):
    out = tmp_path / "rect"
    code, err = _run(capsys, *_train_args(tiny_model_dir, relation_folder, out, "--learning_rate", "1e30"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "loss became" in err, err
    assert not (out / "rectifier.safetensors").exists() and not (out / "config.json").exists()


def test_interrupted_retraining_never_leaves_the_old_rectifier_loadable(tiny_pipe, relation_folder, tmp_path,
                                                                        monkeypatch):
    """Old weights beside a new log would load silently and count as finished: the old result goes first."""
    import rrnet.train as train
    from rrnet.data import load_relation
    from rrnet.experiment import checkpoint_done
    from rrnet.resume import Checkpointing

    out = tmp_path / "rect"
    spec = load_relation(relation_folder)
    train.train_rectifier(tiny_pipe, spec, train.TrainConfig(epochs=1, hidden=8, heads=1), out, progress=False)
    assert checkpoint_done(out, "rrnet")
    calls = []
    real = train.pair_step_loss

    def dies_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "pair_step_loss", dies_at_the_third_step)
    with pytest.raises(RuntimeError, match="killed"):
        train.train_rectifier(tiny_pipe, spec, train.TrainConfig(epochs=2, hidden=8, heads=1, seed=5), out,
                              progress=False, checkpointing=Checkpointing(overwrite=True))
    assert not checkpoint_done(out, "rrnet")
    _assert_not_loadable(out)
