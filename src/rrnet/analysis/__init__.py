"""The paper's analyses as library functions: OSP EOT cosine (Sec. 3.1), EOT masking (Fig. 2),
EOT swapping (Appendix C) and the alpha sweep (Fig. 4). `rrnet analyze` calls these."""

from rrnet.analysis.attention import (
    KeyMaskProcessor,
    MaskRecord,
    cross_attention_layers,
    masked_cross_attention,
)
from rrnet.analysis.eot import (
    EOTResult,
    eot_masking,
    eot_positions,
    eot_swap,
    eot_swapped_embeds,
    masked_images,
)
from rrnet.analysis.osp import OSPReport, PairSimilarity, osp_similarity, parse_pair
from rrnet.analysis.sweep import SweepResult, alpha_sweep

__all__ = [
    "EOTResult",
    "KeyMaskProcessor",
    "MaskRecord",
    "OSPReport",
    "PairSimilarity",
    "SweepResult",
    "alpha_sweep",
    "cross_attention_layers",
    "eot_masking",
    "eot_positions",
    "eot_swap",
    "eot_swapped_embeds",
    "masked_cross_attention",
    "masked_images",
    "osp_similarity",
    "parse_pair",
]
