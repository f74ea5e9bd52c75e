"""`rrnet serve` in a real browser: Debian's chromium driven headless by Playwright.

The server runs as the command a user types (`python -m rrnet.cli serve ...`) on a tiny model and
a small rectifier; the page is filled in, the slider moved, the button clicked, and the two
images the page shows are downloaded and compared. Skips (with the reason) where chromium,
Playwright or Gradio is missing; `.ci/run` installs chromium, so CI always runs it.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

PROMPT = "a red block above a blue block"
START_TIMEOUT_S = 180  # a deadline for a dead server, not a speed requirement


def _chromium() -> str | None:
    """Debian's chromium (or RRNET_CHROMIUM): Playwright's own browser download is not needed."""
    named = os.environ.get("RRNET_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _requirements() -> str | None:
    for module, extra in (("playwright", "test"), ("gradio", "serve")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install 'rrnet[{extra}]')"
    if _chromium() is None:
        return "no chromium browser found (Debian: apt-get install -y chromium; or set RRNET_CHROMIUM)"
    return None


_MISSING = _requirements()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"browser test skipped: {_MISSING}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_rectifier(folder: Path) -> Path:
    from rrnet.rectifier import RectifierConfig, RelationRectifier

    torch.manual_seed(0)
    config = RectifierConfig(text_width=32, hidden=16,
                             triplets=[{"object_a": "red block", "relation": "above", "object_b": "blue block"}],
                             prompts=[[PROMPT, "a blue block above a red block"]])
    rectifier = RelationRectifier(config)
    for p in rectifier.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return rectifier.save_pretrained(folder)


@pytest.fixture()
def server(tiny_model_dir, tmp_path):
    """`rrnet serve` in a subprocess; yields its URL and stops it afterwards."""
    rectifier = _small_rectifier(tmp_path / "rectifier")
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rrnet.cli", "serve", "--model", str(tiny_model_dir), "--rectifier", str(rectifier),
         "--port", str(port), "--steps", "4", "--threads", "1", "--no_progress"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"rrnet serve exited with {process.returncode}:\n{log.read()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"rrnet serve did not answer on {url}:\n{log.read()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _pixels(page, selector: str) -> np.ndarray:
    """The image the page shows in `selector`, downloaded through the browser."""
    src = page.locator(f"{selector} img").get_attribute("src")
    response = page.request.get(urljoin(page.url, src))
    assert response.ok, f"{src}: HTTP {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def _generate(page, alpha: str, rectified_before: str | None = None):
    """Move the slider to `alpha`, click Generate and wait for the page to show that run's images
    (the rectified one replacing `rectified_before`, the src of the previous one, if given)."""
    from playwright.sync_api import expect

    slider = page.locator("#alpha input[type=range]")
    slider.fill(alpha)  # dispatches the slider's input event, as dragging does
    expect(page.locator("#alpha input[type=number]")).to_have_value(alpha)
    page.locator("#generate").click()
    expect(page.locator("#status")).to_contain_text(f"alpha {float(alpha):g}", timeout=60_000)
    for selector in ("#base-image", "#rectified-image"):
        expect(page.locator(f"{selector} img")).to_be_visible()
    if rectified_before is not None:
        expect(page.locator("#rectified-image img"), "the rectified image did not change with alpha").not_to_have_attribute(
            "src", rectified_before)
    return _pixels(page, "#base-image"), _pixels(page, "#rectified-image")


def test_page_shows_base_and_rectified_images_side_by_side(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            page = browser.new_page()
            page.goto(server)
            prompt = page.locator("#prompt textarea")
            prompt.fill("")
            prompt.type(PROMPT)
            page.locator("#seed input").fill("3")

            base, rectified = _generate(page, "0")
            assert base.shape == rectified.shape and base.shape[0] >= 32
            assert np.array_equal(base, rectified), "alpha 0 must give the base model's image"
            expect(page.locator("#triplets textarea")).to_have_value("(red block, above, blue block)")

            before = page.locator("#rectified-image img").get_attribute("src")
            base_again, rectified = _generate(page, "1.5", rectified_before=before)
            assert np.array_equal(base_again, base), "the same seed must give the same base image"
            assert not np.array_equal(base, rectified), "alpha > 0 must change the image"

            prompt.fill("")
            page.locator("#generate").click()
            expect(page.locator("#status")).to_contain_text("enter a prompt", timeout=60_000)
        finally:
            browser.close()
