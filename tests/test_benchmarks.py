"""Benchmark scripts stay runnable: each runs once, tiny, on the CPU (no timing is checked)."""

import sys

import pytest


def _run(module, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    module.main()
    return capsys.readouterr().out


def test_gpu_train_runs_on_cpu_with_the_tiny_shape(monkeypatch, capsys):
    from benchmarks import gpu_train

    out = _run(gpu_train, ["--device", "cpu", "--tiny", "--steps", "1", "--mixed_precision", "no"], monkeypatch, capsys)
    assert "reference (fp32" in out and "fast (no" in out


def test_generate_overhead_runs(monkeypatch, capsys):
    from benchmarks import generate_overhead

    out = _run(generate_overhead, ["--backbones", "tiny", "--reps", "1", "--steps", "2", "--threads", "1"], monkeypatch, capsys)
    assert "| tiny |" in out


@pytest.mark.parametrize("method", ["reference", "fast"])
def test_train_speed_worker_runs(monkeypatch, capsys, method):
    from benchmarks import train_speed

    out = _run(train_speed, ["--worker", "--backbone", "tiny", "--method", method, "--epochs", "1", "--reps", "1",
                             "--threads", "1"], monkeypatch, capsys)
    assert '"steps_per_s"' in out
