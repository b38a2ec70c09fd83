"""The Fréchet distance between two feature sets, as clean-fid computes it, and the
covariance estimator it is fitted with.

``cleanfid.fid.frechet_distance`` does the maths. What this module adds: the covariance
is the sample covariance only where it can be full rank (n > d), Ledoit-Wolf shrinkage
otherwise or on request (:func:`resolve_covariance`), and non-finite features or a
non-finite distance raise instead of becoming a number.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import numpy as np
import scipy.linalg
from cleanfid import fid as cleanfid_fid

from medgen.metrics.errors import MetricNotApplicable, require_finite


class _SqrtmWithDisp:
    """scipy.linalg stand-in whose sqrtm still accepts ``disp`` (removed in SciPy 1.18).

    clean-fid calls ``linalg.sqrtm(A, disp=False)`` and unpacks ``(sqrt, error)``.
    """

    def __getattr__(self, name: str):
        return getattr(scipy.linalg, name)

    @staticmethod
    def sqrtm(matrix: np.ndarray, disp: bool = True):
        root = scipy.linalg.sqrtm(matrix)
        if disp:
            return root
        residual = np.linalg.norm(root @ root - matrix, "fro") / max(
            np.linalg.norm(matrix, "fro"), 1e-300
        )
        return root, residual


def _scipy_sqrtm_has_disp() -> bool:
    return "disp" in inspect.signature(scipy.linalg.sqrtm).parameters


@contextlib.contextmanager
def cleanfid_scipy_compat() -> Iterator[None]:
    if _scipy_sqrtm_has_disp():
        yield
        return
    original = cleanfid_fid.linalg
    cleanfid_fid.linalg = _SqrtmWithDisp()
    try:
        yield
    finally:
        cleanfid_fid.linalg = original


COVARIANCE_ESTIMATORS = ("auto", "sample", "ledoit_wolf")


def _ledoit_wolf(features: np.ndarray) -> np.ndarray:
    # scikit-learn's estimator (Ledoit & Wolf 2004, "A well-conditioned estimator for
    # large-dimensional covariance matrices"); scikit-learn comes with MLflow, and the
    # import is local so the sample-covariance path never needs it.
    from sklearn.covariance import LedoitWolf

    return LedoitWolf(assume_centered=False).fit(features).covariance_


def resolve_covariance(estimator: str, n: int, d: int) -> str:
    """The covariance estimator a Fréchet distance of ``n`` samples of ``d`` features uses.

    The sample covariance of n samples has rank at most n - 1, so it is singular unless
    n > d, and sqrtm of a product of singular matrices is noise. ``auto`` (the default)
    takes the sample covariance when n > d and Ledoit-Wolf shrinkage otherwise;
    ``sample`` refuses n <= d (MetricNotApplicable); ``ledoit_wolf`` always shrinks.
    """
    if estimator not in COVARIANCE_ESTIMATORS:
        raise ValueError(f"covariance must be one of {COVARIANCE_ESTIMATORS}, got {estimator!r}")
    if estimator == "auto":
        return "sample" if n > d else "ledoit_wolf"
    if estimator == "sample" and n <= d:
        raise MetricNotApplicable(
            f"the sample covariance of n={n} samples of d={d} features is singular (needs n > d); "
            "use covariance: auto or ledoit_wolf"
        )
    return estimator


def frechet_distance(
    features_a: np.ndarray, features_b: np.ndarray, covariance: str = "auto"
) -> float:
    """clean-fid's Fréchet distance between Gaussians fitted to two feature sets [N, F].

    ``covariance``: ``auto`` (default: :func:`resolve_covariance` on the smaller set's
    size), ``sample`` (``np.cov``, what published FIDs use) or ``ledoit_wolf`` (shrinkage,
    well-conditioned for N <= F).

    Raises:
        MetricNotApplicable: fewer than 2 samples in a set.
        NonFiniteInputError: NaN/Inf features.
    """
    features_a = np.asarray(features_a, dtype=np.float64)
    features_b = np.asarray(features_b, dtype=np.float64)
    if min(len(features_a), len(features_b)) < 2:
        raise MetricNotApplicable("Fréchet distance needs at least 2 samples per set")
    require_finite(features_a, "features of the first set")
    require_finite(features_b, "features of the second set")
    n, d = min(len(features_a), len(features_b)), features_a.shape[1]
    estimate = _ledoit_wolf if resolve_covariance(covariance, n, d) == "ledoit_wolf" else _cov
    mu_a, sigma_a = features_a.mean(axis=0), estimate(features_a)
    mu_b, sigma_b = features_b.mean(axis=0), estimate(features_b)
    with cleanfid_scipy_compat():
        distance = float(cleanfid_fid.frechet_distance(mu_a, sigma_a, mu_b, sigma_b))
    if not np.isfinite(distance):
        raise FloatingPointError(f"the Fréchet distance came out {distance} (n={n}, d={d})")
    return distance


def _cov(features: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.cov(features, rowvar=False))
