"""`rrnet serve`: a web page that draws one prompt with the base model and with a rectifier, side by side.

The page (Gradio, the `serve` extra) has a prompt box, an alpha slider, a seed and a step count,
and shows the base image, the rectified image and the triplet(s) the rectifier read from the
prompt. Both images start from the same noise (the generator seeded with `seed`), so the only
difference between them is the rectified EOT embedding, and the same seed gives the same images.

Everything the page does goes through `ServeModel.generate`, a plain function that tests call
without a browser; the Gradio layer only turns its `RRNetError`s into a message on the page.
With no `--rectifier` on a mini-world model, the rectifier `rrnet demo` trains is trained once
into rrnet's cache folder and reused by every later `rrnet serve`.
"""

from __future__ import annotations

import argparse
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from rrnet import validation as check
from rrnet.errors import RRNetError

INSTALL_HINT = "pip install 'rrnet[serve]'"
NO_RELATION = "no known relation: base embeddings"
DEFAULT_ALPHA = 0.8
ALPHA_RANGE = (0.0, 2.0)
MAX_STEPS = 1000
DISPLAY_SIZE = 256  # small images (the mini world's are 32 px) are enlarged, pixel for pixel, on the page

logger = logging.getLogger(__name__)


def import_gradio():
    """Gradio, or one error line naming the extra that installs it (it is not a core dependency)."""
    try:
        import gradio
    except ImportError:
        raise RRNetError(f"rrnet serve needs Gradio, which is not installed: {INSTALL_HINT}") from None
    return gradio


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="a web page: a prompt drawn by the base model and rectified, side by side")
    p.add_argument("--pretrained_model_name_or_path", "--model", dest="model", default=None,
                   help="diffusers Stable Diffusion model: hub id or local folder (default: the shipped mini world)")
    p.add_argument("--rectifier", default=None,
                   help="rectifier folder or Hub id (default on a mini world: the demo's rectifier, trained once "
                        "into the rrnet cache)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=check.int_in(1, 65535), default=7860)
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--steps", type=check.int_in(1, MAX_STEPS), default=None,
                   help="the page's initial sampling steps (default: the model's record for the mini world, else 30)")
    p.add_argument("--guidance_scale", type=check.non_negative_float, default=None,
                   help="classifier-free guidance (default: the model's record for the mini world, else 7.5)")
    p.add_argument("--epochs", type=check.positive_int, default=None,
                   help="epochs of the rectifier trained when --rectifier is not given (default: the demo's, "
                        "the training recipe's)")
    p.add_argument("--threads", type=check.positive_int, default=None, help="torch CPU threads")
    p.add_argument("--no_progress", action="store_true", help="hide progress bars")


@dataclass
class ServedImages:
    """One request's answer: both images from the same noise, and the triplets read from the prompt."""

    base: Image.Image
    rectified: Image.Image
    triplets: str
    prompt: str
    alpha: float
    seed: int
    steps: int


def describe_triplets(rectifier, prompt: str) -> str:
    """The (A, R, B) triplets the rectifier reads from `prompt`, or why the prompt passes through unchanged."""
    found = rectifier.find_triplets(prompt)
    if not found:
        known = ", ".join(sorted(rectifier.relation_phrases())) or "none"
        return f"{NO_RELATION} (relations this rectifier knows: {known})"
    return "; ".join(f"({t.object_a}, {t.relation}, {t.object_b})" for t in found)


def check_request(prompt, alpha, seed, steps) -> tuple[str, float, int, int]:
    """The page's inputs as (prompt, alpha, seed, steps), or an RRNetError saying what to fix."""
    prompt = " ".join(str(prompt or "").split())
    if not prompt:
        raise RRNetError("enter a prompt, e.g. 'a red circle above a blue square'")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise RRNetError(f"alpha must be a number, got {alpha!r}") from None
    if not math.isfinite(alpha):
        raise RRNetError(f"alpha must be a finite number, got {alpha}")
    seed = _whole(seed, "seed")
    if not 0 <= seed <= check.MAX_SEED:
        raise RRNetError(f"seed must be an integer from 0 to {check.MAX_SEED}, got {seed}")
    steps = _whole(steps, "steps")
    if not 1 <= steps <= MAX_STEPS:
        raise RRNetError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps}")
    return prompt, alpha, seed, steps


def _whole(value, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact, even past float precision
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RRNetError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise RRNetError(f"{name} must be a whole number, got {value}")
    return int(number)


class ServeModel:
    """A pipeline and a rectifier that answer the page's requests, one at a time."""

    def __init__(self, pipe, rectifier, guidance_scale: float, default_steps: int, resolution: int | None = None) -> None:
        rectifier.check_backbone(pipe)
        self.pipe = pipe
        self.rectifier = rectifier.to(pipe.device).eval()
        self.guidance_scale = guidance_scale
        self.default_steps = default_steps
        self.resolution = resolution
        self._lock = threading.Lock()  # one pipeline, one request at a time

    def example_prompts(self) -> list[str]:
        """The prompts the rectifier was trained on (both directions), for the page's examples."""
        return [prompt for pair in self.rectifier.config.prompts for prompt in pair][:8]

    def generate(self, prompt: str, alpha: float, seed: int, steps: int) -> ServedImages:
        """Base and rectified image of `prompt` from the noise of `seed`; alpha 0 gives the base image twice."""
        from rrnet.generate import GenerationSettings, prompt_embeddings, sample_images

        prompt, alpha, seed, steps = check_request(prompt, alpha, seed, steps)
        settings = GenerationSettings(alphas=(alpha,), num_images=1, seed=seed, steps=steps,
                                      guidance_scale=self.guidance_scale, resolution=self.resolution)
        with self._lock, torch.no_grad():
            triplets = describe_triplets(self.rectifier, prompt)
            base_embeds = prompt_embeddings(self.pipe, prompt, None, None)
            rectified_embeds = prompt_embeddings(self.pipe, prompt, alpha, self.rectifier)
            base = sample_images(self.pipe, base_embeds, settings)[0]
            rectified = sample_images(self.pipe, rectified_embeds, settings)[0]
        return ServedImages(base, rectified, triplets, prompt, alpha, seed, steps)


def enlarge(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """`image` scaled by a whole factor (nearest pixel) to about `size`: a 32 px image stays legible."""
    factor = max(1, size // max(image.size))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def page_handler(model: ServeModel):
    """The click handler: images, triplets and a status line; a bad input is a status line, never a traceback."""

    def handle(prompt, alpha, seed, steps):
        try:
            out = model.generate(prompt, alpha, seed, steps)
        except RRNetError as exc:
            return None, None, "", f"**Error:** {exc}"
        status = f"seed {out.seed}, {out.steps} steps, guidance {model.guidance_scale:g}, alpha {out.alpha:g}"
        return enlarge(out.base), enlarge(out.rectified), out.triplets, status

    return handle


def build_app(model: ServeModel, title: str = "rrnet: relation rectification", description: str = ""):
    """The Gradio Blocks page for `model` (not launched)."""
    gr = import_gradio()
    examples = model.example_prompts()
    # every image shown is a file in Gradio's cache: hourly, drop those older than an hour
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {title}\n{description}")
        with gr.Row():
            prompt = gr.Textbox(label="prompt", value=examples[0] if examples else "", elem_id="prompt", scale=4)
            button = gr.Button("Generate", variant="primary", elem_id="generate", scale=1)
        with gr.Row():
            alpha = gr.Slider(*ALPHA_RANGE, value=DEFAULT_ALPHA, step=0.05, label="alpha (0 = the base model)",
                              elem_id="alpha")
            seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
            steps = gr.Number(value=model.default_steps, precision=0, label="steps", elem_id="steps")
        with gr.Row():
            base = gr.Image(label="base model", type="pil", format="png", interactive=False,
                            buttons=["download", "fullscreen"], elem_id="base-image")
            rectified = gr.Image(label="rectified", type="pil", format="png", interactive=False,
                                 buttons=["download", "fullscreen"], elem_id="rectified-image")
        triplets = gr.Textbox(label="parsed triplet(s)", interactive=False, elem_id="triplets")
        status = gr.Markdown(elem_id="status")
        if examples:
            gr.Examples(examples=[[p] for p in examples], inputs=[prompt], label="prompts the rectifier was trained on")
        inputs, outputs = [prompt, alpha, seed, steps], [base, rectified, triplets, status]
        handle = page_handler(model)
        button.click(handle, inputs, outputs)
        prompt.submit(handle, inputs, outputs)
    return app


def default_rectifier(pipe, model_dir: str | Path, epochs: int | None = None, progress: bool = True,
                      cache: str | Path | None = None) -> Path:
    """The demo's rectifier for the mini-world model `model_dir`: trained once into the cache (keyed by
    the model's content and the epochs; default the demo's), then reused. Returns its folder."""
    from rrnet.backbones.clip_vocab import cache_dir
    from rrnet.demo import DEMO_RECIPE, DEMO_TRIPLET, train_demo_rectifier
    from rrnet.recipes import recipe_config
    from rrnet.eval.provenance import model_digest
    from rrnet.locking import folder_lock
    from rrnet.train import TrainConfig, rectifier_finished

    epochs = epochs or recipe_config(DEMO_RECIPE).epochs

    slug = "_".join(" ".join(DEMO_TRIPLET).split())
    entry = Path(cache or cache_dir() / "serve") / f"{model_digest(str(model_dir))}-{slug}-{DEMO_RECIPE}-e{epochs}"
    folder = entry / "rectifier"
    if rectifier_finished(folder):
        logger.info("serve: using the cached rectifier %s", folder)
        return folder
    with folder_lock(entry):
        if not rectifier_finished(folder):
            # a warning, shown unless --quiet: the first `rrnet serve` trains for a while before the page opens
            logger.warning("serve: no --rectifier given: training the demo's rectifier (%s, %s recipe, %d epochs) "
                           "into %s; later runs reuse it", " ".join(DEMO_TRIPLET), DEMO_RECIPE, epochs, folder)
            train_demo_rectifier(pipe, model_dir, entry, epochs, seed=TrainConfig().seed, progress=progress)
    return folder


def run_serve(args: argparse.Namespace) -> None:
    from rrnet.backbones.loading import load_pipeline
    from rrnet.generate import sampling_defaults
    from rrnet.rectifier_files import load_rectifier
    from rrnet.world.record import shipped_backbone, world_sampling

    gr = import_gradio()  # before any model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    args.model = args.model or str(shipped_backbone())
    check.check_device(args.device)
    check.check_model_folder(args.model)
    rectifier = load_rectifier(args.rectifier) if args.rectifier else None
    if rectifier is not None:
        check.check_rectifier_fits(rectifier, args.model)
    elif not Path(args.model).is_dir() or world_sampling(args.model) is None:
        raise RRNetError(f"--rectifier is required for {args.model}: only a mini-world model gets a rectifier "
                         "trained for it (train one with `rrnet train`)")
    defaults = sampling_defaults(args.model)
    steps = args.steps or defaults["num_inference_steps"]
    guidance = defaults["guidance_scale"] if args.guidance_scale is None else args.guidance_scale
    logger.info("serve: loading %s", args.model)
    pipe = load_pipeline(args.model, args.device, args.mixed_precision, progress=not args.no_progress)
    source = args.rectifier
    if rectifier is None:
        source = default_rectifier(pipe, args.model, args.epochs, progress=not args.no_progress)
        rectifier = load_rectifier(source)
    model = ServeModel(pipe, rectifier, guidance_scale=guidance, default_steps=steps)
    description = (f"Model `{args.model}`, rectifier `{source}`. Both images start from the same noise; the "
                   "rectified one adds the rectifier's adjustment, times alpha, to the prompt's EOT embedding.")
    app = build_app(model, description=description)
    # system fonts: the default theme fetches web fonts, which an offline browser waits for in vain
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    try:
        _, local_url, share_url = app.launch(server_name=args.host, server_port=args.port, share=args.share,
                                             ssr_mode=False, theme=theme, quiet=True, prevent_thread_lock=True)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise RRNetError(f"cannot serve on {args.host}:{args.port} ({' '.join(str(exc).split())[:160]})") from None
    print(f"rrnet serve: open {local_url}" + (f" or {share_url}" if share_url else "") + " (Ctrl-C stops)", flush=True)
    app.block_thread()
