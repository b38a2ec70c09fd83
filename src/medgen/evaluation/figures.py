"""PNG figures for the report, returned as bytes so the HTML can embed them (base64).

Plots are bare matplotlib ``Figure``s, which render with Agg without touching pyplot's
global backend (importing this module must not change a notebook's backend); grids are
drawn from the tiles and panels of `medgen.metrics.images`, like latent_diffusion's.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from medgen.metrics.images import figure_png, new_figure, stack, tile, to_uint8

WHITE = (255, 255, 255)


def image_grid(rows: Sequence[torch.Tensor], scale: int = 2, gap: int = 2) -> bytes:
    """PNG of rows of grayscale images; each row a [K, H, W] tensor in [-1, 1]."""
    gap *= scale
    tiles = [[tile(image, scale) for image in to_uint8(row)] for row in rows]
    lines = [stack(line, gap, axis=1, background=WHITE) for line in tiles]
    buffer = io.BytesIO()
    Image.fromarray(stack(lines, gap, axis=0, background=WHITE)).save(buffer, format="PNG")
    return buffer.getvalue()


def comparison_rows(
    generated: torch.Tensor, masks: torch.Tensor | None, real: torch.Tensor, k: int
) -> tuple[list[torch.Tensor], list[str]]:
    """Rows (generated channels, their masks, real channels) and their labels."""
    rows, labels = [], []
    for c in range(generated.shape[1]):
        rows.append(generated[:k, c])
        labels.append(f"generated channel {c}")
    if masks is not None:
        rows.append(masks[:k, 0] * 2 - 1)
        labels.append("conditioning mask")
    for c in range(real.shape[1]):
        rows.append(real[:k, c])
        labels.append(f"real channel {c}")
    return rows, labels


def metric_bars(records: Sequence[Mapping[str, Any]], title: str) -> bytes | None:
    """One small panel per ok metric: generated value beside its real floor (or the words
    "no floor" where none was measured)."""
    ok = [r for r in records if r["status"] == "ok" and isinstance(r["value"], int | float)]
    if not ok:
        return None
    figure = new_figure(figsize=(2.4 * len(ok), 2.6))
    axes = figure.subplots(1, len(ok), squeeze=False)
    for axis, record in zip(axes[0], ok, strict=True):
        if isinstance(record["floor"], int | float):
            axis.bar(
                ["generated", "real floor"],
                [record["value"], record["floor"]],
                color=["tab:blue", "tab:gray"],
            )
        else:  # no floor measured: no bar that would read as a floor of 0
            axis.bar(["generated", "no floor"], [record["value"], 0.0], color=["tab:blue", "w"])
        axis.set_title(f"{record['metric']}\n{record['backbone'].split(' ')[0]}", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=9, y=1.08)
    return figure_png(figure)


def find_histories(summary: Any, path: str = "") -> dict[str, list[Mapping[str, Any]]]:
    """Every ``history`` list of loss records in a (nested) summary, keyed by where it sits."""
    found: dict[str, list] = {}
    if isinstance(summary, Mapping):
        for key, value in summary.items():
            label = f"{path}/{key}" if path else str(key)
            if (
                key == "history"
                and isinstance(value, list)
                and any(isinstance(r, Mapping) and "loss" in r for r in value)
            ):
                found[path or "run"] = value
            else:
                found |= find_histories(value, label)
    return found


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes | None:
    """Training loss per step (records of kind 'step', else any record with a loss)."""
    if not histories:
        return None
    figure = new_figure(figsize=(6, 3))
    axis = figure.subplots()
    for label, history in histories.items():
        steps = [r for r in history if r.get("kind", "step") == "step" and "loss" in r]
        steps = steps or [r for r in history if "loss" in r]
        x = [r.get("step", i) for i, r in enumerate(steps)]
        axis.plot(x, [r["loss"] for r in steps], label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    return figure_png(figure)
