"""Errors raised by the metrics library."""

from __future__ import annotations

from pathlib import Path


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
