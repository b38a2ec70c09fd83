"""AUROC of two score samples, the one definition the scorers and checks share.

:func:`mann_whitney_auroc` is the Mann-Whitney U of the positives over ``n_pos * n_neg`` (ties
count half); :func:`auroc` gives sklearn's ``roc_auc_score`` where sklearn is installed (the
same number) and names the method used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mann_whitney_auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """AUROC as the Mann-Whitney U of the positives over ``n_pos * n_neg`` (ties count half):
    the probability that a random positive scores above a random negative."""
    from scipy.stats import rankdata

    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def auroc(positive: Sequence[float], negative: Sequence[float]) -> tuple[float, str]:
    """``(AUROC, method)``: sklearn's ``roc_auc_score`` where installed, else
    `mann_whitney_auroc` (the same number)."""
    if not len(positive) or not len(negative):
        raise ValueError("AUROC needs at least one positive and one negative score")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # pragma: no cover - sklearn is installed here
        return mann_whitney_auroc(positive, negative), "Mann-Whitney U / (n_pos * n_neg)"
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    value = roc_auc_score(labels, np.r_[np.asarray(positive, float), np.asarray(negative, float)])
    return float(value), "sklearn.metrics.roc_auc_score"


__all__ = ["auroc", "mann_whitney_auroc"]
