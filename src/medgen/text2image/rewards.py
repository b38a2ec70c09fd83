"""The reward of text2image fine-tuning: the learned Selector (quality) and Policy (prompt-image
alignment) scores, combined as configured. Both are proxies learned from ratings and captions;
the oracle quality and the attribute classifiers are never part of it (they measure hacking)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medgen.config import config_tree_from_params
from medgen.datasets import TensorBundle
from medgen.text2image.alignment import alignment_scores
from medgen.text2image.quality_selector import score_images


@dataclass(frozen=True)
class RewardParams:
    """``text2image.reward``: ``reward = selector_weight · selector + policy_weight · policy``,
    both scores in [0, 1]; ``selector_threshold`` / ``policy_threshold``: what counts as a
    passing image (the selector-filtered data, best-of-N acceptance, pass rates)."""

    selector_weight: float
    policy_weight: float
    selector_threshold: float
    policy_threshold: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RewardParams:
        config = config_tree_from_params(cls, params, "text2image.reward")
        if config.selector_weight < 0 or config.policy_weight < 0:
            raise ValueError("text2image.reward: weights must be >= 0")
        if config.selector_weight + config.policy_weight <= 0:
            raise ValueError("text2image.reward: at least one weight must be > 0")
        for key in ("selector_threshold", "policy_threshold"):
            if not 0.0 <= getattr(config, key) <= 1.0:
                raise ValueError(f"text2image.reward.{key} must be in [0, 1]")
        return config


class RewardModel:
    """``reward(images [N, 1, S, S] in [-1, 1], prompts) -> {selector, policy, reward, passed}``
    (tensors [N]) from the trained scorer bundles."""

    def __init__(
        self,
        selector: TensorBundle,
        alignment: TensorBundle,
        tokenizer_json: Mapping[str, Any],
        params: RewardParams,
    ) -> None:
        self.selector, self.alignment = selector, alignment
        self.tokenizer_json, self.params = dict(tokenizer_json), params

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        if len(prompts) != len(images):
            raise ValueError(f"reward: {len(images)} images but {len(prompts)} prompts")
        p = self.params
        quality = score_images(self.selector, images).float()
        alignment = alignment_scores(
            self.alignment, self.tokenizer_json, images, list(prompts)
        ).float()
        reward = p.selector_weight * quality + p.policy_weight * alignment
        passed = (quality >= p.selector_threshold) & (alignment >= p.policy_threshold)
        return {
            "selector": quality,
            "policy": alignment,
            "reward": reward,
            "passed": passed.float(),
        }
