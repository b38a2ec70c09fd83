"""The check's report: a Markdown table of the models, then the parameter blocks' problems."""

from __future__ import annotations

from medgen.check_config.check import EnvironmentCheck
from medgen.check_config.memory import GIB
from medgen.check_config.models import ModelRow

HEADER = (
    "| pipeline | model | parameters (trainable) | GPUs | batch / GPU | precision "
    "| weights + grads + AdamW (+ EMA) | activations (fp32 bound) | total / GPU |"
)


def _gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB"


def _millions(value: int) -> str:
    return f"{value / 1e6:.1f} M" if value >= 1e5 else f"{value / 1e6:.3f} M"


def model_line(row: ModelRow) -> str:
    """One table row; a failed row says why, in place of the numbers."""
    head = f"| {row.pipeline} | {row.model} |"
    if row.memory is None:
        return f"{head} **not built**: {row.error or '; '.join(row.notes)} | | | | | | |"
    m = row.memory
    params = _millions(m.parameters)
    if m.trainable != m.parameters:
        params += f" ({_millions(m.trainable)})"
    activations = _gib(m.activations)
    if m.activations_fp32 != m.activations:
        activations += f" ({_gib(m.activations_fp32)})"
    return (
        f"{head} {params} | {row.world_size} | {row.batch_size} | {row.precision} "
        f"| {_gib(m.states)} | {activations} | {_gib(m.total)} |"
    )


def markdown(check: EnvironmentCheck) -> str:
    """The report of ``check`` as Markdown (the table docs/cluster.md holds for cluster)."""
    lines = [f"## `--env {check.env}`", "", HEADER, "|" + "---|" * 9]
    lines += [model_line(row) for row in check.models]
    notes = sorted({note for row in check.models for note in row.notes if row.memory})
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    ok = sum(b.status == "ok" for b in check.blocks)
    lines += ["", f"Parameter blocks: {ok} of {len(check.blocks)} parsed by their nodes' readers."]
    lines += [f"- problem: {p}" for p in check.problems]
    lines += [f"- not checked (no reader listed): {name}" for name in check.unchecked]
    return "\n".join(lines) + "\n"
