"""The paper's baselines, trained on the same exemplar images as RRNet and evaluated beside it.

* personalized diffusion (Table 1): the text encoder fine-tuned with the denoising loss;
* textual inversion (Appendix A): new token embeddings for the relation;
* UNet update (Appendix A): LoRA on the UNet's attention projections.

`train_baseline(kind, pipe, spec, config, output_dir)` trains one; `load_method(kind, root)`
evaluates the checkpoints; `rrnet baseline {personalized,textual-inversion,lora}` on the command line.
"""

from rrnet.baselines.config import KINDS, BaselineConfig, normalize_kind
from rrnet.baselines.training import train_baseline


def load_method(kind: str, root, name: str | None = None):
    """The evaluation method of baseline `kind` (see `rrnet.baselines.methods.load_method`)."""
    from rrnet.baselines.methods import load_method as _load

    return _load(kind, root, name)


__all__ = ["KINDS", "BaselineConfig", "load_method", "normalize_kind", "train_baseline"]
