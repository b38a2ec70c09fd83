"""The ``evaluation`` parameters as a tree of frozen dataclasses (values in conf/base).

    evaluation:
      seed                 EvaluationParams.seed: subsets, floors' splits, network training
      in_domain_backbone   InDomainBackboneParams: the offline FID encoder
      scoring              ScoringParams: what evaluate_generated_sources measures
        reference_splits, reference_slices, expected_sources, max_generated, floors
        (FloorParams), fid (FidParams), lpips (LpipsParams), ms_ssim (MsSsimParams),
        fidelity (FidelityParams)
      report               ReportParams: report.html

Each node receives the sub-block it uses. Every key is required (its value lives in
conf/base/parameters_evaluation.yml); unknown keys fail naming the closest known one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medgen.config import config_tree_from_params
from medgen.generation.slices import SLICE_SELECTIONS

ON_MISSING_WEIGHTS = ("report", "fail")
REFERENCE_SPLITS = ("val", "test")
COVARIANCE_ESTIMATORS = ("auto", "sample", "ledoit_wolf")


@dataclass(frozen=True)
class InDomainBackboneParams:
    """``evaluation.in_domain_backbone``: the FID encoder trained on the real training split.

    max_train_slices (null: all): a seeded subset of the training slices; every modality
    channel is one training image. epochs, batch_size, learning_rate, feature_dim, width: the
    encoder and its training (`medgen.metrics.train_in_domain_backbone`). lesion_head: add a
    lesion-present head, so lesion burden is part of the feature space.
    """

    max_train_slices: int | None
    epochs: int
    batch_size: int
    learning_rate: float
    feature_dim: int
    width: int
    lesion_head: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> InDomainBackboneParams:
        return config_tree_from_params(cls, params, "evaluation.in_domain_backbone")


@dataclass(frozen=True)
class FloorParams:
    """``scoring.floors``: ``min_patients_per_half``, the patients each patient-disjoint
    real half must hold before a two-sample floor (FID) is given; with fewer the record
    says why there is no floor (`medgen.metrics.floors`)."""

    min_patients_per_half: int


@dataclass(frozen=True)
class FidParams:
    """``scoring.fid``: ``backbones`` to score with (``in_domain``, ``inception_v3``,
    ``radimagenet_resnet50``), ``on_missing_weights`` (``report``: the message goes into the
    report; ``fail``: stop), ``batch_size`` images per feature batch, ``covariance``
    (``auto``: the sample covariance where n > d, Ledoit-Wolf shrinkage otherwise;
    ``sample``; ``ledoit_wolf``: `medgen.metrics.frechet.resolve_covariance`)."""

    backbones: tuple[str, ...]
    on_missing_weights: str
    batch_size: int
    covariance: str


@dataclass(frozen=True)
class LpipsParams:
    """``scoring.lpips``: the LPIPS ``net`` (alex | vgg | squeeze), ``pretrained_backbone``
    (false offline: a random-init trunk, named so), ``max_pairs`` for the diversity score."""

    net: str
    pretrained_backbone: bool
    max_pairs: int


@dataclass(frozen=True)
class MsSsimParams:
    """``scoring.ms_ssim``: ``max_pairs`` for the MS-SSIM diversity score."""

    max_pairs: int


@dataclass(frozen=True)
class FidelityParams:
    """``scoring.fidelity``: the conditioning-Dice segmenter, trained on real slices.

    enabled: compute conditioning_dice at all. max_train_slices (null: all): seeded subset of
    the real training slices. epochs, batch_size, learning_rate, channels, strides: the MONAI
    UNet and its training (`medgen.metrics.fidelity.train_segmenter`). lesion_fraction: lesion
    slices are repeated to about this fraction of each epoch. flip: random flips.
    torch_threads (null: torch's default): intra-op threads while training; a net this small
    gains little from more, and on a shared CPU two threads made each step over ten times
    slower (1.1 s against 83 ms).
    """

    enabled: bool
    max_train_slices: int | None
    epochs: int
    batch_size: int
    learning_rate: float
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    lesion_fraction: float
    flip: bool
    torch_threads: int | None


@dataclass(frozen=True)
class ScoringParams:
    """``evaluation.scoring``: what `evaluate_sources` measures.

    reference_splits: the held-out splits (``val``, ``test``) whose real slices, together,
    are the reference; patients of both halves of each floor come from them.
    reference_slices: ``all`` or ``with_lesions`` real held-out slices as the reference.
    expected_sources: producing pipelines the report lists as "not present" when absent.
    max_generated (null: all): the first N samples of each source.
    floors: what a real-vs-real floor needs. fid, lpips, ms_ssim, fidelity: each metric's
    options.
    """

    reference_splits: tuple[str, ...]
    reference_slices: str
    expected_sources: tuple[str, ...]
    max_generated: int | None
    floors: FloorParams
    fid: FidParams
    lpips: LpipsParams
    ms_ssim: MsSsimParams
    fidelity: FidelityParams

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ScoringParams:
        config = config_tree_from_params(cls, params, "evaluation.scoring")
        if config.reference_slices not in SLICE_SELECTIONS:
            raise ValueError(
                f"evaluation.scoring.reference_slices must be one of {SLICE_SELECTIONS}, "
                f"got {config.reference_slices!r}"
            )
        if config.fid.on_missing_weights not in ON_MISSING_WEIGHTS:
            raise ValueError(
                f"evaluation.scoring.fid.on_missing_weights must be one of {ON_MISSING_WEIGHTS}, "
                f"got {config.fid.on_missing_weights!r}"
            )
        if config.fid.covariance not in COVARIANCE_ESTIMATORS:
            raise ValueError(
                f"evaluation.scoring.fid.covariance must be one of {COVARIANCE_ESTIMATORS}, "
                f"got {config.fid.covariance!r}"
            )
        unknown = [s for s in config.reference_splits if s not in REFERENCE_SPLITS]
        if unknown or not config.reference_splits:
            raise ValueError(
                f"evaluation.scoring.reference_splits must be a non-empty list of "
                f"{REFERENCE_SPLITS} (held-out splits only), got {list(config.reference_splits)}"
            )
        if config.floors.min_patients_per_half < 1:
            raise ValueError(
                "evaluation.scoring.floors.min_patients_per_half must be >= 1, got "
                f"{config.floors.min_patients_per_half}"
            )
        return config


@dataclass(frozen=True)
class ReportParams:
    """``evaluation.report``: ``grid_samples`` generated (and real) samples per grid;
    ``figures_per_source``: at most this many of a pipeline's own figures (one per inpainting
    case, say) under its source."""

    grid_samples: int
    figures_per_source: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReportParams:
        return config_tree_from_params(cls, params, "evaluation.report")


@dataclass(frozen=True)
class EvaluationParams:
    """The whole ``evaluation`` block (see the module docstring)."""

    seed: int
    in_domain_backbone: InDomainBackboneParams
    scoring: ScoringParams
    report: ReportParams

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EvaluationParams:
        config = config_tree_from_params(cls, params, "evaluation")
        ScoringParams.from_params(params["scoring"])  # its value checks
        return config
