"""Real-vs-real floors: the value a metric takes when "generated" is more real data.

A generated-vs-real number is only meaningful next to the same metric computed
between two disjoint halves of the real set, with the same backbone and the same
sample counts (FID in particular is biased by sample count). The real set is split
into two seeded, disjoint halves A and B and n = min(|A|, |B|, n_generated):

- two-sample metrics (FID): value = metric(generated_n, A_n),
  floor = metric(B_n, A_n) -- both against the same reference half A;
- one-sample metrics (diversity): value = metric(generated_n), floor = metric(A_n),
  i.e. the real data's own diversity at the same n (a reference level rather
  than a lower bound, but measured identically); here n = min(|A|, n_generated).

``X_n`` is a seeded random subset of n items of X. With ``groups`` (e.g. the slices'
``subject_index``) the halves are *group-disjoint*: no patient has slices in both, so
the floor compares different patients, as generated-vs-real does. Splitting by slice
instead lets both halves share patients, and the two-sample floor comes out
optimistically low.
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
MIN_REAL = 4  # below this a half holds at most one sample: no floor can be measured


def split_real_halves(
    n_real: int, seed: int = 0, groups: Any | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, sorted index arrays (A, B) into ``range(n_real)``, from ``seed``.

    Args:
        n_real: number of real samples (at least 4).
        seed: seeds the split (default 0); the same seed gives the same halves.
        groups: optional per-sample group labels, length ``n_real`` (e.g. the
            ``subject_index`` of slices); default None, each sample on its own.

    Without groups: a seeded permutation cut into two halves of ``n_real // 2`` (one
    sample is left out when ``n_real`` is odd). With groups: every group goes whole
    into A or B, and the half sizes are as balanced as the group sizes allow (an exact
    subset-sum over group sizes; the seed picks among the equally balanced splits,
    as far as that walk can reach them). A is the larger half when they differ.

    Raises:
        ValueError: fewer than 4 samples, ``groups`` of the wrong length, or fewer
            than 2 distinct groups (no group-disjoint split exists).
    """
    if n_real < MIN_REAL:
        raise ValueError(
            f"need at least {MIN_REAL} real samples to build a real-vs-real floor, got {n_real}"
        )
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n_real)
        half = n_real // 2
        return np.sort(order[:half]), np.sort(order[half : 2 * half])
    labels = np.asarray(groups).reshape(-1)
    if len(labels) != n_real:
        raise ValueError(f"groups has {len(labels)} labels for {n_real} real samples")
    _, group_of = np.unique(labels, return_inverse=True)
    sizes = np.bincount(group_of)
    if len(sizes) < 2:
        raise ValueError(
            f"a group-disjoint real-vs-real split needs at least 2 groups (e.g. patients), "
            f"got {len(sizes)}"
        )
    in_b = _balanced_group_subset(sizes, rng)
    b_mask = in_b[group_of]
    return np.flatnonzero(~b_mask), np.flatnonzero(b_mask)


def _balanced_group_subset(sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean [G]: groups whose sizes sum to the largest total <= sum(sizes) / 2.

    Subset-sum with Python integers as bitsets (bit s of ``reach[i]`` set = sum s can be
    made from the groups at positions >= i of a seeded order). Walking forward, each
    group is taken or left, at random where both still reach the target sum.
    """
    order = rng.permutation(len(sizes))
    reach = [0] * len(order) + [1]
    for i in range(len(order) - 1, -1, -1):
        reach[i] = reach[i + 1] | (reach[i + 1] << int(sizes[order[i]]))
    half = int(sizes.sum()) // 2
    # the best total is reachable and > 0: with >= 2 groups the smallest one fits in half
    remaining = max(s for s in range(half + 1) if reach[0] >> s & 1)
    chosen = np.zeros(len(sizes), dtype=bool)
    for i, group in enumerate(order):
        size = int(sizes[group])
        can_leave = bool(reach[i + 1] >> remaining & 1)
        can_take = remaining >= size and bool(reach[i + 1] >> (remaining - size) & 1)
        if can_take and (not can_leave or rng.random() < 0.5):
            chosen[group] = True
            remaining -= size
    return chosen


def _random_subset(index: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    # a random, not the lowest-numbered, n: slices are stored patient by patient
    return np.sort(rng.permutation(index)[:n])


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
    groups: Any | None = None,
) -> MetricResult:
    idx_a, idx_b = split_real_halves(len(real), seed, groups)
    n = min(len(idx_a), len(generated), len(idx_b) if two_sample else len(idx_a))
    idx_gen = np.sort(np.random.default_rng(seed + 1).permutation(len(generated))[:n])
    rng = np.random.default_rng(seed + 2)
    idx_a, idx_b = _random_subset(idx_a, n, rng), _random_subset(idx_b, n, rng)

    def subset(data: Any, index: np.ndarray) -> Any:
        return _take(data, index) if prepare is None else prepare(_take(data, index))

    # Two-sample metrics compare against real half A, so the floor's sample is half B;
    # one-sample metrics take no reference and half A itself is the floor's sample.
    reference = (subset(real, idx_a),) if two_sample else ()
    floor_sample = subset(real, idx_b if two_sample else idx_a)
    value, details = _value_and_details(metric(subset(generated, idx_gen), *reference))
    floor, floor_details = _value_and_details(metric(floor_sample, *reference))
    details.update(
        floor_details=floor_details,
        n_real_total=len(real),
        n_generated_total=len(generated),
        seed=seed,
        protocol=_PROTOCOLS[two_sample],
        real_split=_describe_split(groups, idx_a, idx_b if two_sample else None),
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


def _describe_split(
    groups: Any | None, idx_a: np.ndarray, idx_b: np.ndarray | None
) -> dict[str, Any]:
    """How the real halves were drawn, for metrics.json: by slice, or group-disjoint."""
    if idx_b is None:
        return {"by": "sample (one-sample floor: only half A is used, nothing to keep apart)"}
    if groups is None:
        return {"by": "sample (halves may share patients)"}
    labels = np.asarray(groups).reshape(-1)
    out: dict[str, Any] = {"by": "group (patient-disjoint halves)"}
    out["groups_a"] = int(len(np.unique(labels[idx_a])))
    out["groups_b"] = int(len(np.unique(labels[idx_b])))
    return out


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
    groups: Any | None = None,
) -> MetricResult:
    """``metric(sample, reference)`` for generated and for a held-out real half (see module doc).

    ``prepare`` (default: none), e.g. feature extraction, runs once on each of the
    three subsets before ``metric`` sees them: the reference half, used twice, is
    prepared once, and data outside the subsets is never prepared. ``groups``
    (default None: split by sample) are per-real-sample labels such as patient ids;
    the two real halves then share no group (:func:`split_real_halves`).
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
        groups=groups,
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
    """``metric(set)`` on generated and on a real half of the same size (see module doc).

    No ``groups`` here on purpose: half B is never used, so there is no leak to
    prevent, and restricting A to half of the patients would only make the real
    reference less diverse than the data it stands for.
    """
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
