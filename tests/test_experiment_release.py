"""`rrnet experiment` lets go of the diffusion pipeline before a judge model loads."""

from __future__ import annotations

import gc
import weakref

from rrnet.eval.judges.base import JudgeResult
from rrnet.eval.runner import EvalSettings
from rrnet.experiment import ExperimentConfig, released_before, run_experiment
from rrnet.train import TrainConfig

from conftest import write_relation


class CountingJudge:
    """A judge that answers "correct" for every image; built by a factory that checks the pipeline."""

    name = "fake"
    label = "fake"

    def describe(self):
        return {"judge": self.name}

    def judge(self, images, query):
        return [JudgeResult(True, True, True, "ARB") for _ in images]


def test_released_before_calls_release_first():
    calls = []
    [factory] = released_before([lambda: calls.append("judge") or CountingJudge()], lambda: calls.append("release"))
    assert calls == []  # nothing happens until the judge is wanted
    assert isinstance(factory(), CountingJudge) and calls == ["release", "judge"]


def test_experiment_releases_the_pipeline_before_judging(tiny_model_dir, tmp_path):
    from rrnet.backbones.loading import load_pipeline

    write_relation(tmp_path / "bench")
    pipes, alive_when_judging = [], []

    def load_pipe():
        pipe = load_pipeline(str(tiny_model_dir), device="cpu", progress=False)
        pipes.append(weakref.ref(pipe))
        return pipe

    def judge_factory():
        gc.collect()
        alive_when_judging.append(any(ref() is not None for ref in pipes))
        return CountingJudge()

    config = ExperimentConfig(train=TrainConfig(epochs=1, hidden=8, heads=1), variants=("rrnet",), alphas=(0.5,),
                              evaluation=EvalSettings(num_images=1, steps=1, batch_size=1))
    out = run_experiment(load_pipe, "tiny", tmp_path / "bench", tmp_path / "out", [judge_factory], config,
                         progress=False)
    assert pipes and alive_when_judging == [False]
    assert {row["method"] for row in out["results"]["rows"]} == {"dataset", "base", "rrnet"}
