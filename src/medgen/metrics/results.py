"""The one result type every generated-vs-real metric returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MetricResult:
    """A metric value that names how it was measured.

    ``floor`` is the same metric computed real-vs-real with the same backbone and the
    same sample counts (see :mod:`medgen.metrics.floors`); without it a FID of 12 says
    nothing. ``backbone`` is the exact feature network (e.g. ``in_domain`` trained on
    the real training split, or ``inception_v3``), never a generic "FID".
    """

    name: str
    value: float
    backbone: str
    n_real: int
    n_generated: int
    mode: str | None = None
    floor: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (inf/nan become strings so json.dumps stays strict)."""
        return _jsonable(asdict(self))

    def __str__(self) -> str:
        floor = "n/a" if self.floor is None else f"{self.floor:.4g}"
        return (
            f"{self.name}={self.value:.4g} (floor {floor}; backbone {self.backbone}; "
            f"n_real={self.n_real}, n_generated={self.n_generated})"
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    return obj
