"""Label values of the lesion and tissue maps, and the lesion test every stage shares."""

from __future__ import annotations

import torch

# BraTS-METS compartments
NECROTIC, OEDEMA, ENHANCING = 1, 2, 3
LESION_LABELS = {
    0: "background",
    NECROTIC: "necrotic core",
    OEDEMA: "oedema",
    ENHANCING: "enhancing",
}
TISSUE_LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}


def has_lesion(seg: torch.Tensor) -> torch.Tensor:
    """Boolean ``[N]``: does item i of a label map ``[N, ...]`` hold any lesion label?"""
    return (seg > 0).flatten(1).any(dim=1)
