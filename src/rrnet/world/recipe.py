"""The mini world's recipe: which object pairs the text encoder collapses, model sizes, schedules.

The world reproduces the paper's situation. Most object pairs are encoded order-aware, so the
denoiser learns to draw either direction when its conditioning says which; the collapsed pairs
have their two directions pulled together in the text encoder's EOT state (cosine ~1) on one
axis, so the base model draws a coin-flip layout for both prompts. Those are the rectification
targets, split once into `train` pairs (rectifiers may learn from them) and `heldout` pairs
(only ever evaluated), with order-aware `control` pairs that must not get worse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from rrnet.errors import DataError
from rrnet.world.vocab import get_object, get_relation

OBJECT_SENTENCE = "this is a photo of {}"

AXES = ("y", "x")  # vertical (above / below), horizontal (left of / right of)
AXIS_NAMES = {"y": "vertical", "x": "horizontal"}

PairOnAxis = tuple[str, str, str]  # (object, object, axis): an unordered pair on one axis

SAMPLERS = ("ddim", "ddpm")
TUNE_FIELDS = ("tune_steps", "tune_lr", "tune_collapsed_rate")


@dataclass(frozen=True)
class WorldRecipe:
    """Every number that defines the mini world's backbone; stored next to its weights as JSON."""

    size: int = 32
    seed: int = 0
    # collapsed pairs, split once: rectifiers train on `train_pairs` only
    train_pairs: tuple[PairOnAxis, ...] = (
        ("red circle", "blue square", "y"),
        ("green triangle", "yellow diamond", "y"),
        ("purple cross", "white bar", "y"),
        ("cyan column", "pink wedge", "y"),
        ("red circle", "yellow diamond", "y"),
        ("red circle", "green triangle", "x"),
        ("blue square", "purple cross", "x"),
        ("yellow diamond", "cyan column", "x"),
    )
    heldout_pairs: tuple[PairOnAxis, ...] = (
        ("blue square", "green triangle", "y"),
        ("white bar", "pink wedge", "y"),
        ("green triangle", "white bar", "x"),
        ("purple cross", "pink wedge", "x"),
    )
    # order-aware pairs that a rectifier must leave as good as they are
    control_pairs: tuple[PairOnAxis, ...] = (
        ("red circle", "purple cross", "y"),
        ("blue square", "cyan column", "y"),
        ("yellow diamond", "white bar", "y"),
        ("green triangle", "cyan column", "x"),
        ("red circle", "pink wedge", "x"),
        ("blue square", "white bar", "x"),
    )
    # text encoder (CLIPTextModel)
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_steps: int = 3000
    text_lr: float = 3e-3
    text_scene_batch: int = 192  # two-relation captions per step, beside every one-relation prompt
    text_padding_trained: int = 8  # padding positions run at most steps ...
    text_full_length_every: int = 4  # ... and all 77 positions every 4th step
    text_max_aware_cosine: float = 0.7  # order-aware twins' EOT cosine is pushed below this
    # autoencoder (AutoencoderKL, 32 px -> 4 x 16 x 16)
    vae_channels: tuple[int, ...] = (32, 64)
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    # denoiser (UNet2DConditionModel)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_steps: int = 6000
    unet_batch: int = 64
    unet_lr: float = 2e-3
    unet_warmup: int = 100
    unet_decay_from: float = 0.7  # cosine decay of the learning rate over the last 30 % of the steps
    ema_decay: float = 0.995
    # denoiser, second phase: from the first phase's EMA weights (fresh optimiser, cosine schedule),
    # with a share of every batch drawn from two-relation scenes that state a collapsed relation
    tune_steps: int = 4500
    tune_lr: float = 5e-4
    tune_collapsed_rate: float = 0.7  # half of it from scenes whose two relations are both collapsed
    empty_caption_rate: float = 0.1
    single_object_rate: float = 0.15
    scene_rate: float = 0.35  # three objects, two relations; the rest are two-object scenes
    snr_shift: float = 0.25  # SNR x (16/S)^2 at S = 32: layout is decided at high noise
    checkpoint_every: int = 200
    # sampling defaults recorded in world.json (rrnet reads them wherever it samples this model)
    sample_steps: int = 25
    guidance_scale: float = 3.0
    sampler: str = "ddpm"  # "ddpm" (ancestral: fresh noise at every step) or "ddim" (deterministic)
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise DataError(f"recipe sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.tune_collapsed_rate <= 1.0:
            raise DataError(f"recipe tune_collapsed_rate: {self.tune_collapsed_rate} is not a share in [0, 1]")
        seen: dict[frozenset, str] = {}
        for name in ("train_pairs", "heldout_pairs", "control_pairs"):
            for a, b, axis in getattr(self, name):
                get_object(a)
                get_object(b)
                if a == b or axis not in AXES:
                    raise DataError(f"recipe {name}: bad pair {(a, b, axis)}")
                key = frozenset((a, b, axis))
                if key in seen:
                    raise DataError(f"recipe: pair {(a, b, axis)} is in both {seen[key]} and {name}")
                seen[key] = name

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WorldRecipe":
        known = {f.name for f in fields(cls)}
        data = {**ADDED_LATER, **data}  # what recipes written before these fields existed meant
        missing = sorted(known - set(data) - {"notes"})
        if missing or set(data) - known:
            raise DataError(f"this recipe is from another version of the mini world "
                            f"({'missing ' + ', '.join(missing) if missing else 'unknown ' + ', '.join(sorted(set(data) - known))}); "
                            "rebuild the model with `rrnet world build`")
        data = dict(data)
        for key in ("train_pairs", "heldout_pairs", "control_pairs"):
            data[key] = tuple(tuple(p) for p in data[key])
        for key in ("vae_channels", "unet_channels"):
            data[key] = tuple(data[key])
        return cls(**data)

    def before_tuning(self) -> dict:
        """The fields that decide everything up to the denoiser's first phase (all but the tuning)."""
        return {k: v for k, v in self.to_dict().items() if k not in TUNE_FIELDS}

    @property
    def collapsed_pairs(self) -> tuple[PairOnAxis, ...]:
        return self.train_pairs + self.heldout_pairs

    def split_of(self, a: str, b: str, axis: str) -> str | None:
        """"train", "heldout", "control" or None (another order-aware pair) for a pair on an axis."""
        for name, pairs in (("train", self.train_pairs), ("heldout", self.heldout_pairs), ("control", self.control_pairs)):
            if any({a, b} == {p, q} and axis == ax for p, q, ax in pairs):
                return name
        return None

    def is_collapsed(self, a: str, relation: str, b: str) -> bool:
        """True when the text encoder is made blind to the direction of "A <relation> B"."""
        return self.split_of(a, b, get_relation(relation).axis) in ("train", "heldout")


# literals, not the class defaults: the settings every recipe written before these fields existed was built with
ADDED_LATER = {"tune_steps": 0, "tune_lr": 5e-4, "tune_collapsed_rate": 0.5, "sampler": "ddim"}
