"""The paper's baselines, trained on the same exemplar images as RRNet and evaluated beside it.

* personalized diffusion (Table 1): the text encoder fine-tuned with the denoising loss;
* textual inversion (Appendix A): new token embeddings for the relation;
* UNet update (Appendix A): LoRA on the UNet's attention projections.

`train_baseline(kind, pipe, spec, config, output_dir)` trains one; `load_method(kind, root)`
evaluates the checkpoints; `rrnet baseline {personalized,textual-inversion,lora}` on the command line.
Each baseline is split in how it is trained (`<kind>_training`, with `loop` and `exemplars`) and
how a trained checkpoint is applied (`<kind>`, used by `methods`), so evaluation and generation
never import training code. Both entry points are imported on first use for the same reason.
"""

from rrnet.baselines.config import KINDS, BaselineConfig, normalize_kind


def __getattr__(name: str):
    """`train_baseline` and `load_method`, imported only when asked for."""
    if name == "train_baseline":
        from rrnet.baselines.training import train_baseline

        return train_baseline
    if name == "load_method":
        from rrnet.baselines.methods import load_method

        return load_method
    raise AttributeError(f"module 'rrnet.baselines' has no attribute {name!r}")


__all__ = ["KINDS", "BaselineConfig", "load_method", "normalize_kind", "train_baseline"]
