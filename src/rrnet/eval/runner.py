"""The benchmark runner: generate every prompt of every relation per method setting, judge, count.

Layout under the output folder (all resumable)::

    images/<method>/<setting>/<relation>/<k>_<prompt slug>/
        000.png ...                 image k is sampled with seed + k (the same for every setting)
        generation.json             model, method, prompt, seeds, sampler settings
        judgement-<judge>-<key>.json   cached verdicts per image file (keyed by the judge's identity)
    fid_reference.npz, fid/         cached FID statistics of the reference folder and of each row
    results.json, table.md, tradeoff.png

Images already on disk are not generated again, and a folder made with other settings is an
error rather than being mixed into the new numbers. Each image folder is keyed by the content of
what produced it (the model's files, the checkpoint's weights and config): a checkpoint retrained
in place makes its folders stale, and they are made again. A zero-byte or truncated image counts
as missing. Verdicts are cached per image content and judge identity, so adding a judge later
judges only with the new judge. Everything checkable (checkpoints, prompts, judge vocabulary) is
checked before the first file is written, and the output folder is locked for the run. Each relation is
evaluated on both of its prompts: "A R B" judged as such, and "B R A" judged with A and B swapped.

A benchmark may also hold scene folders (`rrnet.data.scenes`: one prompt stating several relations).
A scene is evaluated on every prompt its folder records: the prompt, and per relation the prompt
with that relation's objects swapped (the scene's analogue of "both directions"); each prompt's
images are judged against the relations that prompt states, one verdict per relation, by a judge
with `judge_scene` (the exact judge). Images are sampled, cached and reused exactly as for
relations, under `images/<method>/<setting>/<scene>/<k>_<prompt slug>/` (k = 0 for the prompt,
k = j + 1 for relation j swapped).
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from rrnet.atomic import atomic_write_text, remove_leftovers
from rrnet.data import RelationSpec, save_image_atomic
from rrnet.data.scenes import SceneSpec
from rrnet.errors import DataError, RRNetError
from rrnet.eval import fid as fidlib
from rrnet.eval.judges.base import Judge, JudgeQuery, JudgeResult, SceneQuery, SceneResult, judges_scenes
from rrnet.eval.methods import Method, setting_label
from rrnet.eval.metrics import (CATEGORIES, SceneTally, Tally, infer_category, scene_relation_counts, scene_tally,
                                summarize, tally)
from rrnet.generate import GenerationSettings, prompt_folder, sample_images
from rrnet.processes import Processes, current_processes
from rrnet.validation import check_prompts

FORMAT = "rrnet-evaluation/1"
PAPER_ALPHAS = (0.2, 0.4, 0.6, 1.0)
RECORD_NAME = "generation.json"

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """Sampling and counting settings; defaults follow the paper (100 images, 30 steps, 7.5)."""

    num_images: int = 100
    seed: int = 0
    steps: int = 30
    guidance_scale: float = 7.5
    resolution: int | None = None
    batch_size: int = 8
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("num_images", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise RRNetError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.resolution is not None and self.resolution < 8:
            raise RRNetError(f"resolution must be at least 8, got {self.resolution}")
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise RRNetError(f"guidance_scale must be a finite number >= 0, got {self.guidance_scale}")
        if not 0 <= self.seed < 2**63 - self.num_images:
            raise RRNetError(f"seed must be from 0 to 2**63 - num_images, got {self.seed}")

    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.num_images)]


Item = RelationSpec | SceneSpec  # one member of a benchmark folder


def item_prompts(spec: Item) -> list[str]:
    """The prompts a benchmark member is evaluated on: a relation's prompt and its swap; a scene's
    prompt and, per relation, the prompt with that relation's objects swapped."""
    if isinstance(spec, SceneSpec):
        return [prompt for prompt, _ in spec.prompt_relations()]
    return [spec.prompt, spec.swapped_prompt]


@dataclass(frozen=True)
class PromptJob:
    """One prompt of one relation (or scene) under one method setting: a folder of images."""

    method: str
    setting: float | None
    spec: Item
    side: int  # relation: 0 its prompt (A R B), 1 its swapped prompt (B R A); scene: 0 its prompt, j + 1 relation j swapped
    folder: Path
    sources: tuple[Path, ...] | None = None  # existing images to judge instead of generated ones

    @property
    def prompt(self) -> str:
        return item_prompts(self.spec)[self.side]

    @property
    def query(self) -> JudgeQuery | SceneQuery:
        s = self.spec
        if isinstance(s, SceneSpec):
            prompt, relations = s.prompt_relations()[self.side]
            return SceneQuery(relations, prompt)
        query = JudgeQuery(s.object_a, s.relation, s.object_b, s.prompt, s.swapped_prompt)
        return query if self.side == 0 else query.swapped()

    def image_paths(self, n: int) -> list[Path]:
        if self.sources is not None:
            return list(self.sources)
        return [self.folder / f"{k:03d}.png" for k in range(n)]


@dataclass
class Row:
    """One line of the results table: a method at one setting."""

    method: str
    setting: float | None
    jobs: list[PromptJob] = field(default_factory=list)
    reuses: str | None = None  # the row whose images this row judges instead of making its own

    @property
    def label(self) -> str:
        return self.method if self.setting is None else f"{self.method} (alpha={self.setting:g})"


def relation_category(spec: RelationSpec) -> str:
    """The spec's own category when given (position/action), else inferred from the relation word."""
    if spec.category is None:
        return infer_category(spec.relation)
    category = spec.category.strip().lower()
    if category not in CATEGORIES:
        raise DataError(f"{spec.source}: category must be one of {list(CATEGORIES)}, got {spec.category!r}")
    return category


def scene_category(spec: SceneSpec) -> str:
    """The scene's own category when given, else its relations' common category ("mixed" if they differ)."""
    if spec.category is not None:
        category = spec.category.strip().lower()
        if category not in CATEGORIES:
            raise DataError(f"{spec.source}: category must be one of {list(CATEGORIES)}, got {spec.category!r}")
        return category
    found = {infer_category(relation) for _, relation, _ in spec.relations}
    return found.pop() if len(found) == 1 else "mixed"


DATASET = "dataset"


def dataset_row(specs: Sequence[Item], output_dir: Path) -> Row:
    """The exemplar images themselves, judged like generated ones (the paper's "RR Dataset" line):
    how often the judge agrees with images that show the relation by construction."""
    row = Row(DATASET, None)
    for spec in specs:
        if isinstance(spec, SceneSpec):
            sources = (spec.images_prompt, *spec.images_swapped)
        else:
            sources = (spec.images_prompt, spec.images_swapped)
        for side, (prompt, images) in enumerate(zip(item_prompts(spec), sources, strict=True)):
            folder = output_dir / DATASET / spec.name / prompt_folder(side, prompt)
            row.jobs.append(PromptJob(DATASET, None, spec, side, folder, tuple(images)))
    return row


def reuse_base_images(rows: Sequence[Row], n: int) -> None:
    """alpha = 0 leaves a prompt's embedding exactly the base model's, so such rows judge the base
    row's images instead of generating the same images again."""
    base = next((row for row in rows if row.method == "base"), None)
    if base is None:
        return
    jobs = {(job.spec.name, job.side): job for job in base.jobs}
    for row in rows:
        if row.method not in ("base", DATASET) and row.setting is not None and float(row.setting) == 0.0:
            row.jobs = [dataclasses.replace(job, folder=jobs[(job.spec.name, job.side)].folder,  # its judgements too
                                            sources=tuple(jobs[(job.spec.name, job.side)].image_paths(n)))
                        for job in row.jobs]
            row.reuses = base.label


def plan(specs: Sequence[Item], methods: Sequence[Method], output_dir: Path) -> list[Row]:
    """Rows (method x setting) with their prompt folders, in a stable order."""
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise DataError(f"relation names must be unique in a benchmark, got {names}")
    method_names = [m.name for m in methods]
    if len(set(method_names)) != len(method_names):
        raise RRNetError(f"method names must be unique, got {method_names}")
    rows = []
    for method in methods:
        for setting in method.settings():
            row = Row(method.name, setting)
            base = output_dir / "images" / method.name / setting_label(setting)
            for spec in specs:
                for side, prompt in enumerate(item_prompts(spec)):
                    row.jobs.append(PromptJob(method.name, setting, spec, side, base / spec.name / prompt_folder(side, prompt)))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def _record(job: PromptJob, method: Method, model_id: str, settings: EvalSettings,
            producer: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model_id, "method": method.describe(), "setting": job.setting, "relation": job.spec.name,
        "prompt": job.prompt, "seed": settings.seed, "steps": settings.steps,
        "guidance_scale": settings.guidance_scale, "resolution": settings.resolution, "producer": producer,
    }


def image_ok(path: Path) -> bool:
    """A complete, readable image file: a zero-byte or truncated PNG is missing, not present."""
    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many unrelated types for broken files
        return False


def _check_record(job: PromptJob, record: dict[str, Any]) -> bool:
    """Refuse to mix images made with different settings into one folder; return True when the
    folder's images were made by other content (a retrained checkpoint, a changed model): stale."""
    path = job.folder / RECORD_NAME
    if not path.is_file():
        return any(job.folder.glob("[0-9][0-9][0-9].png"))  # images of unknown origin
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not an object")
    except (OSError, UnicodeDecodeError, ValueError):
        return True  # an unreadable record vouches for nothing
    changed = sorted(k for k in record if k not in ("producer", "seeds") and old.get(k) != record[k])
    if changed:
        raise DataError(f"{job.folder}: images were made with different {', '.join(changed)}; use another --output_dir")
    return old.get("producer") != record["producer"]


def discard_images(folder: Path) -> None:
    """Remove a folder's images and verdicts, its record first (they describe other content)."""
    (folder / RECORD_NAME).unlink(missing_ok=True)
    for path in [*folder.glob("[0-9][0-9][0-9].png"), *folder.glob("judgement-*.json")]:
        path.unlink(missing_ok=True)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs (start, count) of sorted indices, so missing images are sampled in batches."""
    runs: list[tuple[int, int]] = []
    for k in indices:
        if runs and runs[-1][0] + runs[-1][1] == k:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((k, 1))
    return runs


def missing_images(rows: Sequence[Row], settings: EvalSettings) -> int:
    return sum(not image_ok(p) for row in rows for job in row.jobs if job.sources is None
               for p in job.image_paths(settings.num_images))


@dataclass
class GenerationReport:
    """What a run generated, and which folders it found stale and made again."""

    generated: int = 0
    stale: list[str] = field(default_factory=list)
    per_process: list[int] = field(default_factory=list)  # images each process of the run made


def generate_rows(
    load_pipe: Callable[[], Any], model_id: str, methods: Sequence[Method], rows: Sequence[Row],
    settings: EvalSettings, progress: bool = True, processes: Processes | None = None,
    report_dir: Path | None = None,
) -> GenerationReport:
    """Generate the images not on disk yet; the pipeline is only loaded if any are missing.

    Every folder is keyed by the content of what produces it (model, checkpoint) and by the
    settings: other settings are refused, other content makes the folder stale and it is made
    again. All conditionings are computed before the first image is written, so a prompt or
    checkpoint that cannot be used stops the run before any work is written. With several
    `processes` each samples its share of the batches (`generate_shared`). With `report_dir`, the
    report a previous run wrote there is removed once the settings check has passed.
    """
    if processes is not None and processes.several:
        return generate_shared(load_pipe, model_id, methods, rows, settings, processes, progress, report_dir)
    rows = _rows_to_generate(rows, methods)
    report, records = _prepare_folders(model_id, methods, rows, settings, report_dir)
    todo = missing_images(rows, settings)
    if todo == 0:
        return report
    pipe = load_pipe()
    work = []  # (method, spec, jobs): every relation of every method with images to make
    for method in methods:
        method_rows = [row for row in rows if row.method == method.name]
        specs = {job.spec.name: job.spec for row in method_rows for job in row.jobs}
        for name, spec in specs.items():
            jobs = [job for row in method_rows for job in row.jobs if job.spec.name == name]
            jobs = [job for job in jobs if not all(image_ok(p) for p in job.image_paths(settings.num_images))]
            if jobs:
                work.append((method, spec, jobs))
    conditioning = {}
    for method, spec, jobs in work:  # first pass: nothing is written until every conditioning works
        with method.applied(pipe, spec) as condition:
            for job in jobs:
                conditioning[job.folder] = condition(job.prompt, job.setting)
    bar = tqdm(total=todo, desc="generate", unit="img", disable=not progress)
    for method, spec, jobs in work:
        with method.applied(pipe, spec):
            for job in jobs:
                bar.update(_generate_job(pipe, conditioning[job.folder], job, records[job.folder], settings))
    bar.close()
    report.generated = todo
    report.per_process = [todo]
    return report


def _prepare_folders(model_id: str, methods: Sequence[Method], rows: Sequence[Row], settings: EvalSettings,
                     report_dir: Path | None = None) -> tuple[GenerationReport, dict[Path, dict[str, Any]]]:
    """Each folder's record (what makes its images); a folder made by other content is emptied
    (stale), one made with other settings is refused (before anything is changed). Then the
    previous report in `report_dir` goes: it describes images this run may replace, and until
    the new report is written the folder must not read as finished (a kill mid-run)."""
    from rrnet.eval.provenance import model_digest
    from rrnet.eval.report import PLOT_NAME, RESULTS_NAME, TABLE_NAME

    by_name = {m.name: m for m in methods}
    report = GenerationReport()
    model_fingerprint = model_digest(model_id)
    fingerprints: dict[tuple[str, str], str | None] = {}
    records: dict[Path, dict[str, Any]] = {}
    for row in rows:
        method = by_name[row.method]
        for job in row.jobs:
            key = (method.name, job.spec.name)
            if key not in fingerprints:
                fingerprint = getattr(method, "fingerprint", None)
                fingerprints[key] = fingerprint(job.spec) if fingerprint else None
            record = _record(job, method, model_id, settings,
                             {"model": model_fingerprint, "checkpoint": fingerprints[key]})
            if _check_record(job, record):
                report.stale.append(str(job.folder))
            records[job.folder] = record
    if report_dir is not None:
        for name in (RESULTS_NAME, TABLE_NAME, PLOT_NAME):  # results.json first: the others follow it
            (Path(report_dir) / name).unlink(missing_ok=True)
    for folder in report.stale:
        discard_images(Path(folder))
    return report, records


def _rows_to_generate(rows: Sequence[Row], methods: Sequence[Method]) -> list[Row]:
    """The rows' jobs that sample their own images (not the dataset's, not reused base images)."""
    names = {m.name for m in methods}
    return [Row(row.method, row.setting, [job for job in row.jobs if job.sources is None])
            for row in rows if row.method in names]


def _generate_job(pipe, embeds, job: PromptJob, record: dict[str, Any], settings: EvalSettings) -> int:
    paths = job.image_paths(settings.num_images)
    missing = [k for k, p in enumerate(paths) if not image_ok(p)]
    if not missing:
        return 0
    job.folder.mkdir(parents=True, exist_ok=True)
    if _check_record(job, record):  # checked again at write time, under the folder's lock
        discard_images(job.folder)
        missing = list(range(len(paths)))
    seeds = {p.name: settings.seed + k for k, p in enumerate(paths)}
    atomic_write_text(job.folder / RECORD_NAME, json.dumps({**record, "seeds": seeds}, indent=2) + "\n")
    for start, count in _runs(missing):
        sampling = GenerationSettings(
            num_images=count, seed=settings.seed + start, steps=settings.steps,
            guidance_scale=settings.guidance_scale, resolution=settings.resolution,
        )
        images = sample_images(pipe, embeds, sampling, batch_size=settings.batch_size)
        for offset, image in enumerate(images):
            save_image_atomic(image, paths[start + offset])
    return len(missing)


Batch = tuple[int, int, int, int]  # (row, job, first image, images): one pipeline call


def _batches(rows: Sequence[Row], settings: EvalSettings) -> list[Batch]:
    """The missing images as the pipeline calls one process would make: each run of missing
    images cut into `batch_size` pieces, so a share of them samples the very same batches."""
    out = []
    for r, row in enumerate(rows):
        for j, job in enumerate(row.jobs):
            missing = [k for k, p in enumerate(job.image_paths(settings.num_images)) if not image_ok(p)]
            for start, count in _runs(missing):
                out += [(r, j, first, min(settings.batch_size, start + count - first))
                        for first in range(start, start + count, settings.batch_size)]
    return out


def generate_shared(
    load_pipe: Callable[[], Any], model_id: str, methods: Sequence[Method], rows: Sequence[Row],
    settings: EvalSettings, processes: Processes, progress: bool = True, report_dir: Path | None = None,
) -> GenerationReport:
    """`generate_rows` across processes: the main process checks every folder and writes its
    record; each process samples its share of the batches (`split_between_processes`) and writes
    only those images. Image k still uses seed + k in the same batch as in one process, so the
    images are the ones one process makes. A process that fails stops every process."""
    by_name = {m.name: m for m in methods}
    rows = _rows_to_generate(rows, methods)
    records: dict[Path, dict[str, Any]] = {}

    def prepare() -> tuple[GenerationReport, list[Batch]]:
        report, found = _prepare_folders(model_id, methods, rows, settings, report_dir)
        records.update(found)
        return report, _batches(rows, settings)

    report, batches = processes.from_main(prepare)
    todo = sum(batch[3] for batch in batches)
    if todo == 0:
        return report
    mine = processes.split(batches)
    logger.info("process %d of %d: sampling %d of %d images", processes.index, processes.num_processes,
                sum(batch[3] for batch in mine), todo)
    groups: dict[tuple[str, str], list[Batch]] = {}  # (method, relation): this process's batches
    for batch in mine:
        job = rows[batch[0]].jobs[batch[1]]
        groups.setdefault((job.method, job.spec.name), []).append(batch)
    conditioning: dict[Path, Any] = {}
    pipe = None
    with processes.together():  # first pass: nothing is written until every conditioning works
        pipe = load_pipe() if mine else None
        for group in groups.values():
            first = rows[group[0][0]].jobs[group[0][1]]
            with by_name[first.method].applied(pipe, first.spec) as condition:
                for r, j, _, _ in group:
                    job = rows[r].jobs[j]
                    if job.folder not in conditioning:
                        conditioning[job.folder] = condition(job.prompt, job.setting)

    def write_records() -> None:
        jobs = {rows[r].jobs[j].folder: rows[r].jobs[j] for r, j, _, _ in batches}
        for folder, job in jobs.items():
            folder.mkdir(parents=True, exist_ok=True)
            seeds = {p.name: settings.seed + k for k, p in enumerate(job.image_paths(settings.num_images))}
            atomic_write_text(folder / RECORD_NAME, json.dumps({**records[folder], "seeds": seeds}, indent=2) + "\n")

    processes.from_main(write_records)  # a folder's record is on disk before any of its images
    made = 0
    with processes.together():
        bar = tqdm(total=sum(batch[3] for batch in mine), desc="generate", unit="img", disable=not progress)
        for group in groups.values():
            first = rows[group[0][0]].jobs[group[0][1]]
            with by_name[first.method].applied(pipe, first.spec):
                for r, j, start, count in group:
                    job = rows[r].jobs[j]
                    sampling = GenerationSettings(
                        num_images=count, seed=settings.seed + start, steps=settings.steps,
                        guidance_scale=settings.guidance_scale, resolution=settings.resolution,
                    )
                    paths = job.image_paths(settings.num_images)
                    for offset, image in enumerate(sample_images(pipe, conditioning[job.folder], sampling,
                                                                 batch_size=settings.batch_size)):
                        save_image_atomic(image, paths[start + offset])
                    made += count
                    bar.update(count)
        bar.close()
    report.generated = todo
    report.per_process = processes.gather([made])
    return report


# ---------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------


def judge_key(judge: Judge) -> str:
    """Cache key of a judge: its kind plus a hash of everything that identifies it."""
    digest = hashlib.sha256(json.dumps(judge.describe(), sort_keys=True, default=str).encode()).hexdigest()
    return f"{judge.name}-{digest[:12]}"


def _load_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("results", {})
    except (json.JSONDecodeError, AttributeError):
        return {}  # a damaged cache is re-judged, never trusted


def judge_job(judge: Judge, job: PromptJob, n: int, batch_size: int = 16) -> list[JudgeResult] | list[SceneResult]:
    """Verdicts for the job's first `n` images, reusing cached ones whose image bytes are unchanged
    (for a scene's prompt: one verdict per relation of each image)."""
    scene = isinstance(job.query, SceneQuery)
    key = judge_key(judge)
    job.folder.mkdir(parents=True, exist_ok=True)
    cache_path = job.folder / f"judgement-{key}.json"
    cache = _load_cache(cache_path)
    paths = job.image_paths(n)
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: image missing; generate before judging")
    hashes = {p.name: fidlib.file_sha1(p) for p in paths}
    todo = [p for p in paths if cache.get(p.name, {}).get("sha1") != hashes[p.name]]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        results = _judge_files(judge, job, chunk)
        for p, result in zip(chunk, results, strict=True):
            cache[p.name] = {"sha1": hashes[p.name], **result.to_dict()}
        payload = {"judge": judge.describe(), "query": asdict(job.query), "results": cache}
        atomic_write_text(cache_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    parse = SceneResult.from_dict if scene else JudgeResult.from_dict
    out = []
    for p in paths:
        entry = {k: v for k, v in cache[p.name].items() if k != "sha1"}
        out.append(parse(entry))
    return out


def _judge_files(judge: Judge, job: PromptJob, paths: Sequence[Path]) -> list[JudgeResult] | list[SceneResult]:
    """The judge's verdicts on these image files of one prompt job."""
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except Exception as exc:  # PIL raises many unrelated types for broken files
            raise DataError(f"{p}: not a readable image ({' '.join(str(exc).split())[:120]})") from None
    return judge.judge_scene(images, job.query) if isinstance(job.query, SceneQuery) else judge.judge(images, job.query)


def judge_shared(judge: Judge, rows: Sequence[Row], settings: EvalSettings, processes: Processes,
                 progress: bool = True) -> None:
    """Judge every image without a cached verdict across processes: the main process lists them
    (by image hash, as `judge_job` does), each process judges its share
    (`split_between_processes`), and the main process gathers the verdicts (`gather_object`) and
    alone writes the verdict caches. `judge_job` then finds every verdict cached."""
    key = judge_key(judge)
    jobs = list({job.folder: job for row in rows for job in row.jobs}.values())

    def uncached() -> list[tuple[int, str, str]]:
        todo = []
        for i, job in enumerate(jobs):
            cache = _load_cache(job.folder / f"judgement-{key}.json")
            for path in job.image_paths(settings.num_images):
                if not path.is_file():
                    raise DataError(f"{path}: image missing; generate before judging")
                sha1 = fidlib.file_sha1(path)
                if cache.get(path.name, {}).get("sha1") != sha1:
                    todo.append((i, path.name, sha1))
        return todo

    todo = processes.from_main(uncached)
    mine = processes.split(todo)
    logger.info("process %d of %d: judging %d of %d images (%s)", processes.index, processes.num_processes, len(mine),
                len(todo), judge.label)
    verdicts: list[tuple[int, str, str, dict[str, Any]]] = []
    with processes.together():
        bar = tqdm(total=len(mine), desc=f"judge ({judge.label})", unit="img", disable=not progress)
        for i in dict.fromkeys(i for i, _, _ in mine):
            job = jobs[i]
            paths = {p.name: p for p in job.image_paths(settings.num_images)}
            items = [item for item in mine if item[0] == i]
            for start in range(0, len(items), settings.batch_size):
                chunk = items[start:start + settings.batch_size]
                results = _judge_files(judge, job, [paths[name] for _, name, _ in chunk])
                verdicts += [(i, name, sha1, result.to_dict())
                             for (_, name, sha1), result in zip(chunk, results, strict=True)]
                bar.update(len(chunk))
        bar.close()
    gathered = processes.gather(verdicts)

    def store() -> None:
        for i in dict.fromkeys(i for i, _, _, _ in gathered):
            job = jobs[i]
            cache_path = job.folder / f"judgement-{key}.json"
            cache = _load_cache(cache_path)
            cache.update({name: {"sha1": sha1, **result} for j, name, sha1, result in gathered if j == i})
            job.folder.mkdir(parents=True, exist_ok=True)
            payload = {"judge": judge.describe(), "query": asdict(job.query), "results": cache}
            atomic_write_text(cache_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")

    processes.from_main(store)


def judge_rows(judge: Judge, rows: Sequence[Row], settings: EvalSettings, progress: bool = True,
               per_prompt: dict[str, dict[str, Tally]] | None = None,
               scenes: dict[str, list[tuple[PromptJob, list[SceneResult]]]] | None = None,
               processes: Processes | None = None) -> dict[str, dict[str, Tally]]:
    """Per row label, per relation: the tally of this judge's verdicts over both prompts (and, into
    `per_prompt` when given, per row label and prompt: each direction on its own). Scene prompts are
    judged too; their verdicts go, per row label, into `scenes` (see `summarize_scenes`). With
    several `processes` the images are judged across them (`judge_shared`) and only the main
    process counts: the others return {}."""
    if processes is not None and processes.several:
        judge_shared(judge, rows, settings, processes, progress)
        if not processes.is_main:
            return {}
    check = getattr(judge, "check", None)
    if check is not None:
        for job in rows[0].jobs if rows else []:
            check(job.query)
    total = sum(len(job.image_paths(settings.num_images)) for row in rows for job in row.jobs)
    bar = tqdm(total=total, desc=f"judge ({judge.label})", unit="img", disable=not progress)
    out: dict[str, dict[str, Tally]] = {}
    for row in rows:
        per_relation: dict[str, Tally] = {}
        for job in row.jobs:
            results = judge_job(judge, job, settings.num_images, settings.batch_size)
            bar.update(len(results))
            if isinstance(job.spec, SceneSpec):
                if scenes is not None:
                    scenes.setdefault(row.label, []).append((job, results))
                continue
            counts = tally(results)
            per_relation[job.spec.name] = per_relation.get(job.spec.name, Tally()) + counts
            if per_prompt is not None:
                per_prompt.setdefault(row.label, {})[job.prompt] = counts
        out[row.label] = per_relation
    bar.close()
    return out


def summarize_scenes(judged: Sequence[tuple[PromptJob, list[SceneResult]]], confidence: float = 0.95) -> dict[str, Any]:
    """One method setting's scene numbers: pooled over every scene prompt (`overall`), per scene
    (its prompts pooled) and per prompt (with each of its relations on its own)."""
    per_scene: dict[str, SceneTally] = {}
    prompts = []
    for job, results in judged:
        counts = scene_tally(results)
        per_scene[job.spec.name] = per_scene.get(job.spec.name, SceneTally()) + counts
        relations = job.query.relations
        prompts.append({"scene": job.spec.name, "side": job.side, "prompt": job.prompt,
                        "relations": [list(t) for t in relations], **counts.summary(confidence),
                        "per_relation": scene_relation_counts(relations, results, confidence)})
    return {"overall": sum(per_scene.values(), SceneTally()).summary(confidence),
            "scenes": {name: counts.summary(confidence) for name, counts in per_scene.items()},
            "prompts": prompts}


# ---------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------


@dataclass
class FIDOptions:
    """A reference image folder and the feature extractor (Inception weights) to compare with."""

    reference: Path
    extractor: fidlib.FeatureExtractor
    weights: str


def row_fid(row: Row, options: FIDOptions, settings: EvalSettings, output_dir: Path) -> float:
    """FID of all the row's images (every relation, both prompts) against the reference folder.

    Both sides' statistics are cached (`fid_reference.npz`, `fid/<method>-<setting>.npz`) and
    reused while the extractor and the image files are unchanged.
    """
    paths = [p for job in row.jobs for p in job.image_paths(settings.num_images)]
    fingerprint = fidlib.files_fingerprint(paths)
    cache = output_dir / "fid" / f"{row.method}-{setting_label(row.setting)}.npz"
    stats = None
    if cache.is_file():
        try:
            cached = fidlib.load_statistics(cache)
        except DataError:
            cached = None
        if cached is not None and (cached.extractor_name, cached.fingerprint) == (options.extractor.name, fingerprint):
            stats = cached
    if stats is None:
        features = fidlib.features_of(fidlib.image_file_tensors(paths), options.extractor)
        stats = fidlib.compute_statistics(features, options.extractor.name, fingerprint)
        fidlib.save_statistics(cache, stats)
    reference = fidlib.reference_statistics(options.reference, options.extractor, output_dir / "fid_reference.npz")
    return fidlib.frechet_distance(stats, reference)


# ---------------------------------------------------------------------------------------------
# The whole evaluation
# ---------------------------------------------------------------------------------------------

JudgeSource = Judge | Callable[[], Judge]


def as_judge(source: JudgeSource) -> Judge:
    """A judge, built now if `source` is a factory."""
    return source if isinstance(source, Judge) and not isinstance(source, type) else source()


def evaluate(
    load_pipe: Callable[[], Any],
    model_id: str,
    specs: Sequence[Item],
    methods: Sequence[Method],
    judges: Sequence[JudgeSource],
    output_dir: str | Path,
    settings: EvalSettings | None = None,
    fid: FIDOptions | None = None,
    benchmark: str | None = None,
    progress: bool = True,
    include_dataset: bool = False,
    processes: Processes | None = None,
) -> dict[str, Any]:
    """Generate what is missing, judge with each judge (loaded one at a time), count, write the report.

    Judges may be given as factories so a large judge model is only loaded after generation
    has finished and released the diffusion model. Everything checkable is checked before the
    first file is written; the output folder is locked for the run. `specs` may mix relations and
    scenes (`SceneSpec`).

    Launched on several processes (`accelerate launch`, `torchrun`; `processes` defaults to what
    the environment says, see `rrnet.processes`), every process calls this with the same
    arguments: sampling and judging are split between them, the main process holds the lock,
    writes every record and returns the results; the others return {}.
    """
    processes = processes or current_processes()
    progress = progress and processes.is_main
    settings = settings or EvalSettings()
    output_dir = Path(output_dir)
    if not specs:
        raise DataError("no relations to evaluate")
    if not judges:
        raise RRNetError("at least one judge is needed")
    categories = {spec.name: scene_category(spec) if isinstance(spec, SceneSpec) else relation_category(spec)
                  for spec in specs}
    rows = plan(specs, methods, output_dir)
    if include_dataset:
        rows.insert(0, dataset_row(specs, output_dir))
    reuse_base_images(rows, settings.num_images)
    check_inputs(model_id, specs, methods, judges, rows)
    with processes.main_lock(output_dir):  # one writer: settings are checked and images written under it
        return _evaluate_locked(load_pipe, model_id, specs, methods, judges, output_dir, settings, fid, benchmark,
                                progress, rows, categories, processes)


def check_inputs(model_id: str, specs: Sequence[Item], methods: Sequence[Method],
                 judges: Sequence[JudgeSource], rows: Sequence[Row]) -> None:
    """Everything that can be checked without the diffusion model, before anything is written:
    every checkpoint opens, every prompt fits the text encoder and holds its relation's words,
    every judge can judge every relation; with scenes, every method and judge handles prompts
    stating several relations."""
    check_scene_support([spec for spec in specs if isinstance(spec, SceneSpec)], methods, judges)
    for method in methods:
        check = getattr(method, "check", None)
        for spec in specs if check else ():
            check(spec)
    queries = list(dict.fromkeys(job.query for row in rows for job in row.jobs))
    for source in judges:
        check = getattr(source, "check", None)
        for query in queries if check else ():
            check(query)
    check_prompts(model_id, specs)


def check_scene_support(scenes: Sequence[SceneSpec], methods: Sequence[Method], judges: Sequence[JudgeSource]) -> None:
    """Refuse, with one line, a method or judge that cannot serve prompts stating several relations:
    a method without `scenes = True` conditions on one relation's words, and a judge without
    per-relation verdicts could only give a scene one verdict."""
    if not scenes:
        return
    first = scenes[0].name
    for method in methods:
        if not getattr(method, "scenes", False):
            raise RRNetError(f"method {method.name} conditions on one relation and cannot evaluate scene {first!r} "
                             "(a prompt stating several relations); scenes take the base model, --rectifier and "
                             "--rectifiers")
    for source in judges:
        if not judges_scenes(source):
            kind = getattr(source, "kind", "") or getattr(source, "name", "") or type(source).__name__
            raise RRNetError(f"the {kind} judge gives one verdict per image for one relation, not one per relation "
                             f"of a prompt stating several (scene {first!r}); judge scene benchmarks with --judge exact")


def _evaluate_locked(load_pipe, model_id, specs, methods, judges, output_dir: Path, settings: EvalSettings, fid,
                     benchmark, progress, rows, categories, processes: Processes) -> dict[str, Any]:
    from rrnet.eval.report import PLOT_NAME, RESULTS_NAME, TABLE_NAME, write_report

    if processes.is_main:  # temporaries a killed run left: half-written images, verdicts, reports
        for folder in dict.fromkeys(job.folder for row in rows for job in row.jobs):
            remove_leftovers(folder)
        for name in (RESULTS_NAME, TABLE_NAME, PLOT_NAME):  # in the output folder itself, only rrnet's own
            remove_leftovers(output_dir, of=name)
    report = generate_rows(load_pipe, model_id, methods, rows, settings, progress, processes, report_dir=output_dir)

    judged: dict[str, dict[str, Any]] = {row.label: {} for row in rows}
    judge_info = []
    for source in judges:
        with processes.together():  # every process loads the judge for its share of the images
            judge = as_judge(source)
        if judge.label in (info["label"] for info in judge_info):
            raise RRNetError(f"two judges share the label {judge.label!r}")
        judge_info.append({"label": judge.label, "key": judge_key(judge), **judge.describe()})
        per_prompt: dict[str, dict[str, Tally]] = {}
        scene_verdicts: dict[str, list[tuple[PromptJob, list[SceneResult]]]] = {}
        for label, per_relation in judge_rows(judge, rows, settings, progress, per_prompt, scene_verdicts,
                                              processes).items():
            judged[label][judge.label] = summarize(per_relation, categories, settings.confidence)
            judged[label][judge.label]["prompts"] = {prompt: counts.summary(settings.confidence)
                                                     for prompt, counts in per_prompt.get(label, {}).items()}
            if label in scene_verdicts:
                judged[label][judge.label]["scenes"] = summarize_scenes(scene_verdicts[label], settings.confidence)
        del judge
    if not processes.is_main:
        return {}  # the main process counts, measures FID and writes the report

    fids: dict[str, float | None] = {row.label: None for row in rows}
    if fid is not None:
        for row in tqdm([r for r in rows if r.method != DATASET], desc="FID", disable=not progress):
            fids[row.label] = row_fid(row, fid, settings, output_dir)

    results = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model_id,
        "benchmark": benchmark,
        "generation": {**asdict(settings), "seeds": settings.seeds(), "images_generated_this_run": report.generated,
                       "stale_folders_regenerated": report.stale, "processes": processes.num_processes,
                       "images_generated_per_process": report.per_process or [0] * processes.num_processes,
                       "seed_rule": "image k of every prompt and setting uses seed + k"},
        "interval": f"Wilson score, {settings.confidence:.0%}",
        "relations": [
            {"name": s.name, "category": categories[s.name], "object_a": s.object_a, "relation": s.relation,
             "object_b": s.object_b, "prompt": s.prompt, "swapped_prompt": s.swapped_prompt}
            for s in specs if isinstance(s, RelationSpec)
        ],
        "scenes": [
            {"name": s.name, "category": categories[s.name], "relations": [list(t) for t in s.relations],
             "prompt": s.prompt, "swapped_prompts": list(s.swapped_prompts)}
            for s in specs if isinstance(s, SceneSpec)
        ],
        "methods": [m.describe() for m in methods],
        "judges": judge_info,
        "fid": None if fid is None else {
            "reference": str(fid.reference), "extractor": fid.extractor.name, "weights": fid.weights,
        },
        "rows": [
            {"label": row.label, "method": row.method, "setting": row.setting,
             "images": sum(len(job.image_paths(settings.num_images)) for job in row.jobs),
             "folder": str(Path(DATASET) if row.method == DATASET else
                           Path("images") / ("base" if row.reuses else row.method) / setting_label(None if row.reuses else row.setting)),
             "reuses_images_of": row.reuses,
             "fid": fids[row.label], "judged": judged[row.label]}
            for row in rows
        ],
    }
    write_report(results, output_dir)
    return results
