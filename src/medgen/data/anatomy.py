"""Coarse anatomical names for a point in MNI space, used to write captions.

These are bounding-box rules over MNI coordinates (mm), not an atlas: good enough to say
"left frontal lobe" in a synthetic caption, and documented as approximate.
"""

from __future__ import annotations


def hemisphere(x_mm: float) -> str:
    """RAS convention: positive x is the subject's right."""
    return "right" if x_mm >= 0 else "left"


def approximate_lobe(x_mm: float, y_mm: float, z_mm: float) -> str:
    """Name the lobe a point most likely lies in, from MNI coordinates in mm."""
    if z_mm < -25 and y_mm < -40:
        return "cerebellum"
    if y_mm < -70:
        return "occipital"
    if z_mm < 0 and abs(x_mm) > 25 and y_mm < 10:
        return "temporal"
    if y_mm > -15:
        return "frontal"
    return "parietal"
