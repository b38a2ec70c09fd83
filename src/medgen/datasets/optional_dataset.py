"""``OptionalDataset``: any dataset whose absence is a normal state, not an error.

Some pipeline inputs exist only when another pipeline has run (generated samples, a
run summary). Wrapping their catalog entry lets a consumer run without them: ``load``
returns ``default`` (None unless configured) when the wrapped dataset does not exist,
and ``save`` writes straight through, so the producing pipeline is unaffected::

    latent_diffusion.summary:
      type: medgen.datasets.OptionalDataset
      dataset:
        type: json.JSONDataset
        filepath: data/08_reporting/latent_diffusion/summary.json

For a ``partitions.PartitionedDataset`` "exists" means "has at least one partition",
so an empty or missing folder loads as the default instead of raising
"No partitions found".
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

from kedro.io.core import AbstractDataset

logger = logging.getLogger(__name__)


class OptionalDataset(AbstractDataset[Any, Any]):
    """Wraps a dataset config; loads ``default`` when the wrapped dataset is absent.

    Args:
        dataset: the wrapped dataset, as a type name (``"json.JSONDataset"``) or a config
            dict with ``type`` and its arguments, exactly as in a catalog entry.
        default: what ``load`` returns when the data is absent (default None).
        metadata: free-form metadata (kedro-viz), not used by the dataset.
    """

    def __init__(
        self,
        *,
        dataset: str | dict[str, Any],
        default: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        config = {"type": dataset} if isinstance(dataset, str) else deepcopy(dataset)
        self._dataset = AbstractDataset.from_config("optional", config)
        self._default = default
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._dataset._describe(), "default": self._default}

    def load(self) -> Any:
        if not self._dataset.exists():
            logger.info("%s is absent; loading the default (%r)", self._dataset, self._default)
            return deepcopy(self._default)
        return self._dataset.load()

    def save(self, data: Any) -> None:
        self._dataset.save(data)

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _release(self) -> None:
        self._dataset.release()
