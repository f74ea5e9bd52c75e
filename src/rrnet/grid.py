"""Labelled image grids a person can look at: rows of prompts, columns of settings (alpha)."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


def _font():
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def image_grid(
    rows: list[list[Image.Image]],
    row_labels: list[str],
    column_labels: list[str],
    cell: int = 160,
    label_width: int = 220,
) -> Image.Image:
    """Tile `rows[r][c]` with a header row of column labels and a left column of row labels.

    Small images are scaled up with nearest-neighbour so tiny models' pixels stay visible.
    """
    font = _font()
    header = 28
    n_cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (label_width + n_cols * cell, header + len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(column_labels):
        draw.text((label_width + c * cell + 6, 6), label, fill="black", font=font)
    for r, (images, label) in enumerate(zip(rows, row_labels)):
        y = header + r * cell
        wrapped = "\n".join(textwrap.wrap(label, width=26)[:8])
        draw.multiline_text((6, y + 6), wrapped, fill="black", font=font, spacing=2)
        for c, image in enumerate(images):
            resample = Image.NEAREST if image.width < cell else Image.LANCZOS
            grid.paste(image.convert("RGB").resize((cell - 4, cell - 4), resample), (label_width + c * cell + 2, y + 2))
    return grid


def mosaic(images: list[Image.Image], columns: int = 2, gap: int = 1) -> Image.Image:
    """Tile a few samples into one cell, so a grid cell shows a setting's spread, not one draw."""
    w, h = images[0].size
    rows = -(-len(images) // columns)
    out = Image.new("RGB", (columns * (w + gap) - gap, rows * (h + gap) - gap), (128, 128, 128))
    for i, image in enumerate(images):
        out.paste(image.convert("RGB"), ((i % columns) * (w + gap), (i // columns) * (h + gap)))
    return out
