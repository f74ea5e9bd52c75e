"""`rrnet evaluate` and `rrnet experiment` on two CPU processes (torchrun, accelerate launch):
the same images, verdicts and counts as one process, the work really split, one writer."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rrnet.cli import main
from rrnet.world.exemplars import write_relation_folder
from rrnet.world.record import shipped_backbone

RELATIONS = [("red circle", "above", "blue square"), ("green triangle", "left of", "yellow diamond")]
SAMPLING = ["--num_images", "3", "--seed", "4", "--steps", "3", "--batch_size", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", "rrnet"]


def accelerate_launch(*flags: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "rrnet"]


def launch(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    for a, rel, b in RELATIONS:
        write_relation_folder(root, a, rel, b, n_images=2, size=32, seed=1)
    return root


def evaluate_args(bench: Path, out: Path) -> list[str]:
    return ["--verbose", "evaluate", "--model", str(shipped_backbone()), "--benchmark", str(bench), *SAMPLING,
            "--judge", "exact", "--no_progress", "--output_dir", str(out)]


@pytest.fixture(scope="module")
def one_process(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "eval"
    assert main(evaluate_args(bench, out)) == 0
    return out


@pytest.fixture(scope="module")
def two_processes(bench, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend: torchrun cannot join two CPU processes")
    out = tmp_path_factory.mktemp("two") / "eval"
    done = launch([*torchrun(2), *evaluate_args(bench, out)], out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def counts(results: dict) -> list:
    return [(row["label"], row["images"], row["judged"]) for row in results["rows"]]


def files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))
            if not p.name.startswith(".")}  # a temporary file a kill left behind is never read as an image


def shares(stderr: str, what: str) -> dict[int, int]:
    """Per process, how many items it reported taking (from `rrnet --verbose` notes)."""
    return {int(i): int(n) for i, n in re.findall(rf"process (\d) of 2: {what} (\d+) of", stderr)}


def test_torchrun_two_processes_give_the_images_and_counts_of_one(one_process, two_processes):
    out, done = two_processes
    one = json.loads((one_process / "results.json").read_text())
    two = json.loads((out / "results.json").read_text())
    assert counts(two) == counts(one)
    assert two["generation"]["processes"] == 2 and one["generation"]["processes"] == 1
    total = 2 * len(RELATIONS) * 3
    assert one["generation"]["images_generated_per_process"] == [total]
    per_process = two["generation"]["images_generated_per_process"]
    assert sum(per_process) == total and all(n > 0 for n in per_process)  # both processes sampled
    assert shares(done.stderr, "sampling") == dict(enumerate(per_process))
    judged = shares(done.stderr, "judging")
    assert sorted(judged) == [0, 1] and sum(judged.values()) == total and all(judged.values())
    assert files(out / "images", "*.png") == files(one_process / "images", "*.png")  # same seeds, same batches
    assert len(files(out / "images", "*.png")) == total
    for name in ("generation.json", "judgement-*.json"):  # records and verdict caches: written once, by the main process
        assert files(out / "images", name) == files(one_process / "images", name)
    assert (out / "table.md").read_text() == (one_process / "table.md").read_text()
    assert done.stdout.count("results in") == 1  # only the main process reports
    assert not list(out.parent.glob(".*.lock"))


def test_a_plain_run_starts_no_process_group(one_process):
    from accelerate import PartialState

    from rrnet.processes import current_processes

    assert not torch.distributed.is_initialized()
    assert PartialState._shared_state == {}
    processes = current_processes()
    assert not processes.several and processes.is_main and processes.split([1, 2, 3]) == [1, 2, 3]
    assert processes.gather([4]) == [4] and processes.broadcast(5) == 5 and processes.from_main(lambda: 6) == 6
    assert PartialState._shared_state == {}


def test_accelerate_launch_multi_gpu_runs_two_cpu_processes_and_resumes(bench, one_process, two_processes, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` starts two CPU processes; on a folder with
    images and verdicts missing it makes and judges only those, and the counts stay those of one."""
    out = tmp_path / "eval"
    shutil.copytree(two_processes[0], out)
    folders = sorted(p.parent for p in out.rglob("generation.json"))
    (folders[0] / "000.png").unlink()
    (folders[1] / "002.png").write_bytes(b"")  # a zero-byte image is missing, not present
    for cache in folders[2].glob("judgement-*.json"):
        cache.unlink()
    done = launch([*accelerate_launch("--multi_gpu", "--num_processes", "2"), *evaluate_args(bench, out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["generation"]["processes"] == 2
    assert results["generation"]["images_generated_this_run"] == 2
    assert counts(results) == counts(json.loads((one_process / "results.json").read_text()))
    assert files(out / "images", "*.png") == files(one_process / "images", "*.png")
    # the two images come back with their old bytes, so their cached verdicts stand: one folder is judged
    assert sum(shares(done.stderr, "judging").values()) == 3
    assert files(out / "images", "judgement-*.json") == files(one_process / "images", "judgement-*.json")


def test_accelerate_launch_cpu_is_reported_to_start_one_process(monkeypatch, caplog):
    """`accelerate launch --cpu --num_processes 2` (or `--num_processes 2` without GPUs and without
    --multi_gpu) starts one process with MASTER_ADDR set and no WORLD_SIZE: the run goes on alone
    and says how to start several."""
    from rrnet.processes import current_processes

    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with caplog.at_level("WARNING", logger="rrnet"):
        processes = current_processes("cpu")
    assert not processes.several
    assert "accelerate launch started one process" in caplog.text and "--multi_gpu --num_processes N" in caplog.text
    monkeypatch.delenv("MASTER_ADDR")  # `accelerate launch --cpu` with one process asked for: nothing to say
    caplog.clear()
    with caplog.at_level("WARNING", logger="rrnet"):
        current_processes("cpu")
    assert caplog.text == ""


def test_a_locked_folder_stops_every_process_with_one_line(bench, tmp_path):
    from rrnet.locking import folder_lock

    out = tmp_path / "eval"
    with folder_lock(out):
        done = launch([*torchrun(2), *evaluate_args(bench, out)], tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("rrnet: error:")]
    assert len(errors) == 1 and "in use by another rrnet run" in errors[0]
    assert not out.exists() or not any(out.iterdir())


KILL_RANK_1 = """
import os, re, signal, sys
if os.environ.get("RANK") == "1":  # SIGKILL this process right after its first image is in place
    original = os.replace
    def replace(src, dst, *args, **kwargs):
        result = original(src, dst, *args, **kwargs)
        if re.fullmatch(r"\\d{3}\\.png", os.path.basename(str(dst))):
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    os.replace = replace
from rrnet.cli import main
sys.exit(main())
"""


def test_a_killed_process_leaves_nothing_read_as_complete(bench, one_process, tmp_path):
    """SIGKILL one process of two mid-generation (the launcher then stops the other): no results,
    no verdicts, and a plain run afterwards ends with the images and counts of an unbroken run."""
    script = tmp_path / "killed.py"
    script.write_text(KILL_RANK_1)
    out = tmp_path / "eval"
    done = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                   *evaluate_args(bench, out)], tmp_path)
    assert done.returncode != 0
    assert not (out / "results.json").exists() and not list(out.rglob("judgement-*.json"))
    assert 0 < len(files(out, "*.png")) < 2 * len(RELATIONS) * 3
    assert main(evaluate_args(bench, out)) == 0  # one process, the same folder
    results = json.loads((out / "results.json").read_text())
    assert counts(results) == counts(json.loads((one_process / "results.json").read_text()))
    assert files(out / "images", "*.png") == files(one_process / "images", "*.png")


def test_experiment_trains_its_models_across_two_processes(bench, tmp_path):
    """Each process trains its share of the models, to the weights one process trains."""
    from safetensors.torch import load_file

    from rrnet.backbones.loading import load_pipeline
    from rrnet.data import find_relations
    from rrnet.train import TrainConfig, train_rectifier

    args = ["--verbose", "experiment", "--model", str(shipped_backbone()), "--benchmark", str(bench),
            "--variants", "rrnet", "--epochs", "1", "--hidden_size", "8", "--alpha", "1", "--ablation_alpha", "1",
            "--num_images", "1", "--steps", "2", "--judge", "exact", "--no_progress", "--output_dir", str(tmp_path / "two")]
    done = launch([*torchrun(2), *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert shares(done.stderr, "training") == {0: 1, 1: 1}  # one relation's rectifier each
    pipe = load_pipeline(str(shipped_backbone()), device="cpu", progress=False)
    for spec in find_relations(bench):
        reference, _ = train_rectifier(pipe, spec, TrainConfig(epochs=1, seed=0, hidden=8), progress=False)
        trained = load_file(tmp_path / "two" / "checkpoints" / "rrnet" / spec.name / "rectifier.safetensors")
        expected = reference.state_dict()
        assert trained.keys() == expected.keys()
        assert all(torch.equal(trained[k], expected[k]) for k in trained)
    record = json.loads((tmp_path / "two" / "experiment.json").read_text())
    assert sorted(record["trained"]["trained"]) == sorted(f"rrnet/{spec.name}" for spec in find_relations(bench))
    results = json.loads((tmp_path / "two" / "evaluation" / "results.json").read_text())
    assert results["generation"]["processes"] == 2 and sum(results["generation"]["images_generated_per_process"]) == 8
    assert done.stdout.count("# rrnet experiment") == 1  # the main process reports
