"""medgen.evaluation: evaluate every generated source against the real data and report it.

The work behind the ``evaluation`` pipeline (parameters: :mod:`~medgen.evaluation.params`): train the offline feature networks on the
real training split (:mod:`~medgen.evaluation.networks`), find the generated sources
(:mod:`~medgen.evaluation.sources`), score each with the evaluator registered for its
kind (:mod:`~medgen.evaluation.evaluators`), and write metrics.json records
(:mod:`~medgen.evaluation.records`) and a self-contained HTML report
(:mod:`~medgen.evaluation.report`).
"""

from medgen.evaluation.context import held_out_reference, select_reference
from medgen.evaluation.evaluate import build_backbones, evaluate_sources
from medgen.evaluation.evaluators import SOURCE_KINDS, SourceKind, kind_of
from medgen.evaluation.networks import feature_network_from_bundle, train_feature_network
from medgen.evaluation.params import (
    EvaluationParams,
    FloorParams,
    InDomainBackboneParams,
    ReportParams,
    ScoringParams,
)
from medgen.evaluation.records import log_to_mlflow, mlflow_metrics, numbers_are_finite
from medgen.evaluation.report import build_report
from medgen.evaluation.sources import GeneratedSource, collect_sources

__all__ = [
    "SOURCE_KINDS",
    "EvaluationParams",
    "FloorParams",
    "GeneratedSource",
    "InDomainBackboneParams",
    "ReportParams",
    "ScoringParams",
    "SourceKind",
    "build_backbones",
    "build_report",
    "collect_sources",
    "evaluate_sources",
    "feature_network_from_bundle",
    "held_out_reference",
    "kind_of",
    "log_to_mlflow",
    "mlflow_metrics",
    "numbers_are_finite",
    "select_reference",
    "train_feature_network",
]
