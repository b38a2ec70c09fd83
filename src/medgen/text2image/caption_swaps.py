"""Attribute-swapped negatives of a slice caption: the same sentence with ONE attribute made
false, built from the caption grammar of `medgen.text2image.slice_captions`.

A caption is parsed into the modality and the slice description that `slice_caption` wrote
it from (`parse_caption`, its exact inverse), one attribute of that description is changed,
and `slice_caption` writes the negative, so a swapped caption is always a sentence of the
grammar the generator and the scorers read ("Brain MRI, FLAIR: 2 metastases; largest 14 mm
in the left frontal lobe"). The kinds (`SWAP_KINDS`), each naming the attribute it changes:

* ``modality``: another of the given modalities (T1 post-gadolinium <-> FLAIR, or any
  configured names); None when no other modality is given.
* ``side``: left <-> right, the lobe kept; None without a metastasis.
* ``lesion_present``: a caption with metastases becomes "without visible metastases"; one
  without gets a lesion finding (count, size, side and place): one of ``lesion_findings``
  (best the real training captions' findings, so a swapped caption reads like a real one),
  or `DEFAULT_FINDING` when none is given.
* ``count``: one metastasis more or fewer (1 -> 2; n >= 2 -> n - 1 or n + 1), size and
  place kept; None without a metastasis (``lesion_present`` covers 0 <-> n).

Where a kind has several false values (three modalities, n -> n +- 1, which finding), the
choice is the first in a fixed order without ``rng``, and uniform with an
``numpy.random.Generator``: a training set then sees every false value, a test sees one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medgen.text2image.slice_captions import SHORT_MODALITY_NAMES, slice_caption

SWAP_KINDS = ("modality", "side", "lesion_present", "count")
#: The finding a lesion-free caption gets from a ``lesion_present`` swap without findings.
DEFAULT_FINDING = {"n_metastases": 1, "side": "left", "lobe": "frontal", "largest_mm": 10.0}
_OTHER_SIDE = {"left": "right", "right": "left"}
_MODALITY_BY_NAME = {name: key for key, name in SHORT_MODALITY_NAMES.items()}
_CAPTION = re.compile(r"Brain MRI, (?P<name>[^:]+): (?P<finding>.+)")
_LOCATION = (
    r"the (?P<side>left|right) (?:hemisphere|(?P<cerebellum>cerebellum)|(?P<lobe>[a-z]+) lobe)"
)
_NONE = re.compile(r"without visible metastases")
_ONE = re.compile(rf"1 metastasis of (?P<mm>\d+) mm in {_LOCATION}")
_MANY = re.compile(rf"(?P<count>[2-9]|[1-9]\d+) metastases; largest (?P<mm>\d+) mm in {_LOCATION}")


@dataclass(frozen=True)
class ParsedCaption:
    """What `slice_caption` wrote a caption from: ``slice_caption(modality, description)``
    gives it back. ``modality`` is a `SHORT_MODALITY_NAMES` key, or the name itself."""

    modality: str
    description: dict[str, Any]

    @property
    def caption(self) -> str:
        return slice_caption(self.modality, self.description)


@dataclass(frozen=True)
class CaptionSwap:
    """A negative caption and the attribute (``kind``, one of `SWAP_KINDS`) it changed."""

    caption: str
    kind: str


def modality_key(name: str) -> str:
    """``flair`` for "flair" or "FLAIR"; a name outside `SHORT_MODALITY_NAMES` as it is."""
    name = str(name).strip()
    return name if name in SHORT_MODALITY_NAMES else _MODALITY_BY_NAME.get(name, name)


def parse_caption(caption: str) -> ParsedCaption:
    """The modality and slice description of a `slice_caption` caption (its exact inverse:
    ``parse_caption(c).caption == c``); ValueError naming a caption of any other form."""
    whole = _CAPTION.fullmatch(str(caption).strip())
    finding = whole["finding"] if whole else ""
    found = next((m for p in (_NONE, _ONE, _MANY) if (m := p.fullmatch(finding))), None)
    if not whole or not whole["name"].strip() or found is None:
        raise ValueError(
            f"cannot swap the attributes of caption {caption!r}: expected the slice_caption "
            "form 'Brain MRI, <modality>: without visible metastases', '... : 1 metastasis of "
            "<d> mm in the <left|right> <place>' or '... : <n> metastases; largest <d> mm in "
            "the <left|right> <place>'"
        )
    groups = found.groupdict()
    if "side" not in groups:
        description = {"n_metastases": 0, "side": None, "lobe": None, "largest_mm": None}
    else:
        lobe = "cerebellum" if groups["cerebellum"] else groups["lobe"]  # None: hemisphere
        description = {
            "n_metastases": int(groups.get("count") or 1),
            "side": groups["side"],
            "lobe": lobe,
            "largest_mm": float(groups["mm"]),
        }
    return ParsedCaption(modality_key(whole["name"]), description)


def _pick(options: Sequence[Any], rng: np.random.Generator | None) -> Any:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def swap_modality(
    caption: str, modalities: Sequence[str], rng: np.random.Generator | None = None
) -> CaptionSwap | None:
    """The caption with another of ``modalities`` (keys or prompt names); without ``rng``
    the next one after the caption's own in the given order (cyclically)."""
    parsed = parse_caption(caption)
    keys = list(dict.fromkeys(modality_key(m) for m in modalities))
    if parsed.modality in keys:  # "the next one" in the configured cycle
        start = keys.index(parsed.modality)
        keys = keys[start + 1 :] + keys[:start]
    others = [k for k in keys if k != parsed.modality]
    if not others:
        return None
    return CaptionSwap(slice_caption(_pick(others, rng), parsed.description), "modality")


def swap_side(caption: str) -> CaptionSwap | None:
    """Left <-> right (lobe, count and size kept); None without a metastasis."""
    parsed = parse_caption(caption)
    side = parsed.description["side"]
    if side is None:
        return None
    description = {**parsed.description, "side": _OTHER_SIDE[side]}
    return CaptionSwap(slice_caption(parsed.modality, description), "side")


def mirrored_caption(caption: str) -> str:
    """The caption of the left-right mirrored slice: the side swapped, a caption without
    metastases as it is (a true caption, unlike the swaps)."""
    swapped = swap_side(caption)
    return caption if swapped is None else swapped.caption


def swap_count(caption: str, rng: np.random.Generator | None = None) -> CaptionSwap | None:
    """One metastasis more or fewer: 1 -> 2; n >= 2 -> n - 1 (first) or n + 1; None
    without a metastasis."""
    parsed = parse_caption(caption)
    count = parsed.description["n_metastases"]
    if count == 0:
        return None
    counts = [2] if count == 1 else [count - 1, count + 1]
    description = {**parsed.description, "n_metastases": _pick(counts, rng)}
    return CaptionSwap(slice_caption(parsed.modality, description), "count")


def swap_presence(
    caption: str,
    lesion_findings: Sequence[str | Mapping[str, Any]] | None = None,
    rng: np.random.Generator | None = None,
) -> CaptionSwap:
    """Metastases <-> "without visible metastases". A lesion-free caption gets one of
    ``lesion_findings`` (captions or descriptions with metastases; default
    `DEFAULT_FINDING`), the modality kept."""
    parsed = parse_caption(caption)
    if parsed.description["n_metastases"]:
        description: Mapping[str, Any] = {
            "n_metastases": 0,
            "side": None,
            "lobe": None,
            "largest_mm": None,
        }
    else:
        findings = [_finding(f) for f in lesion_findings or ()] or [DEFAULT_FINDING]
        description = _pick(findings, rng)
    return CaptionSwap(slice_caption(parsed.modality, dict(description)), "lesion_present")


def _finding(finding: str | Mapping[str, Any]) -> Mapping[str, Any]:
    description = parse_caption(finding).description if isinstance(finding, str) else finding
    if not description.get("n_metastases"):
        raise ValueError(f"a lesion finding must state metastases, got {finding!r}")
    return description


def caption_swaps(
    caption: str,
    *,
    modalities: Sequence[str],
    kinds: Sequence[str] = SWAP_KINDS,
    lesion_findings: Sequence[str | Mapping[str, Any]] | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, CaptionSwap | None]:
    """``{kind: CaptionSwap or None}`` for each of ``kinds`` (see the module docstring);
    None where the caption has nothing to swap for that kind."""
    unknown = [k for k in kinds if k not in SWAP_KINDS]
    if unknown:
        raise ValueError(f"unknown swap kinds {unknown}; known: {list(SWAP_KINDS)}")
    parse_caption(caption)  # one clear error for an unreadable caption, whatever the kinds
    makers = {
        "modality": lambda: swap_modality(caption, modalities, rng),
        "side": lambda: swap_side(caption),
        "lesion_present": lambda: swap_presence(caption, lesion_findings, rng),
        "count": lambda: swap_count(caption, rng),
    }
    return {kind: makers[kind]() for kind in kinds}
