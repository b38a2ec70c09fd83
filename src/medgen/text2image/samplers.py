"""Text-to-image samplers behind one call, so the stage measurements and best-of-N serve the
offline generator and Stable Diffusion alike.

A sampler is ``sampler(prompts, *, images_per_prompt, guidance_scale, num_steps, seed)`` →
``[P · K, 1, S, S]`` grayscale images in [-1, 1], prompt-major, the noise fixed by ``seed`` (so
two stages sampled with one seed start from the same noise). ``num_steps`` None: the sampler's
own default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.text2image.generator import generate_images, load_generator
from medgen.text2image.pretrained import baseline_generation
from medgen.text2image.tokenizer import tokenize, tokenizer_from_json


class Sampler(Protocol):
    def __call__(
        self,
        prompts: Sequence[str],
        *,
        images_per_prompt: int,
        guidance_scale: float,
        num_steps: int | None,
        seed: int,
    ) -> torch.Tensor: ...


class OfflineSampler:
    """The medgen text2image generator of a bundle, with its own tokenizer; images at the
    generator's resolution."""

    def __init__(self, generator: TensorBundle, tokenizer_json: Mapping[str, Any]) -> None:
        self.task, self.network = load_generator(generator)
        self.tokenizer = tokenizer_from_json(dict(tokenizer_json))
        self.resolution = int(generator.metadata["resolution"])

    def __call__(
        self,
        prompts: Sequence[str],
        *,
        images_per_prompt: int,
        guidance_scale: float,
        num_steps: int | None,
        seed: int,
    ) -> torch.Tensor:
        return generate_images(
            self.task,
            self.network,
            tokenize(self.tokenizer, list(prompts)),
            resolution=self.resolution,
            images_per_prompt=images_per_prompt,
            guidance_scale=guidance_scale,
            num_steps=num_steps,
            seed=seed,
        )


def rgb_to_gray(images: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 3, H, W]`` → ``[B, 1, size, size]``: the channel mean (medgen feeds Stable
    Diffusion grayscale repeated to RGB, so the mean is its inverse), resized (antialiased)."""
    gray = images.float().mean(dim=1, keepdim=True)
    if tuple(gray.shape[-2:]) != (size, size):
        gray = resize_images(gray, (size, size))
    return gray.clamp(-1, 1)


class StableDiffusionSampler:
    """A diffusers Stable Diffusion pipeline (fine-tuned weights already applied) generating at
    ``resolution`` with its own scheduler; images returned gray at ``output_size`` (the side the
    scorers and the oracle are fitted at)."""

    def __init__(
        self, pipe: Any, *, resolution: int, output_size: int, num_inference_steps: int
    ) -> None:
        self.pipe, self.resolution, self.output_size = pipe, int(resolution), int(output_size)
        self.num_inference_steps = int(num_inference_steps)

    def __call__(
        self,
        prompts: Sequence[str],
        *,
        images_per_prompt: int,
        guidance_scale: float,
        num_steps: int | None,
        seed: int,
    ) -> torch.Tensor:
        images = baseline_generation(
            self.pipe,
            list(prompts),
            num_images_per_prompt=images_per_prompt,
            num_inference_steps=num_steps or self.num_inference_steps,
            guidance_scale=guidance_scale,
            height=self.resolution,
            width=self.resolution,
            seed=seed,
        )
        return rgb_to_gray(images, self.output_size)
