"""Reward hacking, measured: each generator stage scored by the proxies it was tuned on and by
measures it never saw, on held-out prompts, with the same noise for every stage.

Per stage (part 1's generator, the Selector-filtered fine-tune, DDPO):

* **proxy**: the Selector's quality score, the Policy's alignment score, their configured
  combination (the reward DDPO maximised) and the pass rate at the thresholds;
* **oracle**: the simulated true quality (`medgen.text2image.quality.oracle_quality`, what the
  simulated raters observed with noise; the Selector only saw their ratings) and the part-1
  attribute classifiers' agreement with the prompt (modality, lesion present, side; trained on
  real slices, never on generated ones or on rewards);
* **Fréchet distance** to the real held-out slices in an in-domain feature space: the attribute
  classifiers' trunk (trained on the real training split), channel-averaged and reduced by a
  PCA fitted on real training slices to ``feature_dims`` dimensions so the covariance of the
  generated set is full rank (n > d; both are reported), with the real-train vs real-held-out
  distance at the same n as the floor.

The headline is the gap: proxy gain minus oracle gain from the first stage. A stage that raises
the proxy while the oracle stays flat or falls is reward hacking, and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.metrics.fid import frechet_distance
from medgen.metrics.images import figure_image, new_figure
from medgen.text2image.attributes import attribute_agreement, load_attribute_classifier
from medgen.text2image.rewards import RewardModel
from medgen.text2image.samplers import Sampler
from medgen.text2image.true_quality import oracle_quality

AGREEMENT_ATTRIBUTES = ("modality", "lesion_present", "side")


@dataclass(frozen=True)
class StageEvalParams:
    """``text2image.stage_evaluation``: ``max_prompts`` held-out prompts x
    ``images_per_prompt`` images per stage at ``guidance_scale`` with ``num_steps`` (null: the
    strategy's) from ``seed``; ``feature_dims`` of the Fréchet distance's PCA."""

    max_prompts: int
    images_per_prompt: int
    guidance_scale: float
    num_steps: int | None
    seed: int
    feature_dims: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StageEvalParams:
        config = config_tree_from_params(cls, params, "text2image.stage_evaluation")
        require_positive_ints(
            config, "text2image.stage_evaluation", "max_prompts", "images_per_prompt",
            "feature_dims",
        )  # fmt: skip
        return config


@torch.no_grad()
def trunk_features(attribute_state: TensorBundle, images: torch.Tensor) -> np.ndarray:
    """[N, 4·width] channel means of the attribute classifiers' trunk (in-domain features)."""
    model = load_attribute_classifier(attribute_state)
    if images.shape[-2:] != (model.input_size,) * 2:
        images = F.interpolate(
            images, size=(model.input_size,) * 2, mode="bilinear", antialias=True
        )
    flat = torch.cat([model.trunk(chunk) for chunk in images.split(256)])
    channels = flat.shape[1] // 16  # the trunk ends in a 4 x 4 map, flattened
    return flat.reshape(len(images), channels, 16).mean(dim=2).double().numpy()


class FeatureSpace:
    """The PCA (fitted on real training features) that the Fréchet distances share."""

    def __init__(self, attribute_state: TensorBundle, real_train: torch.Tensor, dims: int) -> None:
        features = trunk_features(attribute_state, real_train)
        if dims >= min(features.shape):
            raise ValueError(
                f"text2image.stage_evaluation.feature_dims {dims} must be below the feature "
                f"size and the {len(features)} real training images"
            )
        self.state, self.dims = attribute_state, dims
        self.mean = features.mean(axis=0)
        _, _, vt = np.linalg.svd(features - self.mean, full_matrices=False)
        self.components = vt[:dims]

    def project(self, images: torch.Tensor) -> np.ndarray:
        return (trunk_features(self.state, images) - self.mean) @ self.components.T


def frechet(space: FeatureSpace, a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Fréchet distance of two image sets in ``space``; refused when a covariance would be rank
    deficient (n <= d)."""
    n = min(len(a), len(b))
    if n <= space.dims:
        return {"status": "failed", "reason": f"n={n} <= d={space.dims}: rank-deficient covariance"}
    value = frechet_distance(space.project(a), space.project(b))
    return {"value": round(float(value), 4), "n_a": len(a), "n_b": len(b), "d": space.dims}


def mean_agreement(report: Mapping[str, Any]) -> float | None:
    values = [
        report["attributes"][a]["generated"].get("agreement")
        for a in AGREEMENT_ATTRIBUTES
        if "generated" in report["attributes"].get(a, {})
    ]
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def stage_images(sampler: Sampler, prompts: Sequence[str], params: StageEvalParams) -> torch.Tensor:
    """[P·K, 1, S, S] images of ``prompts`` (prompt-major), the same noise for every stage."""
    return sampler(
        list(prompts),
        images_per_prompt=params.images_per_prompt,
        guidance_scale=params.guidance_scale,
        num_steps=params.num_steps,
        seed=params.seed,
    )


def score_stage(
    images: torch.Tensor,
    prompts: Sequence[str],
    reward: RewardModel,
    oracle_reference: Mapping[str, Any],
    attribute_state: TensorBundle,
    real_heldout: TensorBundle,
    space: FeatureSpace,
) -> dict[str, Any]:
    """Proxy, oracle and Fréchet numbers of one stage's images (``prompts``: one per image)."""
    scores = reward(images, prompts)
    generated = TensorBundle({"images": images}, {"prompts": list(prompts)})
    agreement = attribute_agreement(attribute_state, real_heldout, generated)
    return {
        "n_images": len(images),
        "proxy": {k: round(float(v.mean()), 4) for k, v in scores.items()},
        "oracle": {
            "quality": round(float(oracle_quality(images, oracle_reference).mean()), 4),
            "attribute_agreement": mean_agreement(agreement),
            "per_attribute": {
                a: agreement["attributes"][a].get("generated", {}).get("agreement")
                for a in AGREEMENT_ATTRIBUTES
                if a in agreement["attributes"]
            },
        },
        "frechet_to_real_heldout": frechet(space, images, real_heldout["images"]),
    }


def hacking_gaps(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per later stage, the gains from the first stage: proxy (reward, selector, policy) vs
    oracle (quality, attribute agreement); ``gap`` = proxy gain − oracle gain."""
    names = list(stages)
    base = stages[names[0]]
    out = {}
    for name in names[1:]:
        stage = stages[name]
        gains = {
            "selector": stage["proxy"]["selector"] - base["proxy"]["selector"],
            "policy": stage["proxy"]["policy"] - base["proxy"]["policy"],
            "reward": stage["proxy"]["reward"] - base["proxy"]["reward"],
            "oracle_quality": stage["oracle"]["quality"] - base["oracle"]["quality"],
        }
        agreement = stage["oracle"]["attribute_agreement"], base["oracle"]["attribute_agreement"]
        gains["attribute_agreement"] = None if None in agreement else agreement[0] - agreement[1]
        out[name] = {
            "gains_from": names[0],
            **{k: None if v is None else round(v, 4) for k, v in gains.items()},
            "quality_gap": round(gains["selector"] - gains["oracle_quality"], 4),
            "alignment_gap": None
            if gains["attribute_agreement"] is None
            else round(gains["policy"] - gains["attribute_agreement"], 4),
        }
    return out


def stage_grid(
    images: Mapping[str, torch.Tensor],
    prompts: Sequence[str],
    k: int,
    real: torch.Tensor | None = None,
) -> Any:
    """Rows = held-out prompts, columns = stages (image 0 of each prompt: the same noise) and,
    with ``real [P, 1, S, S]``, the real held-out image each prompt is the caption of."""
    images = dict(images)
    if real is not None:
        # one real image per prompt, spaced like the generated ones (row p reads p * k)
        images["real (held-out, this caption)"] = real.repeat_interleave(k, dim=0)
    names = list(images)
    fig = new_figure(figsize=(1.7 * len(names) + 3.0, 1.6 * len(prompts)))
    axes = fig.subplots(len(prompts), len(names), squeeze=False)
    for p, prompt in enumerate(prompts):
        for s, name in enumerate(names):
            ax = axes[p, s]
            ax.imshow(images[name][p * k, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if p == 0:
                ax.set_title(name, fontsize=7)
        axes[p, 0].set_ylabel(
            prompt.replace(": ", ":\n", 1), rotation=0, ha="right", va="center", fontsize=6
        )
    fig.suptitle("text2image stages on held-out prompts (same noise per row)", fontsize=8)
    fig.tight_layout()
    return figure_image(fig, dpi=90, tight=False)
