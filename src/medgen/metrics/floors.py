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

A floor between two halves of one or two patients each measures those patients, not
the population: a two-sample floor with groups needs ``min_groups_per_half`` patients
in each half (default :data:`MIN_GROUPS_PER_HALF`). With fewer, or too few real samples
to split at all, no floor is given: the value is measured against every real sample,
``floor`` is None and ``details["no_floor"]`` says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medgen.metrics.errors import MetricNotApplicable, require_finite
from medgen.metrics.results import MetricResult

_PROTOCOLS = {
    True: "value = metric(generated_n, realA_n); floor = metric(realB_n, realA_n); A, B disjoint",
    False: "value = metric(generated_n); floor = metric(realA_n) (real-data reference at the same n)",
}
_NO_FLOOR_PROTOCOLS = {
    True: "value = metric(generated_n, real_n) over all real samples; no floor",
    False: "value = metric(generated_n); no floor",
}
MIN_REAL = 4  # below this a half holds at most one sample: no floor can be measured
MIN_GROUPS_PER_HALF = 3  # patients per half a two-sample floor needs (configurable per call)
# Exact cardinality-constrained balancing costs groups x groups/2 x total-samples bits;
# above this budget (about 1 MB of bitsets) a greedy balance is used instead.
_EXACT_BALANCE_BITS = 8_000_000


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
    sample is left out when ``n_real`` is odd). With G groups: every group goes whole
    into A or B, B holds ``G // 2`` groups and A the rest (as many patients on each side
    as possible: the floor's reliability is the patient count), and among those splits
    the sample counts are as balanced as possible (exact subset-sum over group sizes for
    small G, greedy beyond; the seed picks among equally balanced splits, as far as the
    walk reaches them). A is the larger half when they differ.

    Raises:
        MetricNotApplicable: fewer than 4 samples, or fewer than 2 distinct groups (no
            group-disjoint split exists).
        ValueError: ``groups`` of the wrong length.
    """
    if n_real < MIN_REAL:
        raise MetricNotApplicable(
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
        raise MetricNotApplicable(
            f"a group-disjoint real-vs-real split needs at least 2 groups (e.g. patients), "
            f"got {len(sizes)}"
        )
    in_b = _balanced_group_subset(sizes, rng)
    if sizes[in_b].sum() > sizes[~in_b].sum():
        in_b = ~in_b  # A is the larger half
    b_mask = in_b[group_of]
    return np.flatnonzero(~b_mask), np.flatnonzero(b_mask)


def _balanced_group_subset(sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean [G]: ``G // 2`` groups whose sizes sum as close to half the total as possible."""
    count = len(sizes) // 2
    if len(sizes) * (count + 1) * int(sizes.sum()) <= _EXACT_BALANCE_BITS:
        return _exact_group_subset(sizes, count, rng)
    return _greedy_group_subset(sizes, count, rng)


def _exact_group_subset(sizes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Subset-sum with exactly ``count`` groups, Python integers as bitsets: bit s of
    ``reach[i][c]`` is set when sum s can be made from c of the groups at positions >= i of a
    seeded order. Walking forward, each group is taken or left, at random where both still
    reach the chosen sum."""
    order = rng.permutation(len(sizes))
    n = len(order)
    reach = [[0] * (count + 1) for _ in range(n + 1)]
    reach[n][0] = 1
    for i in range(n - 1, -1, -1):
        size = int(sizes[order[i]])
        after = reach[i + 1]
        reach[i] = [after[0]] + [after[c] | (after[c - 1] << size) for c in range(1, count + 1)]
    total = int(sizes.sum())
    reachable = [s for s in range(total + 1) if reach[0][count] >> s & 1]
    remaining = min(reachable, key=lambda s: (abs(total - 2 * s), -s))
    left = count
    chosen = np.zeros(len(sizes), dtype=bool)
    for i, group in enumerate(order):
        size = int(sizes[group])
        can_leave = bool(reach[i + 1][left] >> remaining & 1)
        can_take = (
            left > 0
            and remaining >= size
            and bool(reach[i + 1][left - 1] >> (remaining - size) & 1)
        )
        if can_take and (not can_leave or rng.random() < 0.5):
            chosen[group] = True
            remaining -= size
            left -= 1
    return chosen


def _greedy_group_subset(sizes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Largest groups first (seeded ties), each to the lighter side that still has room."""
    order = sorted(rng.permutation(len(sizes)), key=lambda g: -int(sizes[g]))
    chosen = np.zeros(len(sizes), dtype=bool)
    sums, room = [0, 0], [len(sizes) - count, count]  # side 0 = A, side 1 = B
    for group in order:
        side = int(sums[1] < sums[0]) if room[0] and room[1] else int(room[1] > 0)
        chosen[group] = side == 1
        sums[side] += int(sizes[group])
        room[side] -= 1
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


@dataclass(frozen=True)
class _Protocol:
    """One metric measured by the floor protocol (module docstring)."""

    metric: Callable[..., float | MetricResult | tuple[float, dict]]
    two_sample: bool
    name: str
    backbone: str
    mode: str | None
    seed: int
    prepare: Callable[[Any], Any] | None = None

    def subset(self, data: Any, index: np.ndarray) -> Any:
        taken = _take(data, index)
        return taken if self.prepare is None else self.prepare(taken)

    def result(self, value: float, floor: float | None, n_real: int, n: int, details: dict):
        return MetricResult(
            name=self.name,
            value=value,
            floor=floor,
            backbone=self.backbone,
            n_real=n_real,
            n_generated=n,
            mode=self.mode,
            details=details,
        )


def _with_floor(
    protocol: _Protocol,
    real: Any,
    generated: Any,
    groups: Any | None = None,
    min_groups_per_half: int = MIN_GROUPS_PER_HALF,
) -> MetricResult:
    for data, what in ((generated, "generated samples"), (real, "real samples")):
        if hasattr(data, "dtype"):  # lists (prompts, file names) are not numbers
            require_finite(data, f"{protocol.name}: {what}")
    two_sample, seed = protocol.two_sample, protocol.seed
    split_groups = groups if two_sample else None
    try:
        idx_a, idx_b = split_real_halves(len(real), seed, split_groups)
    except MetricNotApplicable as reason:
        split = {"by": "none (no floor)"}
        if split_groups is not None:
            split["groups_total"] = int(len(np.unique(np.asarray(split_groups))))
        return _without_floor(protocol, real, generated, str(reason), split)
    split = _describe_split(split_groups, idx_a, idx_b if two_sample else None)
    if split_groups is not None:
        split["min_groups_per_half"] = min_groups_per_half
        if min(split["groups_a"], split["groups_b"]) < min_groups_per_half:
            reason = (
                f"the real reference holds {split['groups_total']} patients: its patient-disjoint "
                f"halves have {split['groups_a']} and {split['groups_b']}, fewer than the "
                f"{min_groups_per_half} per half a floor needs"
            )
            return _without_floor(protocol, real, generated, reason, split)
    n = min(len(idx_a), len(generated), len(idx_b) if two_sample else len(idx_a))
    idx_gen = np.sort(np.random.default_rng(seed + 1).permutation(len(generated))[:n])
    rng = np.random.default_rng(seed + 2)
    idx_a, idx_b = _random_subset(idx_a, n, rng), _random_subset(idx_b, n, rng)
    # Two-sample metrics compare against real half A, so the floor's sample is half B;
    # one-sample metrics take no reference and half A itself is the floor's sample.
    reference = (protocol.subset(real, idx_a),) if two_sample else ()
    floor_sample = protocol.subset(real, idx_b if two_sample else idx_a)
    value, details = _value_and_details(
        protocol.metric(protocol.subset(generated, idx_gen), *reference)
    )
    floor, floor_details = _value_and_details(protocol.metric(floor_sample, *reference))
    details.update(
        floor_details=floor_details,
        n_real_total=len(real),
        n_generated_total=len(generated),
        seed=seed,
        protocol=_PROTOCOLS[two_sample],
        real_split=split,
    )
    return protocol.result(value, floor, n, n, details)


def _without_floor(
    protocol: _Protocol, real: Any, generated: Any, reason: str, split: dict[str, Any]
) -> MetricResult:
    """The value against (a seeded n of) every real sample, no floor, and why not (a
    one-sample metric takes every generated sample: there is no real count to match)."""
    n = min(len(real), len(generated)) if protocol.two_sample else len(generated)
    idx_gen = np.sort(np.random.default_rng(protocol.seed + 1).permutation(len(generated))[:n])
    idx_real = np.sort(np.random.default_rng(protocol.seed + 2).permutation(len(real))[:n])
    reference = (protocol.subset(real, idx_real),) if protocol.two_sample else ()
    value, details = _value_and_details(
        protocol.metric(protocol.subset(generated, idx_gen), *reference)
    )
    details.update(
        no_floor=reason,
        n_real_total=len(real),
        n_generated_total=len(generated),
        seed=protocol.seed,
        protocol=_NO_FLOOR_PROTOCOLS[protocol.two_sample],
        real_split=split,
    )
    return protocol.result(value, None, n if protocol.two_sample else 0, n, details)


def _describe_split(
    groups: Any | None, idx_a: np.ndarray, idx_b: np.ndarray | None
) -> dict[str, Any]:
    """How the real halves were drawn, for metrics.json: by slice, or group-disjoint."""
    if idx_b is None:
        return {"by": "sample (one-sample floor: only half A is used, nothing to keep apart)"}
    if groups is None:
        return {"by": "sample (halves may share patients)"}
    labels = np.asarray(groups).reshape(-1)
    return {
        "by": "group (patient-disjoint halves)",
        "groups_total": int(len(np.unique(labels))),
        "groups_a": int(len(np.unique(labels[idx_a]))),
        "groups_b": int(len(np.unique(labels[idx_b]))),
    }


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
    min_groups_per_half: int = MIN_GROUPS_PER_HALF,
) -> MetricResult:
    """``metric(sample, reference)`` for generated and for a held-out real half (see module doc).

    ``prepare`` (default: none), e.g. feature extraction, runs once on each of the
    three subsets before ``metric`` sees them: the reference half, used twice, is
    prepared once, and data outside the subsets is never prepared. ``groups``
    (default None: split by sample) are per-real-sample labels such as patient ids;
    the two real halves then share no group (:func:`split_real_halves`), and each must
    hold ``min_groups_per_half`` groups (default 3) or no floor is given (module doc).

    Raises:
        NonFiniteInputError: ``real`` or ``generated`` hold NaN/Inf.
    """
    protocol = _Protocol(metric, True, name, backbone, mode, seed, prepare)
    return _with_floor(protocol, real, generated, groups, min_groups_per_half)


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

    Raises:
        NonFiniteInputError: ``real`` or ``generated`` hold NaN/Inf.
    """
    return _with_floor(_Protocol(metric, False, name, backbone, mode, seed), real, generated)


def pairwise_indices(n: int, max_pairs: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs i < j, or a seeded sample of ``max_pairs`` distinct ones.

    Raises MetricNotApplicable for fewer than 2 items (no pair exists).
    """
    if n < 2:
        raise MetricNotApplicable(f"diversity needs at least 2 images, got {n}")
    i, j = np.triu_indices(n, k=1)
    if max_pairs is not None and len(i) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(i), size=max_pairs, replace=False))
        i, j = i[keep], j[keep]
    return i, j
