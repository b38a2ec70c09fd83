"""Kedro project settings: OmegaConfigLoader over conf/, run-clock and provenance hooks."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from medgen.hooks import ProvenanceHooks, RunClockHooks
from medgen.hooks.environment import DataRootHooks, TrackingCredentialsHooks
from medgen.hooks.quiet import silence_known_notices

# ProvenanceHooks records git state, parameters, data fingerprints, package versions and
# the run's models and reports in kedro-mlflow's run (medgen.hooks.provenance).
# DataRootHooks: a run refuses a data root another environment claimed;
# TrackingCredentialsHooks: a remote MLflow URI may come from credentials.yml
# (medgen.hooks.environment).
HOOKS = (RunClockHooks(), ProvenanceHooks(), DataRootHooks(), TrackingCredentialsHooks())

# library notices that are no problem of the run (medgen.hooks.quiet says why each)
silence_known_notices()

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
