"""Library notices a default run would print that are no problem of the user's run.

Each is named with why it is harmless; anything else still shows.

* ``register_new_resolver() is deprecated`` (omegaconf 2.4): Kedro's config loader and
  kedro-mlflow register their resolvers with it; nothing the project can change.
* ``Add type hints to the `predict` method`` (mlflow): kedro-mlflow's pipeline model class,
  defined when the plugin is imported; medgen logs no pyfunc models.
* ``The parameter 'pretrained' is deprecated`` and ``Arguments other than a weight enum``
  (torchvision 0.13+): the lpips package builds its AlexNet/VGG trunk with the old
  ``pretrained=`` argument; medgen passes the weights it has (or none) and says which.
* ``One or more dataset names contain '.'`` (Kedro): the catalog names datasets
  ``<pipeline>.<name>`` on purpose (kedro-viz groups them; docs/architecture.md).
* ``'validation.label_values.mask-\\d+' is not a valid name for a mlflow paramter``
  (kedro-mlflow): the keys of ``validation.label_values`` are regular expressions; MLflow
  records them with ``_`` for the characters it does not allow, which is all it says.
"""

from __future__ import annotations

import logging
import warnings

MLFLOW_HOOK_LOGGER = "kedro_mlflow.framework.hooks.mlflow_hook"
WARNINGS = (
    (r"register_new_resolver\(\) is deprecated", UserWarning),
    (r".*Add type hints to the `predict` method", UserWarning),
    (r"One or more dataset names contain '\.' characters", UserWarning),
    (r"The parameter 'pretrained' is deprecated since 0\.13", UserWarning),
    (r"Arguments other than a weight enum or `None` for 'weights' are deprecated", UserWarning),
)


class RegexParameterNames(logging.Filter):
    """Drops kedro-mlflow's notice that it renamed a ``label_values`` regex key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("label_values." in message and "not a valid name for a mlflow" in message)


def silence_known_notices() -> None:
    """Install the filters of the module docstring (idempotent)."""
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    logger = logging.getLogger(MLFLOW_HOOK_LOGGER)
    if not any(isinstance(f, RegexParameterNames) for f in logger.filters):
        logger.addFilter(RegexParameterNames())
