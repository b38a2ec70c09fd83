"""The ``training.perceptual`` block: the perceptual term of a diffusion model's loss.

``loss = mse + weight · perceptual(x̂0, x0)`` on the predicted clean image
(`medgen.diffusion.perceptual`). The block lives with the training options because it changes
what is learned (it is part of the job identity) and every diffusion job has a training block;
the feature network is built in the worker by `medgen.metrics.perceptual_distance`, which
refuses missing weights with the metrics' `MissingWeightsError`. Factories that take a
``perceptual_term`` keyword receive this block (`medgen.training.job.train_worker`); a job whose
factory does not cannot set a weight (`TrainingJob` refuses it).

    perceptual:
      weight: 0.0               # 0: off (the default; no feature network is built)
      network: lpips            # lpips | radimagenet_resnet50 | in_domain
      lpips_net: alex           # lpips: alex | vgg | squeeze
      pretrained_backbone: true # lpips: false = a seeded random trunk, named so
      weights_path: null        # radimagenet_resnet50 / in_domain checkpoint, or an lpips trunk file
      seed: 0                   # lpips random trunk
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medgen.config import config_to_dict, refuse_unknown_keys
from medgen.training.errors import ConfigError

NETWORKS = ("lpips", "radimagenet_resnet50", "in_domain")
LPIPS_NETS = ("alex", "vgg", "squeeze")


@dataclass(frozen=True)
class PerceptualTermConfig:
    """See the module docstring; ``weight`` 0 (default) switches the term off."""

    weight: float = 0.0
    network: str = "lpips"
    lpips_net: str = "alex"
    pretrained_backbone: bool = True
    weights_path: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"training.perceptual.{key}={getattr(self, key)!r}: {why}")

        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            fail("weight", "must be a finite number >= 0")
        if self.network not in NETWORKS:
            fail("network", f"must be one of {NETWORKS}")
        if self.lpips_net not in LPIPS_NETS:
            fail("lpips_net", f"must be one of {LPIPS_NETS}")
        if not isinstance(self.pretrained_backbone, bool):
            fail("pretrained_backbone", "must be true or false")
        if self.weights_path is not None and not isinstance(self.weights_path, str):
            fail("weights_path", "must be null or a path")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail("seed", "must be an integer >= 0")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> PerceptualTermConfig:
        params = dict(params or {})
        refuse_unknown_keys(cls, params, "training.perceptual", ConfigError)
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)
