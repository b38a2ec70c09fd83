"""Captions and simulated expert ratings for the synthetic cohort.

Captions state what the generator put into the image: modality, number of lesions, and
side, (approximate) lobe and largest diameter of the biggest one. Ratings simulate
radiologists scoring image quality from 1 (poor) to 3 (good): the true quality follows
the noise and bias-field strength the generator applied, and raters add their own
disagreement, more for residents than for neuroradiologists.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medgen.datasets import SubjectRecord

MODALITY_NAMES = {
    "t1_pre": "T1-weighted pre-contrast",
    "t1_gd": "T1-weighted post-gadolinium",
    "flair": "FLAIR",
    "bravo": "BRAVO post-contrast T1",
}
CAPTION_COLUMNS = ["path", "text", "modality"]
RATING_COLUMNS = ["image_path", "rating", "modality", "expert_level", "prompt"]
EXPERT_NOISE = {"resident": 0.45, "neuroradiologist": 0.2}


def caption_for(modality: str, lesions: list[dict]) -> str:
    name = MODALITY_NAMES.get(modality, modality)
    if not lesions:
        return f"{name} brain MRI without visible metastases."
    largest = lesions[0]  # describe_lesions sorts by diameter, largest first
    count = "a single metastasis" if len(lesions) == 1 else f"{len(lesions)} metastases"
    location = f"the {largest['side']} {largest['lobe']}" + (
        "" if largest["lobe"] == "cerebellum" else " lobe"
    )
    return f"{name} brain MRI with {count}; largest {largest['diameter_mm']:.0f} mm in {location}."


def _relative_path(subject: str, modality: str) -> str:
    return f"{subject}/{subject}-{modality}.nii.gz"


def build_captions(records: dict[str, SubjectRecord], modalities: list[str]) -> pd.DataFrame:
    """One row per (subject, modality) for subjects whose generator metadata is known."""
    rows = [
        {
            "path": _relative_path(sid, m),
            "text": caption_for(m, rec.metadata["lesions"]),
            "modality": m,
        }
        for sid, rec in sorted(records.items())
        if "lesions" in rec.metadata
        for m in modalities
        if m in rec.files
    ]
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS)


def image_quality(acquisition: dict, noise_max: float, bias_max: float) -> float:
    """Ground-truth quality in [0, 1]: 1 for a clean image, 0 at the worst noise and bias."""
    noise = acquisition["noise_std"] / max(noise_max, 1e-9)
    bias = acquisition["bias_coeff"] / max(bias_max, 1e-9)
    return float(np.clip(1.0 - 0.6 * noise - 0.4 * bias, 0.0, 1.0))


def simulate_ratings(
    records: dict[str, SubjectRecord],
    modalities: list[str],
    seed: int,
    noise_max: float,
    bias_max: float,
    raters_per_image: int = 2,
) -> pd.DataFrame:
    """Ratings 1-3 from ``raters_per_image`` simulated experts per image."""
    rng = np.random.default_rng([seed, 7])
    levels = list(EXPERT_NOISE)
    rows = []
    for sid, record in sorted(records.items()):
        if "acquisition" not in record.metadata:
            continue
        for modality in modalities:
            if modality not in record.metadata["acquisition"]:
                continue
            quality = image_quality(record.metadata["acquisition"][modality], noise_max, bias_max)
            prompt = caption_for(modality, record.metadata["lesions"])
            for level in rng.choice(levels, size=raters_per_image):
                score = 1.0 + 2.0 * quality + rng.normal(0.0, EXPERT_NOISE[level])
                rows.append(
                    {
                        "image_path": _relative_path(sid, modality),
                        "rating": int(np.clip(np.rint(score), 1, 3)),
                        "modality": modality,
                        "expert_level": str(level),
                        "prompt": prompt,
                    }
                )
    return pd.DataFrame(rows, columns=RATING_COLUMNS)
