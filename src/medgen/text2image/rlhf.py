"""The text2image pipeline's part-2 steps (what its nodes call): the rated pool, the two scorers,
the two generator stages, the stage measurements and best-of-N generation. docs/text2image.md.

Stage 0 is part 1's generator; Stage 1 trains the Selector (quality, from ratings) and the Policy
(alignment, from captions); Stage 2a fine-tunes the generator on the Selector-filtered pool;
Stage 2b fine-tunes it with DDPO on the combined reward. Every stage is measured on held-out
prompts by the proxies and by the oracle (`medgen.text2image.stages`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from medgen.datasets import TensorBundle
from medgen.text2image.alignment import evaluate_alignment, train_alignment_scorer
from medgen.text2image.best_of_n import BestOfNParams, best_of_n
from medgen.text2image.generator import generate_images, load_generator
from medgen.text2image.params import GeneratorParams, UndertrainedParams
from medgen.text2image.quality_selector import SelectorParams, train_and_evaluate_selector
from medgen.text2image.rated_pool import RatingsParams, check_ratings, simulate_rated_pool
from medgen.text2image.reinforce import reinforce_generator, rounds_report
from medgen.text2image.rewards import RewardModel, RewardParams
from medgen.text2image.samplers import Sampler
from medgen.text2image.stages import (
    FeatureSpace,
    StageEvalParams,
    frechet,
    hacking_gaps,
    score_stage,
    stage_grid,
    stage_images,
)
from medgen.text2image.tokenizer import tokenize, tokenizer_from_json
from medgen.text2image.true_quality import fit_oracle_reference, oracle_quality
from medgen.text2image.workflow import default_prompts, select, split_rows, train_generator


def distinct_prompts(captioned: TensorBundle, split: str) -> list[str]:
    """The distinct captions of ``split``, in row order."""
    texts = captioned.metadata["texts"]
    return list(dict.fromkeys(texts[i] for i in split_rows(captioned, split)))


def heldout_prompts(captioned: TensorBundle, max_prompts: int) -> list[str]:
    """Distinct test captions spread over modality x lesion (part 1's generation prompts)."""
    return [captioned.metadata["texts"][i] for i in default_prompts(captioned, max_prompts)]


def train_undertrained_generator(
    captioned: TensorBundle,
    tokenizer_json: dict[str, Any],
    params: GeneratorParams,
    network: dict[str, Any],
    max_steps: int,
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Part 1's generator job stopped after ``max_steps``: the deliberately poor images of the
    rated pool (the same recipe, so only training length differs)."""
    training = {**params.training, "max_steps": int(max_steps)}
    training["warmup_steps"] = min(int(training.get("warmup_steps", 0)), int(max_steps) - 1)
    return train_generator(
        captioned, tokenizer_json, replace(params, training=training), network, checkpoint_dir
    )


def undertrained_images(
    generator: TensorBundle,
    tokenizer_json: dict[str, Any],
    captioned: TensorBundle,
    per_split: int,
    num_steps: int | None,
    guidance_scale: float,
    seed: int,
) -> tuple[torch.Tensor, list[int]]:
    """Images of the under-trained generator for the captions of ``per_split`` rows of every
    split (so held-out patients have some too) and the rows whose captions they used."""
    generator_rng = torch.Generator().manual_seed(seed)
    rows: list[int] = []
    for split in ("train", "val", "test"):
        candidates = split_rows(captioned, split)
        order = torch.randperm(len(candidates), generator=generator_rng)[:per_split]
        rows += [candidates[i] for i in order.tolist()]
    if not rows:
        return torch.zeros(0, 1, 1, 1), []
    prompts = [captioned.metadata["texts"][i] for i in rows]
    task, network = load_generator(generator)
    images = generate_images(
        task,
        network,
        tokenize(tokenizer_from_json(tokenizer_json), prompts),
        resolution=generator.metadata["resolution"],
        images_per_prompt=1,
        guidance_scale=guidance_scale,
        num_steps=num_steps,
        seed=seed,
    )
    return images, rows


def simulated_rating_pool(
    captioned: TensorBundle,
    undertrained_generator: TensorBundle,
    tokenizer_json: dict[str, Any],
    ratings: Mapping[str, Any],
    undertrained: UndertrainedParams,
) -> tuple[dict[str, Any], Any, dict[str, Any], dict[str, Any]]:
    """The rated pool at the generator's resolution: PNGs, ratings table, the oracle's reference
    (fitted on the real training slices) and a report of its composition."""
    params = RatingsParams.from_params(ratings)
    size = int(undertrained_generator.metadata["resolution"])
    train = select(captioned, split_rows(captioned, "train"))
    reference = fit_oracle_reference(train["images"], size)
    generated, rows = undertrained_images(
        undertrained_generator, tokenizer_json, captioned, undertrained.images_per_split,
        undertrained.num_steps, undertrained.guidance_scale, undertrained.seed,
    )  # fmt: skip
    files, table = simulate_rated_pool(captioned, generated, rows, reference, params)
    images = table.drop_duplicates("image_path")
    report = {
        "images": len(images),
        "ratings": len(table),
        "by_source": images["source"].value_counts().to_dict(),
        "by_split": images["split"].value_counts().to_dict(),
        "rating_counts": table["rating"].value_counts().sort_index().to_dict(),
        "oracle_quality_mean_by_source": images.groupby("source")["oracle_quality"]
        .mean()
        .round(4)
        .to_dict(),
        "mean_rating_by_source": table.groupby("source")["rating"].mean().round(3).to_dict(),
        "oracle_reference": {"n_real": reference["n_real"], "size": reference["size"]},
    }
    return files, table, reference, report


def train_selector(
    rated: TensorBundle,
    params: Mapping[str, Any],
    ratings: Mapping[str, Any],
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, dict[str, Any], Any]:
    """The Selector from the usable rating rows (bad rows per ``ratings.on_bad_row``)."""
    rating_params = RatingsParams.from_params(ratings)
    kept, rejected = check_ratings(rated, rating_params.expert_levels, rating_params.on_bad_row)
    usable = select(rated, kept)
    selector, report, plot = train_and_evaluate_selector(
        usable, SelectorParams.from_params(params), checkpoint_dir
    )
    report["rejected_rating_rows"] = rejected
    report["rejected_image_rows"] = len(rated.metadata.get("rejected", []))
    return selector, report, plot


def reward_model(
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    reward: Mapping[str, Any],
) -> RewardModel:
    return RewardModel(selector, alignment, tokenizer_json, RewardParams.from_params(reward))


def reinforce(
    generator: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer_json: dict[str, Any],
    captioned: TensorBundle,
    reinforce_params: Mapping[str, Any],
    reward: Mapping[str, Any],
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Stage 2b: DDPO on the training captions; the generator and a report of the rounds."""
    prompts = distinct_prompts(captioned, "train")
    if not prompts:
        raise ValueError("text2image.reinforce: no training captions to use as prompts")
    tokens = tokenize(tokenizer_from_json(tokenizer_json), prompts)
    bundle, outcome = reinforce_generator(
        generator, selector, alignment, tokenizer_json, tokens, prompts,
        reinforce_params, reward, checkpoint_dir,
    )  # fmt: skip
    report = rounds_report(
        outcome,
        "DDPO (PPO-clipped policy gradient on the denoising chain) + KL to start",
        len(prompts),
    )
    return bundle, report


def measure_stages(
    samplers: Mapping[str, Sampler],
    captioned: TensorBundle,
    reward: RewardModel,
    oracle_reference: Mapping[str, Any],
    attribute_state: TensorBundle,
    params: StageEvalParams,
) -> tuple[dict[str, Any], Any]:
    """Every stage's proxy / oracle / Fréchet numbers on held-out prompts, the gaps, a grid
    (``samplers``: the stages in order, each sampled in turn)."""
    rows = default_prompts(captioned, params.max_prompts)
    prompts = [captioned.metadata["texts"][i] for i in rows]
    if not prompts:
        raise ValueError("text2image stage evaluation: no held-out (test or val) captions")
    per_image = [p for p in prompts for _ in range(params.images_per_prompt)]
    real_train = select(captioned, split_rows(captioned, "train"))["images"]
    heldout = select(captioned, split_rows(captioned, "test") or split_rows(captioned, "val"))
    space = FeatureSpace(attribute_state, real_train, params.feature_dims)
    images = {name: stage_images(sampler, prompts, params) for name, sampler in samplers.items()}
    stages = {
        name: score_stage(
            batch, per_image, reward, oracle_reference, attribute_state, heldout, space
        )
        for name, batch in images.items()
    }
    n = len(per_image)
    floor_rows = torch.randperm(len(real_train), generator=torch.Generator().manual_seed(0))[:n]
    real_scores = reward(heldout["images"], heldout.metadata["texts"])
    report = {
        "prompts": prompts,
        "images_per_prompt": params.images_per_prompt,
        "guidance_scale": params.guidance_scale,
        "stages": stages,
        "gaps": hacking_gaps(stages),
        "real_heldout_reference": {
            "n_images": len(heldout["images"]),
            "proxy": {k: round(float(v.mean()), 4) for k, v in real_scores.items()},
            "oracle_quality": round(
                float(oracle_quality(heldout["images"], oracle_reference).mean()), 4
            ),
            "frechet_real_train_vs_heldout": frechet(
                space, real_train[floor_rows], heldout["images"]
            ),
        },
        "feature_space": {
            "network": "text2image attribute classifiers' trunk, trained on the real training "
            "split (in-domain; no pretrained weights)",
            "pca_dims": params.feature_dims,
        },
    }
    # each prompt is a held-out image's caption: that image is the grid's real column
    grid = stage_grid(images, prompts, params.images_per_prompt, real=captioned["images"][rows])
    return report, grid


def quality_filtered_generation(
    sampler: Sampler,
    captioned: TensorBundle,
    reward: RewardModel,
    oracle_reference: Mapping[str, Any],
    params: BestOfNParams,
) -> tuple[dict[str, Any], TensorBundle, dict[str, Any]]:
    """Best-of-N on held-out prompts with the final generator's ``sampler``; files, kept bundle,
    report (with the oracle quality of kept vs unfiltered images)."""
    prompts = heldout_prompts(captioned, params.max_prompts)
    return best_of_n(
        sampler, prompts, reward, params,
        oracle=lambda images: oracle_quality(images, oracle_reference),
    )  # fmt: skip


def train_alignment(
    captioned: TensorBundle,
    tokenizer_json: dict[str, Any],
    params: Mapping[str, Any],
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, dict[str, Any]]:
    """The Policy on the training captions; held-out-patient AUROC of matched vs attribute-swapped
    captions (pooled and balanced over the swapped value) and vs shuffled captions."""
    scorer, report = train_alignment_scorer(captioned, tokenizer_json, params, checkpoint_dir)
    evaluation = evaluate_alignment(scorer, tokenizer_json, captioned)
    headline = {
        f"{kind}_swap": {
            key: evaluation["swapped"][kind].get(key)
            for key in ("n_negative", "auroc", "balanced_auroc", "chance_sd")
        }
        for kind in evaluation["swapped"]
    }
    headline["shuffled"] = {
        k: evaluation["shuffled"].get(k) for k in ("n_negative", "auroc", "chance_sd")
    }
    return scorer, {"training": report, "heldout": evaluation, "headline": headline}
