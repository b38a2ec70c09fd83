"""The text2image pipeline's steps on the captioned-image bundle (what the nodes call).

The bundle is `medgen.datasets.CSVImageDataset` reading ``captions_2d.csv`` (or any CSV of
``path,text,modality`` rows): ``images`` [N, C, S, S] in [-1, 1], metadata ``texts``,
``modalities`` and the extra columns (``split``, ``n_metastases``, ...). Rows without a
``split`` column are all training rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.generation.nifti import slice_to_nifti
from medgen.metrics.images import figure_image, new_figure, to_uint8
from medgen.text2image.generator import (
    generate_images,
    generator_weights,
    load_generator,
    train_text2image,
)
from medgen.text2image.params import GenerationParams, GeneratorParams, TokenizerParams
from medgen.text2image.tokenizer import (
    tokenize,
    tokenizer_from_json,
    tokenizer_info,
    tokenizer_to_json,
    train_tokenizer,
)


def split_rows(bundle: TensorBundle, split: str) -> list[int]:
    """Row positions of ``split`` (every row when the CSV has no ``split`` column)."""
    splits = bundle.metadata.get("extra_columns", {}).get("split")
    if splits is None:
        return list(range(len(bundle["images"])))
    return [i for i, s in enumerate(splits) if str(s) == split]


def select(bundle: TensorBundle, rows: Sequence[int]) -> TensorBundle:
    """The bundle restricted to ``rows`` (tensors and per-row metadata)."""
    meta = dict(bundle.metadata)
    for key in ("texts", "modalities", "paths"):
        if key in meta:
            meta[key] = [meta[key][i] for i in rows]
    meta["extra_columns"] = {
        k: [v[i] for i in rows] for k, v in bundle.metadata.get("extra_columns", {}).items()
    }
    index = torch.as_tensor(list(rows), dtype=torch.long)
    return TensorBundle({k: v[index] for k, v in bundle.tensors.items()}, meta)


def fit_tokenizer(captioned: TensorBundle, params: TokenizerParams) -> dict[str, Any]:
    """The WordLevel tokenizer of the training captions, as JSON for the catalog."""
    rows = split_rows(captioned, "train")
    if not rows:
        raise ValueError("text2image: no training rows to fit the tokenizer on")
    texts = [captioned.metadata["texts"][i] for i in rows]
    tokenizer = train_tokenizer(
        texts,
        vocab_size=params.vocab_size,
        min_frequency=params.min_frequency,
        max_length=params.max_length,
    )
    return tokenizer_to_json(tokenizer)


def _has_lesion(bundle: TensorBundle, i: int) -> bool:
    counts = bundle.metadata.get("extra_columns", {}).get("n_metastases")
    if counts is None:
        return False
    try:
        return float(counts[i]) > 0
    except (TypeError, ValueError):
        return False


def train_generator(
    captioned: TensorBundle,
    tokenizer_json: dict[str, Any],
    params: GeneratorParams,
    network: dict[str, Any],
    checkpoint_dir: str | Path,
    autoencoder: TensorBundle | None = None,
    latent_space: dict[str, Any] | None = None,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train the generator on the training rows; the weights bundle and a report."""
    if params.space == "latent" and (autoencoder is None or not latent_space):
        raise ValueError(
            "text2image.generator.space is 'latent' but there is no trained 2D autoencoder: run "
            "`kedro run --pipelines autoencoder` first (data/06_models/autoencoder/)"
        )
    tokenizer = tokenizer_from_json(tokenizer_json)
    rows = split_rows(captioned, "train")
    rows = [
        i for i in rows for _ in range(params.lesion_repeat if _has_lesion(captioned, i) else 1)
    ]
    train = select(captioned, rows)
    # the 64² slices at the training size (antialiased), still in [-1, 1]
    images = resize_images(train["images"], (params.resolution,) * 2).clamp(-1, 1)
    tokens = tokenize(tokenizer, train.metadata["texts"])
    channels = ["gray"] if images.shape[1] == 1 else ["red", "green", "blue"][: images.shape[1]]
    info = tokenizer_info(tokenizer)
    outcome, task_config = train_text2image(
        images,
        tokens,
        strategy=params.strategy_config(),
        channels=channels,
        network=network,
        tokenizer_info=info,
        training=params.training,
        checkpoint_dir=checkpoint_dir,
        resources=params.resources,
        torch_threads=params.torch_threads,
        latent_space=latent_space if params.space == "latent" else None,
        autoencoder=autoencoder if params.space == "latent" else None,
    )
    result = outcome.result
    losses = [r["loss"] for r in result.history if r.get("kind") == "step"]
    report = {
        "training_items": len(rows),
        "distinct_training_images": len(set(rows)),
        "lesion_repeat": params.lesion_repeat,
        "resolution": params.resolution,
        "space": params.space,
        "strategy": params.strategy,
        "steps": result.steps,
        "epochs": round(result.epochs, 2),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "seconds": round(outcome.seconds, 1),
        "skipped": outcome.skipped,
        "weights": "ema" if result.ema_state is not None else "last",
    }
    meta = {
        "task_config": task_config,
        "network": dict(network),
        "tokenizer_info": info,
        "resolution": params.resolution,
    }
    return TensorBundle(generator_weights(outcome), meta), report


def default_prompts(captioned: TensorBundle, max_prompts: int) -> list[int]:
    """Rows of distinct test captions, spread over modalities and over lesion / no lesion."""
    rows = split_rows(captioned, "test") or split_rows(captioned, "val")
    seen, groups = set(), {}
    for i in rows:
        text = captioned.metadata["texts"][i]
        if text in seen:
            continue
        seen.add(text)
        key = (captioned.metadata["modalities"][i], _has_lesion(captioned, i))
        groups.setdefault(key, []).append(i)
    chosen, order = [], sorted(groups)
    while len(chosen) < max_prompts and any(groups[k] for k in order):
        for key in order:
            if groups[key] and len(chosen) < max_prompts:
                chosen.append(groups[key].pop(0))
    return chosen


def generate(
    generator: TensorBundle,
    tokenizer_json: dict[str, Any],
    captioned: TensorBundle,
    params: GenerationParams,
    autoencoder: TensorBundle | None = None,
) -> tuple[TensorBundle, dict[str, Any]]:
    """K images per prompt, fixed noise per column; the samples bundle and a report."""
    tokenizer = tokenizer_from_json(tokenizer_json)
    if params.prompts:
        prompts, modalities = list(params.prompts), [None] * len(params.prompts)
    else:
        rows = default_prompts(captioned, params.max_prompts)
        prompts = [captioned.metadata["texts"][i] for i in rows]
        modalities = [captioned.metadata["modalities"][i] for i in rows]
    if not prompts:
        raise ValueError("text2image generation: no prompts (set generation.prompts)")
    task, network = load_generator(generator, autoencoder)
    start = time.perf_counter()
    images = generate_images(
        task,
        network,
        tokenize(tokenizer, prompts),
        resolution=generator.metadata["resolution"],
        images_per_prompt=params.images_per_prompt,
        guidance_scale=params.guidance_scale,
        num_steps=params.num_steps,
        seed=params.seed,
    )
    seconds = time.perf_counter() - start
    k = params.images_per_prompt
    metadata = {
        "prompts": [p for p in prompts for _ in range(k)],
        "modalities": [m for m in modalities for _ in range(k)],
        "distinct_prompts": prompts,
        "images_per_prompt": k,
        "guidance_scale": params.guidance_scale,
        "strategy": task.strategy.name,
        "network_evaluations": task.strategy.num_sampling_steps(params.num_steps),
        "intensity_range": [-1.0, 1.0],
    }
    tensors = {"images": images, "prompt_index": torch.arange(len(prompts)).repeat_interleave(k)}
    report = {
        "prompts": len(prompts),
        "images": len(images),
        "seconds": round(seconds, 2),
        "seconds_per_image": round(seconds / max(len(images), 1), 4),
        "guidance_scale": params.guidance_scale,
        "network_evaluations_per_image": metadata["network_evaluations"],
    }
    return TensorBundle(tensors, metadata), report


def image_files(samples: TensorBundle, pixel_spacing_mm: float) -> tuple[dict, dict]:
    """``{prompt_<p>/image_<k>: PNG}`` and the same keys as NIfTI slices (MR, in mm)."""
    pngs, niftis = {}, {}
    k = samples.metadata["images_per_prompt"]
    for i, image in enumerate(samples["images"]):
        key = f"prompt_{i // k:02d}/image_{i % k}"
        pngs[key] = Image.fromarray(to_uint8(image[0]), mode="L")
        niftis[key] = slice_to_nifti(image[0], pixel_spacing_mm, samples.metadata["prompts"][i])
    return pngs, niftis


def prompt_grid(samples: TensorBundle) -> Image.Image:
    """Rows = prompts (captioned), columns = the K images at fixed noise."""
    prompts = samples.metadata["distinct_prompts"]
    k = samples.metadata["images_per_prompt"]
    images = samples["images"]
    fig = new_figure(figsize=(1.6 * k + 3.2, 1.6 * len(prompts)))
    axes = fig.subplots(len(prompts), k, squeeze=False)
    for p, prompt in enumerate(prompts):
        for j in range(k):
            ax = axes[p, j]
            ax.imshow(images[p * k + j, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[p, 0].set_ylabel(_wrap(prompt), rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(
        f"text2image: {k} images per prompt (same noise per column), guidance "
        f"{samples.metadata['guidance_scale']}",
        fontsize=8,
    )
    fig.tight_layout()
    return figure_image(fig, dpi=90, tight=False)


def _wrap(text: str, width: int = 34) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
