"""Metastasis-like lesions, inpainting masks in healthy tissue, and tumour-growth maps.

A lesion is a perturbed ellipsoid with three compartments, labelled as in BraTS-METS:
1 necrotic core (NETC), 2 surrounding oedema (SNFH), 3 enhancing rim (ET). Metastases
seed at the grey/white-matter junction, where they arise in patients; oedema spreads
mostly through white matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medgen.data.anatomy import approximate_lobe, hemisphere
from medgen.data.labels import ENHANCING, LESION_LABELS, NECROTIC, OEDEMA  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class LesionSpec:
    centre_vox: tuple[float, float, float]
    radius_vox: tuple[float, float, float]
    core_fraction: float
    oedema_factor: float


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def sample_lesion_specs(
    rng: np.random.Generator,
    n_lesions: int,
    brain: np.ndarray,
    gm: np.ndarray,
    wm: np.ndarray,
    voxel_mm: float,
    radius_mm: tuple[float, float],
) -> list[LesionSpec]:
    """Draw centres at the grey/white junction, away from the brain edge and each other."""
    depth = ndimage.distance_transform_edt(brain > 0.5)
    junction = (gm > 0.2) & (wm > 0.2)
    specs: list[LesionSpec] = []
    for _ in range(n_lesions):
        radius = rng.uniform(*radius_mm) / voxel_mm
        candidates = np.argwhere(junction & (depth > radius + 2))
        for spec in specs:
            far = (
                np.linalg.norm(candidates - np.array(spec.centre_vox), axis=1)
                > 3 * max(spec.radius_vox) + radius
            )
            candidates = candidates[far]
        if len(candidates) == 0:
            break
        centre = candidates[rng.integers(len(candidates))].astype(float)
        specs.append(
            LesionSpec(
                centre_vox=tuple(centre),
                radius_vox=tuple(radius * rng.uniform(0.8, 1.2, size=3)),
                # small metastases are solid; larger ones outgrow their blood supply
                core_fraction=float(rng.uniform(0.35, 0.6)) if radius * voxel_mm > 5 else 0.0,
                oedema_factor=float(rng.uniform(1.6, 2.6)),
            )
        )
    return specs


def render_lesions(
    specs: list[LesionSpec], brain: np.ndarray, wm: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Label map (uint8) of all lesions; enhancing and necrotic voxels win over oedema."""
    seg = np.zeros(brain.shape, dtype=np.uint8)
    inside_brain = brain > 0.5
    grid = np.indices(brain.shape, dtype=np.float32)
    for spec in specs:
        offsets = [(grid[a] - spec.centre_vox[a]) / spec.radius_vox[a] for a in range(3)]
        distance = np.sqrt(sum(o * o for o in offsets))
        # a smooth random field makes the boundary irregular rather than a perfect ellipsoid
        distance = distance * (1.0 + 0.12 * _smooth_noise(rng, brain.shape, sigma=3.0))
        oedema = (distance <= spec.oedema_factor) & inside_brain & ((wm > 0.25) | (distance <= 1.3))
        seg[oedema & (seg == 0)] = OEDEMA
        seg[(distance <= 1.0) & inside_brain] = ENHANCING
        if spec.core_fraction > 0:
            seg[(distance <= spec.core_fraction) & inside_brain] = NECROTIC
    return seg


def describe_lesions(seg: np.ndarray, affine: np.ndarray) -> list[dict]:
    """Per connected tumour (core + rim): centre in mm, largest diameter in mm, side, lobe."""
    tumour = (seg == ENHANCING) | (seg == NECROTIC)
    components, count = ndimage.label(tumour)
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    described = []
    for index in range(1, count + 1):
        voxels = np.argwhere(components == index)
        centre_mm = affine[:3, :3] @ voxels.mean(axis=0) + affine[:3, 3]
        extent_mm = (voxels.max(axis=0) - voxels.min(axis=0) + 1) * voxel_mm
        described.append(
            {
                "centre_mm": [round(float(c), 1) for c in centre_mm],
                "diameter_mm": round(float(extent_mm.max()), 1),
                "volume_ml": round(float(len(voxels) * np.prod(voxel_mm) / 1000.0), 3),
                "side": hemisphere(float(centre_mm[0])),
                "lobe": approximate_lobe(*map(float, centre_mm)),
            }
        )
    return sorted(described, key=lambda d: -d["diameter_mm"])


def place_inpainting_masks(
    rng: np.random.Generator,
    brain: np.ndarray,
    avoid: np.ndarray,
    count: int,
    radius_vox: tuple[float, float],
    max_tries: int = 200,
) -> list[np.ndarray]:
    """Binary blob masks fully inside healthy brain (BraTS 2023 local-synthesis style).

    Each mask is the union of two or three overlapping ellipsoids; it never touches a
    lesion, its oedema, or a two-voxel margin around them.
    """
    healthy = (brain > 0.5) & ~ndimage.binary_dilation(avoid, iterations=2)
    depth = ndimage.distance_transform_edt(healthy)
    grid = np.indices(brain.shape, dtype=np.float32)
    masks: list[np.ndarray] = []
    for _ in range(count):
        for _ in range(max_tries):
            radius = rng.uniform(*radius_vox)
            candidates = np.argwhere(depth > radius * 1.6)
            if len(candidates) == 0:
                break
            centre = candidates[rng.integers(len(candidates))]
            blob = np.zeros(brain.shape, dtype=bool)
            for _ in range(int(rng.integers(2, 4))):
                c = centre + rng.normal(0, radius * 0.4, size=3)
                r = radius * rng.uniform(0.6, 1.0, size=3)
                blob |= sum(((grid[a] - c[a]) / r[a]) ** 2 for a in range(3)) <= 1.0
            if blob.any() and not (blob & ~healthy).any():
                masks.append(blob.astype(np.uint8))
                break
        else:
            raise RuntimeError(f"Could not place inpainting mask {len(masks)} in healthy tissue")
    return masks


def growth_probability(
    seg: np.ndarray, brain: np.ndarray, wm: np.ndarray, voxel_mm: float, length_mm: float
) -> np.ndarray:
    """Probability that tumour grows into each voxel: 1 in tumour, decaying with distance.

    Decay is exp(-d / length) and twice as slow along white matter, the route of
    infiltration; zero outside the brain and everywhere when there is no tumour.
    """
    tumour = seg > 0
    if not tumour.any():
        return np.zeros(seg.shape, dtype=np.float32)
    distance_mm = ndimage.distance_transform_edt(~tumour) * voxel_mm
    effective_length = length_mm * (1.0 + np.clip(wm, 0.0, 1.0))
    growth = np.exp(-distance_mm / effective_length) * (brain > 0.5)
    growth[tumour] = 1.0
    return growth.astype(np.float32)
