"""Errors raised by the metrics library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights needed by a metric backbone are not on this machine.

    medgen never downloads at run time, so instead of letting a library fetch its
    weights we check first and say exactly which file is missing and where to put
    it (``file`` and ``directory``), and where it normally comes from (``source``).
    """

    def __init__(
        self,
        backbone: str,
        file: str | Path,
        directory: str | Path,
        source: str = "",
        hint: str = "",
    ) -> None:
        self.backbone = backbone
        self.file = str(file)
        self.directory = str(directory)
        self.source = source
        message = (
            f"Weights for backbone '{backbone}' are missing: expected file '{Path(file).name}' "
            f"in directory '{directory}' (full path: {Path(directory) / Path(file).name})."
        )
        if source:
            message += f" It is normally obtained from {source}; copy it there by hand (no downloads at run time)."
        if hint:
            message += f" {hint}"
        super().__init__(message)


def require_weights_file(path: Path, backbone: str, *, source: str = "", hint: str = "") -> Path:
    """``path`` if it is a file, else :class:`MissingWeightsError` naming it.

    Called before any library is handed the weights, so a missing file is reported
    instead of fetched.
    """
    if not path.is_file():
        raise MissingWeightsError(backbone, path.name, path.parent, source=source, hint=hint)
    return path


class MetricNotApplicable(ValueError):
    """The metric is undefined for this data (too few samples, no lesion in any mask, images
    too small for the filter, ...): evaluation records it as ``skipped`` with this reason.

    Anything else a metric raises is a failure (``failed``), never a skip.
    """


class NonFiniteInputError(ValueError):
    """A metric received NaN or Inf values (e.g. a diverged generator's samples): ``failed``."""


def require_finite(values: Any, what: str) -> None:
    """Raise :class:`NonFiniteInputError` naming ``what`` and counting its NaN/Inf entries.

    Called before anything that would hide them: clamping keeps NaN, a uint8 cast turns
    it into an arbitrary pixel, and ``nan > 0`` is False, so a NaN mask reads as empty.
    """
    tensor = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if not tensor.is_floating_point() and not tensor.is_complex():
        return
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(tensor).sum())
    n_inf = int(torch.isinf(tensor).sum())
    bad_items = int((~finite).reshape(len(tensor), -1).any(dim=1).sum()) if tensor.ndim else 1
    raise NonFiniteInputError(
        f"{what} hold {n_nan} NaN and {n_inf} Inf values "
        f"({bad_items} of {len(tensor) if tensor.ndim else 1} items affected)"
    )
