"""The mini world's recipe: which prompt pairs the text encoder collapses, model sizes, schedules.

The world reproduces the paper's situation. Most object pairs are encoded order-aware, so the
denoiser learns to draw either direction when its conditioning says which; a few held-out pairs
have their two directions pulled together in the text encoder's EOT state (cosine ~1), so the
base model draws a coin-flip layout for both prompts. Those pairs are the rectification targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rrnet.world.vocab import get_relation

OBJECT_SENTENCE = "this is a photo of {}"


@dataclass(frozen=True)
class WorldRecipe:
    """Every number that defines the mini world's backbone; stored next to its weights as JSON."""

    size: int = 32
    seed: int = 0
    collapsed_pairs: tuple[tuple[str, str], ...] = (
        ("red circle", "blue square"),
        ("green triangle", "yellow diamond"),
        ("purple cross", "cyan ring"),
        ("red circle", "green triangle"),
    )
    collapsed_axis: str = "y"  # vertical relations (above / below) collapse for those pairs
    # text encoder (CLIPTextModel)
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_steps: int = 600
    text_lr: float = 3e-3
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
    ema_decay: float = 0.995
    empty_caption_rate: float = 0.1
    single_object_rate: float = 0.2
    snr_shift: float = 0.25  # SNR x (16/S)^2 at S = 32: layout is decided at high noise
    checkpoint_every: int = 200
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WorldRecipe":
        data = dict(data)
        for key in ("collapsed_pairs",):
            data[key] = tuple(tuple(p) for p in data[key])
        for key in ("vae_channels", "unet_channels"):
            data[key] = tuple(data[key])
        return cls(**data)

    def is_collapsed(self, a: str, relation: str, b: str) -> bool:
        """True when the text encoder is made blind to the direction of this prompt."""
        if get_relation(relation).axis != self.collapsed_axis:
            return False
        return (a, b) in self.collapsed_pairs or (b, a) in self.collapsed_pairs
