"""The ``inpainting`` parameters as a tree of frozen dataclasses (values in conf/base).

    inpainting:
      checkpoint_root   <root>/<model>/checkpoints of every model the pipeline trains
      cases             CaseConfig (medgen.inpainting.cases): which files, size, bad-case policy
      autoencoder       the t1n patch-volume autoencoder: medgen.autoencoder.training_3d's schema
      diffusion         DiffusionParams: strategy, backbone, training mix, training, validation
      sampling          SamplingParams: test-time sampling (steps, K samples, RePaint, variants)
      unet_baseline     the deterministic 3D U-Net baseline (medgen.inpainting.unet_baseline)
      baselines         ClassicalParams: the classical fills scored beside the models
      scoring           ScoringParams: the scorer variant of the table, and the others reported

Each node receives the sub-block it uses; every key is required and unknown keys fail naming
the closest known one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.diffusion.known_region import Resampling

CONDITIONINGS = ("none", "honest", "oracle")


@dataclass(frozen=True)
class ValidationParams:
    """``diffusion.validation``: ``cases`` val cases sampled every ``training.val_every`` steps
    with ``num_steps`` solver steps, decoded, composited and scored (the scorer's SSIM drives early
    stopping and the best checkpoint)."""

    cases: int
    num_steps: int


@dataclass(frozen=True)
class DiffusionParams:
    """``inpainting.diffusion``.

    strategy: the name of the strategy (``ddpm`` as in the design; ``rflow``, ``edm``), whose
        options are ``strategies[strategy]``. backbone: the 3D ``diffusion_unet`` options.
    conditioning_mix: training probability of each conditioning variant (none / honest /
        oracle): one network learns all three, so the ablation rows differ only in what the
        network is given at test time.
    region_dilation: latent cells by which the generated region grows around the max-pooled
        mask (the voided latent is contaminated near the void; see the ``inpaint`` mode).
    training: the engine's `TrainingConfig`. resources: processes and nodes (null: one).
    """

    strategy: str
    strategies: dict[str, Any]
    backbone: dict[str, Any]
    conditioning_mix: dict[str, float]
    region_dilation: int
    training: dict[str, Any]
    validation: ValidationParams
    resources: dict[str, Any] | None
    torch_threads: int | None

    def __post_init__(self) -> None:
        if self.strategy not in self.strategies:
            raise ValueError(
                f"inpainting.diffusion.strategy {self.strategy!r} is not among strategies "
                f"{sorted(self.strategies)}"
            )
        unknown = sorted(set(self.conditioning_mix) - set(CONDITIONINGS))
        total = sum(float(v) for v in self.conditioning_mix.values())
        if unknown or abs(total - 1.0) > 1e-6 or min(self.conditioning_mix.values()) < 0:
            raise ValueError(
                f"inpainting.diffusion.conditioning_mix must give probabilities of {CONDITIONINGS} "
                f"summing to 1, got {self.conditioning_mix}"
            )
        require_positive_ints(
            self.validation, "inpainting.diffusion.validation", "cases", "num_steps"
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DiffusionParams:
        return config_tree_from_params(cls, params, "inpainting.diffusion")

    def strategy_config(self) -> dict[str, Any]:
        return {"name": self.strategy, **dict(self.strategies[self.strategy])}


@dataclass(frozen=True)
class SamplingParams:
    """``inpainting.sampling``: ``num_steps`` solver steps (DDIM for a DDPM-trained model),
    ``samples_per_case`` K (mean = the prediction, per-voxel SD = the uncertainty map),
    ``resampling`` (RePaint: `medgen.diffusion.Resampling`), the ``conditionings`` to run (the first is the default, "honest"),
    ``batch_size`` volumes per network call, ``seed``."""

    num_steps: int
    samples_per_case: int
    resampling: Resampling
    conditionings: tuple[str, ...]
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        require_positive_ints(
            self, "inpainting.sampling", "num_steps", "samples_per_case", "batch_size"
        )
        bad = [c for c in self.conditionings if c not in CONDITIONINGS]
        if bad or not self.conditionings:
            raise ValueError(
                f"inpainting.sampling.conditionings must be a non-empty list of {CONDITIONINGS}, "
                f"got {list(self.conditionings)}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SamplingParams:
        return config_tree_from_params(cls, params, "inpainting.sampling")


@dataclass(frozen=True)
class ClassicalParams:
    """``inpainting.baselines``: the classical fills to score (names of
    `medgen.inpainting.baselines.CLASSICAL_BASELINES`)."""

    methods: tuple[str, ...]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ClassicalParams:
        return config_tree_from_params(cls, params, "inpainting.baselines")


@dataclass(frozen=True)
class ScoringParams:
    """``inpainting.scoring``: ``variant`` of the table (the leaderboard scorer) and
    ``other_variants`` reported beside it; ``triplanar_cases`` figures written."""

    variant: str
    other_variants: tuple[str, ...]
    triplanar_cases: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ScoringParams:
        return config_tree_from_params(cls, params, "inpainting.scoring")
