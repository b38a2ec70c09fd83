"""The embedded synthetic brain-MRI cohort, built from the MNI152 template in nilearn.

Per subject: a random affine + elastic deformation of the template and its tissue maps,
0-3 metastasis-like lesions, four MRI contrasts rendered from tissue and lesion
compartments, each with its own bias field, noise and intensity jitter (MONAI
transforms), a CSF/GM/WM segmentation, a tumour-growth probability map, and BraTS 2023
local-synthesis inputs (t1n, three masks in healthy tissue, voided t1n). Everything is
seeded by (cohort seed, subject index), so subject k is the same whatever the cohort size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Rand3DElastic, RandBiasField, RandRicianNoise
from scipy import ndimage

from medgen.config import config_from_params
from medgen.data.labels import TISSUE_LABELS  # noqa: F401  (re-exported)
from medgen.data.lesions import (
    ENHANCING,
    NECROTIC,
    OEDEMA,
    describe_lesions,
    growth_probability,
    place_inpainting_masks,
    render_lesions,
    sample_lesion_specs,
)
from medgen.data.template import BrainTemplate
from medgen.datasets import SubjectPayload

# Bump when the synthesis changes, so cached cohorts are rebuilt.
GENERATOR_VERSION = 1

IMAGE_MODALITIES = ("t1_pre", "t1_gd", "flair", "bravo")

# Relative signal of (CSF, GM, WM, necrotic core, enhancing rim) and the factor applied
# to oedematous tissue, loosely following clinical appearance at 1.5-3 T.
_CONTRASTS = {
    "t1_pre": {"csf": None, "necrotic": 0.25, "enhancing": 0.55, "oedema": 0.85},
    "t1_gd": {"csf": None, "necrotic": 0.25, "enhancing": 1.25, "oedema": 0.85},
    "flair": {
        "csf": 0.12,
        "gm": 0.62,
        "wm": 0.45,
        "necrotic": 0.55,
        "enhancing": 0.8,
        "oedema": 1.9,
    },
    "bravo": {
        "csf": 0.1,
        "gm": 0.45,
        "wm": 0.95,
        "necrotic": 0.2,
        "enhancing": 1.35,
        "oedema": 0.8,
    },
}


@dataclass(frozen=True)
class CohortConfig:
    """Parameters of the synthetic cohort (``params:cohort``); defaults are the CPU demo."""

    # false when raw_cohort points at real data in the catalog: nothing is generated
    enabled: bool = True
    n_subjects: int = 24
    seed: int = 42
    resolution_mm: int = 2
    subject_prefix: str = "BraTS-SYN"
    lesion_count_probabilities: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)
    lesion_radius_mm: tuple[float, float] = (4.0, 12.0)
    elastic_sigma: tuple[float, float] = (5.0, 8.0)
    elastic_magnitude: tuple[float, float] = (100.0, 200.0)
    rotate_deg: float = 6.0
    scale_fraction: float = 0.06
    translate_mm: float = 4.0
    noise_std: tuple[float, float] = (0.01, 0.05)
    bias_coeff: tuple[float, float] = (0.0, 0.3)
    intensity_jitter: float = 0.1
    inpainting_masks: int = 3
    inpainting_radius_mm: tuple[float, float] = (8.0, 14.0)
    growth_length_mm: tuple[float, float] = (6.0, 12.0)
    intensity_scale: float = 1000.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CohortConfig:
        config = config_from_params(cls, params, "cohort")
        if config.n_subjects < 1:
            raise ValueError("cohort.n_subjects must be at least 1")
        if abs(sum(config.lesion_count_probabilities) - 1.0) > 1e-6:
            raise ValueError("cohort.lesion_count_probabilities must sum to 1")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def subject_id(config: CohortConfig, index: int) -> str:
    """BraTS-style id: <prefix>-<patient:05d>-<timepoint:03d>."""
    return f"{config.subject_prefix}-{index:05d}-000"


def _deform(
    template: BrainTemplate, config: CohortConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One random affine + elastic warp applied jointly to T1 and the tissue maps."""
    voxel_mm = float(template.voxel_size_mm.mean())
    warp = Rand3DElastic(
        sigma_range=config.elastic_sigma,
        magnitude_range=config.elastic_magnitude,
        prob=1.0,
        rotate_range=[np.deg2rad(config.rotate_deg)] * 3,
        scale_range=[config.scale_fraction] * 3,
        translate_range=[config.translate_mm / voxel_mm] * 3,
        padding_mode="zeros",
    )
    warp.set_random_state(seed=int(rng.integers(2**31)))
    stacked = torch.from_numpy(np.stack([template.t1, template.gm, template.wm, template.brain]))
    t1, gm, wm, brain = np.asarray(warp(stacked), dtype=np.float32)
    brain = (brain > 0.5).astype(np.float32)
    return {"t1": t1 * brain, "gm": gm * brain, "wm": wm * brain, "brain": brain}


def _tissue_labels(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
    labels[brain < 0.5] = 0
    return labels


def _render_contrast(
    modality: str, anatomy: dict[str, np.ndarray], compartments: dict[str, np.ndarray]
) -> np.ndarray:
    """Noise-free image in ~[0, 1.4]: tissue signal, with lesion compartments blended in."""
    spec = _CONTRASTS[modality]
    if spec["csf"] is None:  # T1 contrasts: use the template's real T1 intensities
        image = anatomy["t1"].copy()
    else:
        csf = np.clip(anatomy["brain"] - anatomy["gm"] - anatomy["wm"], 0.0, 1.0)
        image = spec["csf"] * csf + spec["gm"] * anatomy["gm"] + spec["wm"] * anatomy["wm"]
    oedema, necrotic, enhancing = (
        compartments["oedema"],
        compartments["necrotic"],
        compartments["enhancing"],
    )
    image = image * (1 - oedema) + np.clip(image * spec["oedema"], 0, 1.4) * oedema
    tumour = np.clip(necrotic + enhancing, 0, 1)
    image = image * (1 - tumour) + spec["necrotic"] * necrotic + spec["enhancing"] * enhancing
    return image * anatomy["brain"]


def _acquire(
    image: np.ndarray, config: CohortConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Scanner effects: intensity jitter, smooth bias field, Rician noise (MONAI transforms)."""
    gain = 1.0 + rng.uniform(-config.intensity_jitter, config.intensity_jitter)
    gamma = 1.0 + rng.uniform(-config.intensity_jitter, config.intensity_jitter)
    image = gain * np.power(np.clip(image, 0, None), gamma)
    bias_strength = float(rng.uniform(*config.bias_coeff))
    bias = RandBiasField(degree=3, coeff_range=(bias_strength, bias_strength + 1e-6), prob=1.0)
    bias.set_random_state(seed=int(rng.integers(2**31)))
    noise_std = float(rng.uniform(*config.noise_std))
    noise = RandRicianNoise(prob=1.0, std=noise_std, sample_std=False)
    noise.set_random_state(seed=int(rng.integers(2**31)))
    tensor = torch.from_numpy(image[None].astype(np.float32))
    tensor = noise(bias(tensor))
    acquired = np.asarray(tensor, dtype=np.float32)[0]
    return acquired, {
        "noise_std": round(noise_std, 4),
        "bias_coeff": round(bias_strength, 4),
        "gain": round(gain, 4),
    }


def _int16_image(volume: np.ndarray, affine: np.ndarray, scale: float) -> nib.Nifti1Image:
    """Scanner-like storage: signed 16-bit integers."""
    data = np.clip(np.rint(volume * scale), 0, np.iinfo(np.int16).max).astype(np.int16)
    return nib.Nifti1Image(data, affine)


def _label_image(labels: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.Nifti1Image(labels.astype(np.uint8), affine)


def synthesise_subject(template: BrainTemplate, config: CohortConfig, index: int) -> SubjectPayload:
    """Build every file of subject ``index`` (see module docstring)."""
    rng = np.random.default_rng([config.seed, index])
    voxel_mm = float(template.voxel_size_mm.mean())
    anatomy = _deform(template, config, rng)

    n_lesions = int(
        rng.choice(len(config.lesion_count_probabilities), p=config.lesion_count_probabilities)
    )
    specs = sample_lesion_specs(
        rng,
        n_lesions,
        anatomy["brain"],
        anatomy["gm"],
        anatomy["wm"],
        voxel_mm,
        config.lesion_radius_mm,
    )
    seg = render_lesions(specs, anatomy["brain"], anatomy["wm"], rng)
    # Slightly blurred compartments give partial-volume edges instead of voxel steps.
    compartments = {
        name: ndimage.gaussian_filter((seg == label).astype(np.float32), 0.6)
        for name, label in (("necrotic", NECROTIC), ("oedema", OEDEMA), ("enhancing", ENHANCING))
    }

    affine = template.affine
    sid = subject_id(config, index)
    images: dict[str, nib.Nifti1Image] = {}
    acquisition: dict[str, dict] = {}
    for modality in IMAGE_MODALITIES:
        volume, acquisition[modality] = _acquire(
            _render_contrast(modality, anatomy, compartments), config, rng
        )
        images[modality] = _int16_image(volume, affine, config.intensity_scale)
    images["seg"] = _label_image(seg, affine)
    images["tissue"] = _label_image(
        _tissue_labels(anatomy["gm"], anatomy["wm"], anatomy["brain"]), affine
    )
    length_mm = float(rng.uniform(*config.growth_length_mm))
    images["growth"] = nib.Nifti1Image(
        growth_probability(seg, anatomy["brain"], anatomy["wm"], voxel_mm, length_mm), affine
    )

    # BraTS 2023 local synthesis: native T1 (t1n), healthy-tissue masks, voided copies.
    t1n = np.asarray(images["t1_pre"].dataobj)
    images["t1n"] = nib.Nifti1Image(t1n.copy(), affine)
    radius_vox = tuple(r / voxel_mm for r in config.inpainting_radius_mm)
    masks = place_inpainting_masks(
        rng, anatomy["brain"], seg > 0, config.inpainting_masks, radius_vox
    )
    for k, mask in enumerate(masks):
        images[f"mask-{k:04d}"] = _label_image(mask, affine)
        images[f"t1n-voided-{k:04d}"] = nib.Nifti1Image(
            np.where(mask > 0, 0, t1n).astype(np.int16), affine
        )

    metadata = {
        "subject_id": sid,
        "index": index,
        "synthetic": True,
        "generator_version": GENERATOR_VERSION,
        "lesions": describe_lesions(seg, affine),
        "acquisition": acquisition,
        "growth_length_mm": round(length_mm, 2),
    }
    return SubjectPayload(images=images, metadata=metadata)
