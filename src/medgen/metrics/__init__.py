"""medgen.metrics: honest image-generation metrics (FID, LPIPS, (MS-)SSIM, PSNR, BraTS, fidelity).

Every generated-vs-real number names its backbone, its sample counts and a
real-vs-real floor measured the same way (:class:`MetricResult`).
"""

from medgen.metrics.backbones import (
    BACKBONES,
    FeatureBackbone,
    build_backbone,
    custom_backbone,
    in_domain_backbone,
)
from medgen.metrics.brats_inpainting import (
    BratsVariant,
    brats_inpainting_metrics,
    summarise_cases,
    to_scanner_range,
)
from medgen.metrics.errors import MissingWeightsError
from medgen.metrics.fid import (
    compute_fid,
    compute_fid_2p5d,
    compute_fid_folders,
    extract_features,
    fid_2p5d_with_floor,
    fid_with_floor,
    frechet_distance,
)
from medgen.metrics.fidelity import conditioning_fidelity, dice_score, segment, train_segmenter
from medgen.metrics.floors import one_sample_with_floor, split_real_halves, two_sample_with_floor
from medgen.metrics.in_domain import (
    InDomainEncoder,
    in_domain_checkpoint,
    load_in_domain_backbone,
    train_in_domain_backbone,
)
from medgen.metrics.lpips_metric import LPIPSScorer, lpips_diversity_with_floor
from medgen.metrics.paired import mae, mse, paired_metrics, psnr
from medgen.metrics.results import MetricResult
from medgen.metrics.ssim import (
    MSSSIMConfig,
    choose_ms_ssim_config,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_diversity_with_floor,
    ms_ssim_quality,
    ssim,
)

__all__ = [
    "BACKBONES",
    "BratsVariant",
    "FeatureBackbone",
    "InDomainEncoder",
    "LPIPSScorer",
    "MSSSIMConfig",
    "MetricResult",
    "MissingWeightsError",
    "brats_inpainting_metrics",
    "summarise_cases",
    "to_scanner_range",
    "build_backbone",
    "choose_ms_ssim_config",
    "compute_fid",
    "compute_fid_2p5d",
    "compute_fid_folders",
    "conditioning_fidelity",
    "custom_backbone",
    "dice_score",
    "extract_features",
    "fid_2p5d_with_floor",
    "fid_with_floor",
    "frechet_distance",
    "in_domain_backbone",
    "in_domain_checkpoint",
    "load_in_domain_backbone",
    "mae",
    "ms_ssim",
    "ms_ssim_diversity",
    "ms_ssim_diversity_with_floor",
    "lpips_diversity_with_floor",
    "ms_ssim_quality",
    "mse",
    "one_sample_with_floor",
    "paired_metrics",
    "psnr",
    "segment",
    "split_real_halves",
    "ssim",
    "train_in_domain_backbone",
    "train_segmenter",
    "two_sample_with_floor",
]
