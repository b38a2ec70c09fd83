"""Quality-filtered generation (best-of-N): up to N attempts per prompt, keep the candidates the
Selector passes, rank them by the Policy, name each file by the scores it claims.

A candidate is accepted when it reaches both thresholds (``text2image.reward``); a prompt gets
further attempts until ``keep_per_prompt`` candidates were accepted or N are spent, so a
Policy threshold never ends a prompt's attempts early.

Attempt ``a`` of every prompt starts from the noise of seed ``(seed, a)``, so attempt 0 is the
unfiltered baseline ("take the first image") scored the same way beside the filtered set.
Files: ``<Modality>_<i>_selector_<s>_policy_<p>.png`` with the modality's caption name
(``FLAIR``, ``T1_post-gadolinium``), ``i`` counting kept images over the run, the scores with two
decimals.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.metrics.images import to_uint8
from medgen.text2image.rewards import RewardModel
from medgen.text2image.samplers import Sampler

_PROMPT_MODALITY = re.compile(r"Brain MRI, (?P<name>[^:]+):")


@dataclass(frozen=True)
class BestOfNParams:
    """``text2image.best_of_n``: ``attempts`` N per prompt, ``keep_per_prompt`` (at most, the
    Policy's best among the passing ones), ``max_prompts`` held-out prompts,
    ``guidance_scale``, ``num_steps`` (null: the strategy's), ``seed``. The thresholds are
    ``text2image.reward``'s."""

    attempts: int
    keep_per_prompt: int
    max_prompts: int
    guidance_scale: float
    num_steps: int | None
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BestOfNParams:
        config = config_tree_from_params(cls, params, "text2image.best_of_n")
        require_positive_ints(
            config, "text2image.best_of_n", "attempts", "keep_per_prompt", "max_prompts"
        )
        return config


def modality_label(prompt: str) -> str:
    """The file-name modality of a prompt ("Brain MRI, FLAIR: ..." -> ``FLAIR``)."""
    match = _PROMPT_MODALITY.match(prompt)
    name = match.group("name") if match else "image"
    return re.sub(r"[^A-Za-z0-9-]+", "_", name).strip("_") or "image"


def file_name(prompt: str, index: int, selector: float, policy: float) -> str:
    return f"{modality_label(prompt)}_{index}_selector_{selector:.2f}_policy_{policy:.2f}"


def best_of_n(
    sampler: Sampler,
    prompts: Sequence[str],
    reward: RewardModel,
    params: BestOfNParams,
    oracle: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, Image.Image], TensorBundle, dict[str, Any]]:
    """``({file name: PNG}, kept images bundle, report)``; attempts stop for a prompt once
    ``keep_per_prompt`` candidates passed. ``oracle``: a score the filter never sees (the
    simulated true quality), reported for the kept and the unfiltered images alike."""
    thresholds = reward.params
    kept: list[dict[str, Any]] = []
    baseline: list[dict[str, torch.Tensor]] = []
    attempts_per_prompt = [0] * len(prompts)
    passing: list[list[dict[str, Any]]] = [[] for _ in prompts]
    passed_selector = 0
    for attempt in range(params.attempts):
        open_prompts = [i for i in range(len(prompts)) if len(passing[i]) < params.keep_per_prompt]
        if not open_prompts:
            break
        images = sampler(
            [prompts[i] for i in open_prompts],
            images_per_prompt=1,
            guidance_scale=params.guidance_scale,
            num_steps=params.num_steps,
            seed=params.seed * 1009 + attempt,
        )
        scores = reward(images, [prompts[i] for i in open_prompts])
        if attempt == 0:
            baseline.append({**scores, "images": images})
        for j, i in enumerate(open_prompts):
            attempts_per_prompt[i] += 1
            selector_ok = float(scores["selector"][j]) >= thresholds.selector_threshold
            passed_selector += selector_ok
            if selector_ok and float(scores["policy"][j]) >= thresholds.policy_threshold:
                passing[i].append(
                    {
                        "image": images[j],
                        "selector": float(scores["selector"][j]),
                        "policy": float(scores["policy"][j]),
                        "prompt": prompts[i],
                        "attempt": attempt,
                    }
                )
    for candidates in passing:
        kept.extend(sorted(candidates, key=lambda c: -c["policy"])[: params.keep_per_prompt])
    files = {}
    for index, item in enumerate(kept):
        name = file_name(item["prompt"], index, item["selector"], item["policy"])
        item["file"] = f"{name}.png"
        files[name] = Image.fromarray(to_uint8(item["image"][0]), mode="L")
    attempts = sum(attempts_per_prompt)
    first = baseline[0]
    report = {
        "attempts_per_prompt_max": params.attempts,
        "prompts": len(prompts),
        "attempts": attempts,
        "candidates_passing_selector": int(passed_selector),
        "candidates_accepted": sum(len(c) for c in passing),
        "kept": len(kept),
        "acceptance_rate": round(sum(len(c) for c in passing) / max(attempts, 1), 4),
        "prompts_with_a_kept_image": sum(
            any(k["prompt"] == p for k in kept) for p in dict.fromkeys(prompts)
        ),
        "selector_threshold": thresholds.selector_threshold,
        "policy_threshold": thresholds.policy_threshold,
        "kept_mean": {
            "selector": _mean([k["selector"] for k in kept]),
            "policy": _mean([k["policy"] for k in kept]),
        },
        "unfiltered_baseline_mean": {
            "selector": round(float(first["selector"].mean()), 4),
            "policy": round(float(first["policy"].mean()), 4),
            "pass_rate": round(float(first["passed"].mean()), 4),
        },
        "files": [
            {k: item[k] for k in ("file", "prompt", "selector", "policy", "attempt")}
            for item in kept
        ],
    }
    images = torch.stack([k["image"] for k in kept]) if kept else torch.zeros(0, 1, 1, 1)
    if oracle is not None:
        report["unfiltered_baseline_mean"]["oracle_quality"] = _mean(
            oracle(first["images"]).tolist()
        )
        report["kept_mean"]["oracle_quality"] = _mean(oracle(images).tolist()) if kept else None
    bundle = TensorBundle({"images": images}, {"prompts": [k["prompt"] for k in kept]})
    return files, bundle, report


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
