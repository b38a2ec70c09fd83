"""Real-vs-real floors: the value a metric takes when "generated" is more real data.

A generated-vs-real number is only meaningful next to the same metric computed
between two disjoint halves of the real set, with the same backbone and the same
sample counts (FID in particular is biased by sample count). The real set is split
into two seeded, disjoint halves A and B and n = min(|A|, |B|, n_generated):

- two-sample metrics (FID): value = metric(generated[:n], A[:n]),
  floor = metric(B[:n], A[:n]) -- both against the same reference half A;
- one-sample metrics (diversity): value = metric(generated[:n]), floor = metric(A[:n]),
  i.e. the real data's own diversity at the same n (a reference level rather
  than a lower bound, but measured identically).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medgen.metrics.results import MetricResult

_PROTOCOLS = {
    True: "value = metric(generated_n, realA_n); floor = metric(realB_n, realA_n); A, B disjoint",
    False: "value = metric(generated_n); floor = metric(realA_n) (real-data reference at the same n)",
}


def split_real_halves(n_real: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets of size n_real // 2 from a seeded permutation."""
    if n_real < 4:
        raise ValueError(
            f"need at least 4 real samples to build a real-vs-real floor, got {n_real}"
        )
    order = np.random.default_rng(seed).permutation(n_real)
    half = n_real // 2
    return np.sort(order[:half]), np.sort(order[half : 2 * half])


def _take(data: Any, index: np.ndarray) -> Any:
    if isinstance(data, Sequence) and not hasattr(data, "shape"):
        return [data[i] for i in index]
    return data[index]


def _value_and_details(
    out: float | MetricResult | tuple[float, dict],
) -> tuple[float, dict[str, Any]]:
    if isinstance(out, MetricResult):
        return float(out.value), dict(out.details)
    if isinstance(out, tuple):
        return float(out[0]), dict(out[1])
    return float(out), {}


def _with_floor(
    metric: Callable[..., float | MetricResult | tuple[float, dict]],
    real: Any,
    generated: Any,
    *,
    two_sample: bool,
    name: str,
    backbone: str,
    mode: str | None,
    seed: int,
    prepare: Callable[[Any], Any] | None = None,
) -> MetricResult:
    idx_a, idx_b = split_real_halves(len(real), seed)
    n = min(len(idx_a), len(generated))
    idx_gen = np.sort(np.random.default_rng(seed + 1).permutation(len(generated))[:n])

    def subset(data: Any, index: np.ndarray) -> Any:
        return _take(data, index) if prepare is None else prepare(_take(data, index))

    # Two-sample metrics compare against real half A, so the floor's sample is half B;
    # one-sample metrics take no reference and half A itself is the floor's sample.
    reference = (subset(real, idx_a[:n]),) if two_sample else ()
    floor_sample = subset(real, (idx_b if two_sample else idx_a)[:n])
    value, details = _value_and_details(metric(subset(generated, idx_gen), *reference))
    floor, floor_details = _value_and_details(metric(floor_sample, *reference))
    details.update(
        floor_details=floor_details,
        n_real_total=len(real),
        n_generated_total=len(generated),
        seed=seed,
        protocol=_PROTOCOLS[two_sample],
    )
    return MetricResult(
        name=name,
        value=value,
        floor=floor,
        backbone=backbone,
        n_real=n,
        n_generated=n,
        mode=mode,
        details=details,
    )


def two_sample_with_floor(
    metric: Callable[[Any, Any], float | MetricResult | tuple[float, dict]],
    real: Any,
    generated: Any,
    *,
    name: str,
    backbone: str,
    mode: str | None = None,
    seed: int = 0,
    prepare: Callable[[Any], Any] | None = None,
) -> MetricResult:
    """``metric(sample, reference)`` for generated and for a held-out real half (see module doc).

    ``prepare`` (default: none), e.g. feature extraction, runs once on each of the
    three subsets before ``metric`` sees them: the reference half, used twice, is
    prepared once, and data outside the subsets is never prepared.
    """
    return _with_floor(
        metric,
        real,
        generated,
        two_sample=True,
        name=name,
        backbone=backbone,
        mode=mode,
        seed=seed,
        prepare=prepare,
    )


def one_sample_with_floor(
    metric: Callable[[Any], float | MetricResult | tuple[float, dict]],
    real: Any,
    generated: Any,
    *,
    name: str,
    backbone: str,
    mode: str | None = None,
    seed: int = 0,
) -> MetricResult:
    """``metric(set)`` on generated and on a real half of the same size (see module doc)."""
    return _with_floor(
        metric,
        real,
        generated,
        two_sample=False,
        name=name,
        backbone=backbone,
        mode=mode,
        seed=seed,
    )


def pairwise_indices(n: int, max_pairs: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs i < j, or a seeded sample of ``max_pairs`` distinct ones."""
    if n < 2:
        raise ValueError(f"diversity needs at least 2 images, got {n}")
    i, j = np.triu_indices(n, k=1)
    if max_pairs is not None and len(i) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(i), size=max_pairs, replace=False))
        i, j = i[keep], j[keep]
    return i, j
