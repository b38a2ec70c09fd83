"""Tiny real slices and generated sources for evaluation tests (built in memory)."""

from __future__ import annotations

import torch

from medgen.datasets import TensorBundle

MODALITIES = ["t1_pre", "t1_gd", "flair", "bravo"]
#: A whole ``evaluation`` block (medgen.evaluation.EvaluationParams) at test size.
TINY_PARAMS = {
    "seed": 0,
    "in_domain_backbone": {
        "max_train_slices": 12,
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "feature_dim": 8,
        "width": 4,
        "lesion_head": True,
    },
    "scoring": {
        "reference_splits": ["val", "test"],
        "reference_slices": "all",
        "expected_sources": ["latent_diffusion", "inpainting"],
        "max_generated": 16,
        "floors": {"min_patients_per_half": 1},
        "fid": {
            "backbones": ["in_domain", "inception_v3"],
            "on_missing_weights": "report",
            "batch_size": 32,
            "covariance": "auto",
        },
        "lpips": {"net": "alex", "pretrained_backbone": False, "max_pairs": 8},
        "ms_ssim": {"max_pairs": 8},
        "fidelity": {
            "enabled": True,
            "max_train_slices": 12,
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "channels": [4, 8],
            "strides": [2],
            "lesion_fraction": 0.5,
            "flip": True,
            "torch_threads": None,
        },
    },
    "report": {"grid_samples": 3, "figures_per_source": 2},
}
TINY_SCORING = TINY_PARAMS["scoring"]


def scoring(**overrides) -> dict:
    """TINY_SCORING with whole sub-blocks or single keys of them replaced, e.g.
    ``scoring(fid={"backbones": ["in_domain"]})``."""
    out = {**TINY_SCORING}
    for key, value in overrides.items():
        out[key] = {**TINY_SCORING[key], **value} if isinstance(value, dict) else value
    return out


def _blobs(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 1, size, size] uint8 lesion labels: a square blob in every other slice."""
    seg = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(0, n, 2):
        r, c = torch.randint(4, size - 10, (2,), generator=generator).tolist()
        seg[i, 0, r : r + 6, c : c + 6] = 3
    return seg


def real_slices(n: int = 24, size: int = 64, seed: int = 0) -> TensorBundle:
    """Slices shaped like slices_2d_{split}: a bright disc 'head', lesions brighter still."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    head = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 2.4) ** 2).float()
    seg = _blobs(n, size, generator)
    noise = 0.1 * torch.randn(n, 4, size, size, generator=generator)
    images = (head * 0.8 - 0.6 + noise + 0.8 * (seg > 0).float()).clamp(-1, 1)
    return TensorBundle(
        {
            "images": images.float(),
            "seg": seg,
            "tissue": (head > 0).to(torch.uint8).expand(n, 1, size, size).contiguous(),
            "subject_index": torch.arange(n) // 6,
            "slice_index": torch.arange(n) % 6,
        },
        {"modalities": MODALITIES, "size": size, "split": "test"},
    )


def generated_bundle(
    mode: str = "bravo", n: int = 12, size: int = 32, seed: int = 1
) -> TensorBundle:
    """A fake latent_diffusion samples.safetensors bundle at a smaller size than the real slices."""
    real = real_slices(n, size, seed)
    masks = (real["seg"] > 0).to(torch.uint8)
    if mode == "seg":
        images, targets = masks.float() * 2 - 1, ["seg"]
    else:
        images, targets = real["images"][:, 3:4], ["bravo"]
    return TensorBundle(
        {"images": images.contiguous(), "masks": masks},
        {
            "strategy": "ddpm",
            "mode": mode,
            "target_names": targets,
            "sampler": "ddim",
            "num_steps": 5,
            "guidance_scale": 1.0,
            "seed": seed,
            "pixel_spacing_mm": 6.0,
            "source_models": {},
        },
    )


def partitions(**bundles: TensorBundle) -> dict:
    """What PartitionedDataset.load returns: partition id -> loader."""
    return {f"latent_diffusion/{name}": (lambda b=b: b) for name, b in bundles.items()}


def loss_summary() -> dict:
    history = [{"kind": "step", "step": s, "epoch": 0, "loss": 1.0 / (s + 1)} for s in range(10)]
    return {"combinations": ["ddpm_bravo"], "training": {"ddpm_bravo": {"history": history}}}
