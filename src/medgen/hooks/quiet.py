"""Library notices a default run would print that are no problem of the user's run.

Each is named with why it is harmless; anything else still shows.

* ``register_new_resolver() is deprecated`` (omegaconf 2.4): Kedro's config loader and
  kedro-mlflow register their resolvers with it; nothing the project can change.
* ``Add type hints to the `predict` method`` (mlflow): kedro-mlflow's pipeline model class,
  defined when the plugin is imported; medgen logs no pyfunc models. mlflow shows it under
  its own "once" filter, so only the logging filter on ``py.warnings`` stops it.
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
import re
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


class CapturedKnownWarnings(logging.Filter):
    """Drops the known notices where they reach logging as warnings (Kedro's CLI captures
    warnings into the ``py.warnings`` logger). Needed beside the warnings filters because
    mlflow issues its predict type-hint notice under its own ``simplefilter("once")``, which
    outranks every filter installed before it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(re.search(pattern, message) for pattern, _ in WARNINGS)


def _add_filter_once(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def silence_known_notices() -> None:
    """Install the filters of the module docstring (idempotent). Kedro's CLI calls it first,
    before it imports any plugin (the ``kedro.init`` entry point in pyproject.toml);
    settings.py calls it again for sessions made outside the CLI (notebooks, tests)."""
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    _add_filter_once(logging.getLogger("py.warnings"), CapturedKnownWarnings)
    _add_filter_once(logging.getLogger(MLFLOW_HOOK_LOGGER), RegexParameterNames)
