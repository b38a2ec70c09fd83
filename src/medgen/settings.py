"""Kedro project settings: OmegaConfigLoader over conf/, run-clock hooks."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from medgen.hooks import RunClockHooks

HOOKS = (RunClockHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    # conf/local is Kedro's git-ignored place for a user's overrides and credentials; it
    # is the default run environment but may be empty.
    "default_run_env": "local",
    # an environment overrides single keys (e.g. cohort.n_subjects) and keeps the rest
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    # ${oc.env:VAR} in mlflow.yml lets conf/cluster read the tracking URI from the job's
    # environment; Kedro enables it only in credentials by default.
    "custom_resolvers": {"oc.env": oc.env},
}
