"""Exemplar images: finding them in messy folders, loading them as tensors, saving safely.

Real exemplar folders mix JPEG files named .png, RGBA PNGs, phone photos with an
EXIF rotation and 512/1024 px sizes. Everything here trusts file contents, not names.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps

from rrnet.atomic import atomic_write
from rrnet.errors import DataError

# A file with one of these extensions must be a readable image: a broken one is an error,
# not something to skip, so a user never trains on fewer exemplars than they think.
IMAGE_EXTENSIONS = frozenset(
    {
        ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".gif", ".tif", ".tiff",
        ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".avif", ".heic", ".heif",
    }
)

_BACKGROUND = (255, 255, 255)

# Checked from the header, before any pixel is decoded: a 12000 x 12000 exemplar would take 2 GiB
# to decode only to be shrunk to 512 px, and a decompression bomb claims far more.
MAX_IMAGE_PIXELS = 64_000_000
MIN_IMAGE_SIDE = 8


def natural_key(name: str) -> tuple:
    """Sort key that puts "2.png" before "10.png" and "image (3)" before "image (12)"."""
    parts = re.split(r"(\d+)", name.casefold())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _open_error(path: Path, err: BaseException) -> DataError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"{path}: not a readable image ({reason})")


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """`Image.open` with the header checked first: not too large, not too small, not animated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # opening reads the header only
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise DataError(f"{path}: image too large to decode safely (a decompression bomb?); exemplars are limited "
                            f"to {MAX_IMAGE_PIXELS // 1_000_000} megapixels") from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"{path}: image is {width} x {height} ({width * height / 1e6:.0f} megapixels); exemplars "
                            f"are limited to {MAX_IMAGE_PIXELS // 1_000_000} megapixels, resize it first")
        if min(width, height) < MIN_IMAGE_SIDE:
            raise DataError(f"{path}: image is {width} x {height} px; exemplars need at least {MIN_IMAGE_SIDE} px a side")
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise DataError(f"{path}: animated image ({frames} frames); exemplars must be still images")
        yield image


def is_image(path: str | Path) -> bool:
    """True when PIL recognises the file's content as an image (the header only, cheap)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path):
                return True
        except Image.DecompressionBombError:
            return True  # an image, and `check_image` says why it is refused
        except Exception:  # PIL raises many unrelated types for non-images
            return False


def check_image(path: str | Path) -> Path:
    """Raise DataError naming the file unless it exists and PIL recognises it as an image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with open_image(path):
            pass
    except DataError:
        raise
    except Exception as err:  # PIL raises many unrelated types for corrupt files
        raise _open_error(path, err) from err
    return path


def find_images(folder: str | Path) -> tuple[Path, ...]:
    """Image files directly in `folder`, sorted naturally.

    Hidden files are skipped. Files with an image extension must open (else DataError);
    other files are kept only when their content is an image, so notes and manifests
    next to the pictures are ignored silently.
    """
    folder = Path(folder)
    found = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
    except OSError as err:
        raise DataError(f"{folder}: cannot list the folder ({err.strerror or err})") from None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue  # hidden files, folders, broken links and symlink loops
        if entry.suffix.lower() in IMAGE_EXTENSIONS or is_image(entry):
            found.append(check_image(entry))
    return tuple(found)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white, the way a viewer shows it."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: convert("L") would clip instead of rescale.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _square(image: Image.Image, resolution: int) -> Image.Image:
    """Resize so the short side is `resolution`, then centre-crop to a square.

    ImageOps.fit crops the centre box first and resamples only that box, which is the
    same picture as resize-then-crop without rounding the intermediate size.
    """
    return ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.LANCZOS)


def load_image(path: str | Path, resolution: int) -> torch.Tensor:
    """Load an image as a float32 (3, resolution, resolution) tensor in [-1, 1].

    EXIF orientation is honoured, transparency becomes white, the short side is resized
    to `resolution` (antialiased) and the centre square kept: the VAE's input format.
    """
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with open_image(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _square(_to_rgb(image), resolution)
    except DataError:
        raise
    except Exception as err:  # PIL raises many unrelated types for corrupt files
        raise _open_error(path, err) from err
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def load_images(paths: Iterable[str | Path], resolution: int) -> torch.Tensor:
    """Load several images as one (N, 3, resolution, resolution) float32 batch in [-1, 1]."""
    tensors = [load_image(path, resolution) for path in paths]
    if not tensors:
        raise DataError("no image paths given")
    return torch.stack(tensors)


def save_image_atomic(image: Image.Image, path: str | Path, **save_kwargs) -> Path:
    """Save `image` so that `path` is either absent, the old file, or the complete new one.

    Writes a hidden temporary file in the same folder (same file system) and renames it
    with os.replace, so an interrupted run never leaves a half-written image behind.
    The format comes from the extension unless `format=` is given.
    """
    path = Path(path)
    image_format = save_kwargs.pop("format", None)
    if image_format is None:
        image_format = Image.registered_extensions().get(path.suffix.lower())
        if image_format is None:
            raise ValueError(f"{path}: cannot tell the image format from the extension")
    return atomic_write(path, lambda tmp: image.save(tmp, format=image_format, **save_kwargs))
